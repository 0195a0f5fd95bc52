"""Report rows: every interval × group is a row; CSV and JSON carry the same columns."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from zoneinfo import ZoneInfo

from cti.reports.definitions import zero
from cti.reports.intervals import bounds
from cti.reports.rows import agent_rows, columns, offer_rows, to_csv, to_json, to_table

NY = ZoneInfo("America/New_York")


def test_a_quiet_interval_is_a_row_of_zeros_and_csv_matches_json():
    edges = bounds(datetime(2026, 3, 8, tzinfo=NY), datetime(2026, 3, 9, tzinfo=NY), "1h", NY)
    busy = zero() | {
        "offered": 2.0,
        "answered": 2.0,
        "answered_in_sl": 1.0,
        "answer_wait_sum": 30.0,
    }
    rows = offer_rows("queues", edges, ["sales", "billing"], {(3, "sales"): busy})
    assert len(rows) == 23 * 2  # the spring-forward day, two queues
    assert [r["queue"] for r in rows[:2]] == ["billing", "sales"]
    sales = rows[7]
    assert (sales["interval_start"], sales["offered"], sales["asa_s"]) == (
        "2026-03-08T04:00:00-04:00", 2, 15.0,
    )  # fmt: skip
    assert sales["sl_abandons_negative"] == 50.0
    quiet = rows[0]
    assert quiet["offered"] == 0 and quiet["sl_abandons_negative"] is None
    parsed = list(csv.DictReader(io.StringIO(to_csv("queues", rows))))
    assert list(parsed[0]) == list(columns("queues")) == list(rows[0])
    assert parsed[0]["sl_abandons_negative"] == "" and parsed[7]["asa_s"] == "15.0"
    assert json.loads(to_json(rows)) == rows
    assert to_table("queues", rows).splitlines()[0].startswith("interval_start")


def test_agent_rows_without_states_or_legs_are_zeros():
    edges = bounds(datetime(2026, 6, 1, tzinfo=NY), datetime(2026, 6, 2, tzinfo=NY), "day", NY)
    legs = {
        (0, "PJSIP/2001"): dict.fromkeys(
            ("presented", "answered", "talk", "hold", "wrapup", "transfers"), 0.0
        )
    }
    (row,) = agent_rows(edges, legs)
    assert row["occupancy"] is None and row["paused_by_reason"] == "" and row["staffed_s"] == 0.0
    assert list(row) == list(columns("agents"))
