"""Reports against PostgreSQL: segments stored as calls end, the report's SQL equal to
the definitions' Python, quiet intervals as rows of zeros, the CLI, prune."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from cti.calls.effects import AgentConnected, CallAbandoned, CallTransferred, TransferKind
from cti.reports.definitions import Thresholds, add, figures, zero
from cti.reports.intervals import bounds, index_of, parse_moment
from cti.reports.segments import AgentLeg, CallSegments, Journey, QueueVisit
from cti.reports.service import ReportRequest, make_report
from cti.reports.store import offer_totals, store_segments
from cti.timeline.store import timeline_batch_writer
from tests.integration.test_cli import cti
from tests.integration.test_timeline_db import ALICE, Call, insert_interaction

NY = ZoneInfo("America/New_York")
# 2023-11-14 17:13:20 EST: T0 of the timeline tests.
T0 = 1_700_000_000.0


@pytest.fixture
async def pool(database_url):
    async with asyncpg.create_pool(database_url, min_size=1, max_size=4) as pool:
        yield pool


async def queue(db: asyncpg.Connection, *names: str) -> None:
    await db.executemany("INSERT INTO queues (name) VALUES ($1)", [(n,) for n in names])


class QCall(Call):
    """The timeline tests' call, its agents answering from queue sales."""

    def connected(self, t: float, agent: str) -> AgentConnected:
        return AgentConnected(
            **self.ids, at=T0 + t, agent=agent, member_name=None, channel=f"{agent}-1",
            queue="sales", via=(),
        )  # fmt: skip

    def abandoned(self, t: float) -> CallAbandoned:
        return CallAbandoned(
            **self.ids, at=T0 + t, queue="sales", position=1, original_position=1, hold_time_s=1
        )

    def blind(self, t: float, agent: str) -> CallTransferred:
        return CallTransferred(
            **self.ids, at=T0 + t, kind=TransferKind.BLIND, from_agent=agent, to="600"
        )


async def test_segments_are_stored_as_calls_end_and_make_the_report(pool, db):
    await queue(db, "sales", "q", "empty")
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for call_id in ids:
        await insert_interaction(db, call_id)
    a, b, c = (QCall(call_id, f"1700000000.{i}") for i, call_id in enumerate(ids))
    write = timeline_batch_writer(pool)
    # Answered from sales after 15 s, then blind-transferred (in two batches: the end
    # comes later); abandoned after 30 s; abandoned after 3 s (short).
    await write(a.events(a.queued(0), a.ringing(1, ALICE)))
    await write(a.events(a.connected(15, ALICE), a.blind(75, ALICE), a.left(75, ALICE)))
    await write(a.events(a.ended(80, ALICE)))
    await write(b.events(b.queued(10), b.abandoned(40), b.ended(40)))
    await write(c.events(c.queued(20), c.abandoned(23), c.ended(23)))

    offers = await db.fetch("SELECT * FROM report_offers WHERE kind = 'queue' ORDER BY entered_at")
    assert [(r["outcome"], r["wait_s"], r["tier"], r["dnis"]) for r in offers] == [
        ("answered", 15.0, "bronze", "5550100"),
        ("abandoned", 30.0, "bronze", "5550100"),
        ("abandoned", 3.0, "bronze", "5550100"),
    ]
    assert offers[0]["transfers"] == 1 and offers[0]["talk_s"] == 60.0
    legs = await db.fetch("SELECT agent, how, to_whom FROM report_legs ORDER BY seq")
    assert [tuple(r) for r in legs] == [(ALICE, "blind", "600")]

    start = datetime(2023, 11, 14, tzinfo=NY)
    rows = await make_report(
        db, ReportRequest("queues", start, start + timedelta(days=1), "30m"), NY
    )
    assert len(rows) == 48 * 3  # every half hour of the day, every queue
    row = next(
        r
        for r in rows
        if r["queue"] == "sales" and r["interval_start"].startswith("2023-11-14T17:00")
    )
    assert row["interval_start"] == "2023-11-14T17:00:00-05:00"
    assert (row["offered"], row["answered"], row["abandoned"], row["short_abandoned"]) == (
        2,
        1,
        1,
        1,
    )
    assert (row["answered_in_sl"], row["abandoned_in_sl"], row["transfers_out"]) == (1, 0, 1)
    assert (row["sl_abandons_negative"], row["asa_s"], row["aht_s"]) == (50.0, 15.0, 60.0)
    quiet = next(r for r in rows if r["queue"] == "empty")
    assert quiet["offered"] == 0 and quiet["sl_ignore_abandons"] is None

    tiers = await make_report(
        db, ReportRequest("tiers", start, start + timedelta(days=1), "day"), NY
    )
    bronze = next(r for r in tiers if r["tier"] == "bronze")
    assert (bronze["offered"], bronze["answered"], len(tiers)) == (2, 1, 5)
    calls = await make_report(
        db, ReportRequest("calls", start, start + timedelta(days=1), queues=("sales",)), NY
    )
    assert [c["outcome"] for c in calls] == ["answered", "abandoned", "abandoned"]
    assert calls[0]["legs"] == f"{ALICE}:60+0s:blind>600"


def random_segments(rng: random.Random, start: float) -> CallSegments:
    entered = start + rng.uniform(0, 47 * 3600)  # 7 and 8 March: 24 + 23 hours
    wait = rng.choice([0.0, 4.99, 5.0, 20.0, 20.01, rng.uniform(0, 120)])
    outcome = rng.choice(
        ["answered", "abandoned", "timed_out", "sent_elsewhere", "transferred_out"]
    )
    talk = rng.uniform(0, 600) if outcome == "answered" else 0.0
    visit = QueueVisit(
        queue=rng.choice(["sales", "support", "billing"]),
        entered=entered,
        left=entered + wait,
        outcome=outcome,
        talk_s=talk,
        transferred=outcome == "answered" and rng.random() < 0.2,
    )
    journey = Journey(visit.queue, entered, entered + wait, outcome, talk, 0.0, 0.0, 0)
    return CallSegments(entered, entered + wait + talk, (visit,), (), journey)


async def test_the_reports_sql_equals_the_definitions_python(db):
    rng = random.Random(14)
    start = datetime(2026, 3, 7, tzinfo=NY)  # two days across the spring change
    calls = {str(uuid.uuid4()): random_segments(rng, start.timestamp()) for _ in range(2_000)}
    await store_segments(db, calls)
    edges = bounds(start, start + timedelta(days=2), "1h", NY)
    assert len(edges) - 1 == 47
    thresholds = {"sales": Thresholds(20, 5), "support": Thresholds(30, 3)}  # billing: defaults
    got = await offer_totals(db, "queues", edges, thresholds)
    expected: dict[tuple[int, str], dict[str, float]] = {}
    for s in calls.values():
        v = s.visits[0]
        i = index_of(edges, datetime.fromtimestamp(v.entered, tz=UTC))
        assert i is not None
        totals = expected.setdefault((i, v.queue), zero())
        add(totals, v, thresholds.get(v.queue, Thresholds()), int(v.transferred))
    assert set(got) == set(expected)
    for key, totals in expected.items():
        assert figures(got[key]) == figures(totals), key
        assert got[key] == pytest.approx(totals)


async def test_cli_report_json_and_csv_and_prune(database_url, db):
    await queue(db, "sales")
    call_id = str(uuid.uuid4())
    entered = parse_moment("2026-06-01T09:10", NY).timestamp()
    visit = QueueVisit("sales", entered, entered + 12, "answered", talk_s=100.0)
    await store_segments(db, {call_id: CallSegments(entered, None, (visit,), (), None)})
    env = {"CTI_TIMEZONE": "America/New_York"}
    args = ("report", "queues", "--from", "2026-06-01", "--to", "2026-06-01", "--interval", "1h")
    code, out, err = await cti(*args, "--format", "json", database_url=database_url, **env)
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 24
    nine = rows[9]
    assert list(nine)[:5] == ["interval_start", "queue", "offered", "answered", "answered_in_sl"]
    assert (nine["interval_start"], nine["offered"], nine["asa_s"]) == (
        "2026-06-01T09:00:00-04:00",
        1,
        12.0,
    )
    code, out, err = await cti(*args, "--format", "csv", database_url=database_url, **env)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split(",") == list(nine) and len(lines) == 25
    code, out, err = await cti(
        "report", "queues", "--from", "soon", "--to", "2026-06-01", database_url=database_url
    )
    assert code == 2 and "expected a date" in err
    code, out, err = await cti("db", "prune", "--before", "2026-07-01", database_url=database_url)
    assert code == 0, err
    assert "interaction_events: 0 deleted" in out
    assert await db.fetchval("SELECT count(*) FROM report_offers") == 1


async def test_thresholds_wrapup_and_agent_states_come_from_the_plan_and_agent_states(db):
    await db.execute(
        "INSERT INTO queues (name, sl_threshold_s, short_abandon_s) VALUES ('sales', 10, 2)"
    )
    call_id = str(uuid.uuid4())
    entered = parse_moment("2026-06-01T09:10", NY).timestamp()
    visit = QueueVisit("sales", entered, entered + 12, "answered", agent=ALICE, talk_s=100.0)
    journey = Journey("sales", entered, entered + 12, "answered", 100.0, 0.0, 0.0, 0)
    leg = AgentLeg(ALICE, f"{ALICE}-1", "sales", entered + 1, entered + 12, entered + 112, 100.0)
    await store_segments(db, {call_id: CallSegments(entered, None, (visit,), (leg,), journey)})

    def moment(text: str) -> datetime:
        return parse_moment("2026-06-01T" + text if len(text) < 10 else text, NY)

    await db.executemany(
        "INSERT INTO agent_state_log (agent, queue, state, reason, started_at, ended_at, call_id)"
        " VALUES ($1, NULL, $2, $3, $4, $5, $6)",
        [
            (ALICE, "available", None, moment("08:50"), moment("09:10"), None),
            (ALICE, "on_call", None, moment("09:10"), moment("09:12"), call_id),
            (ALICE, "wrap_up", "wrap-up", moment("09:12"), moment("09:12:30"), call_id),
            (ALICE, "paused", "lunch", moment("09:50"), moment("10:20"), None),
        ],
    )  # fmt: skip
    start = moment("2026-06-01")
    rows = await make_report(
        db, ReportRequest("queues", start, start + timedelta(days=1), "1h"), NY
    )
    nine = rows[9]
    # 12 s is after this queue's 10 s threshold; the answering agent's 30 s wrap-up counts.
    assert (nine["answered"], nine["answered_in_sl"], nine["avg_wrapup_s"], nine["aht_s"]) == (
        1, 0, 30.0, 130.0,
    )  # fmt: skip
    tiers = await make_report(
        db, ReportRequest("tiers", start, start + timedelta(days=1), "day"), NY
    )
    assert next(r for r in tiers if r["tier"] == "")["avg_wrapup_s"] == 30.0
    agents = await make_report(
        db, ReportRequest("agents", start, start + timedelta(days=1), "1h"), NY
    )
    by_hour = {r["interval_start"][11:16]: r for r in agents}
    assert len(agents) == 24
    eight, nine, ten = by_hour["08:00"], by_hour["09:00"], by_hour["10:00"]
    assert (eight["staffed_s"], eight["available_s"], eight["occupancy"]) == (600.0, 600.0, 0.0)
    # The pause 09:50-10:20 is split at 10:00: 600 s here, 1200 s in the next hour.
    assert (nine["staffed_s"], nine["on_call_s"], nine["wrapup_state_s"], nine["paused_s"]) == (
        1350.0, 120.0, 30.0, 600.0,
    )  # fmt: skip
    assert nine["paused_by_reason"] == "lunch=600" and nine["occupancy"] == 20.0  # 150/750
    assert (nine["presented"], nine["answered"], nine["wrapup_s"], nine["aht_s"]) == (
        1,
        1,
        30.0,
        130.0,
    )
    assert (ten["paused_s"], ten["occupancy"]) == (1200.0, None)
