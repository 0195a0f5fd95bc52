"""docs/reports.md says what the definitions module says, and documents every column."""

from __future__ import annotations

from pathlib import Path

from cti.reports.definitions import DEFINITIONS
from cti.reports.rows import KINDS, columns

DOCS = (Path(__file__).resolve().parents[2] / "docs" / "reports.md").read_text()
ISSUE_QUEUE_COLUMNS = [
    "interval_start",
    "queue",
    "offered",
    "answered",
    "answered_in_sl",
    "abandoned",
    "abandoned_in_sl",
    "short_abandoned",
    "sl_ignore_abandons",
    "sl_abandons_negative",
    "sl_abandons_positive",
    "asa_s",
    "avg_wait_s",
    "max_wait_s",
    "aht_s",
    "avg_talk_s",
    "avg_hold_s",
    "avg_wrapup_s",
    "transfers_out",
]


def test_every_definition_is_on_the_page_word_for_word():
    for d in DEFINITIONS:
        assert f"| `{d.name}` | {d.words} |" in DOCS, d.name


def test_every_column_of_every_report_is_on_the_page():
    for kind in KINDS:
        for column in columns(kind):
            assert f"`{column}`" in DOCS, (kind, column)


def test_the_queues_report_has_the_issues_columns():
    assert set(ISSUE_QUEUE_COLUMNS) <= set(columns("queues"))
    assert columns("queues")[:2] == ("interval_start", "queue")
