"""What the demo says about its calls (cti/demo/report.py) and how it places them."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from cti.demo.calls import DEMO_CALLS, caller_command, count_calls
from cti.demo.report import DemoCall, closed_lines, describe_hours, one_call, outcome, table
from cti.routing.plan import loads

PLAN = loads(resources.files("cti.demo").joinpath("routing.toml").read_text())
NUMBERS = {n.dnis: n for n in PLAN.numbers}

ANSWERED = DemoCall(
    ani="2120000006",
    dnis="5550100",
    customer="Carmen Herrera Fernández de Córdoba",
    tier="gold",
    route="queue",
    queue="spanish",
    priority=5,
    rule="spanish",
    decision_ms=1.25,
    agents=("PJSIP/2006",),
    ended=True,
    wait_s=1.04,
    talk_s=2.96,
    abandoned=False,
)
ROW = {
    "ani": "2120000002", "dnis": "5550100", "customer": "Alan Turing", "tier": "gold",
    "route": "queue", "queue": "support", "priority": 10, "rule": "gold",
    "decision_us": 1500, "agents": ["PJSIP/2001"], "ended_at": datetime.now(UTC),
    "wait_s": 1.0, "talk_s": 3.0, "abandoned": False,
}  # fmt: skip


def test_a_row_becomes_a_call_with_agents_by_extension():
    call = DemoCall.from_row(ROW)
    assert (call.agents, call.decision_ms, call.ended) == (("2001",), 1.5, True)
    assert not DemoCall.from_row({**ROW, "agents": None, "ended_at": None}).ended


def test_an_unanswered_call_says_why_in_a_word():
    nobody = replace(ANSWERED, agents=(), talk_s=0.0, queue=None)
    assert outcome(replace(nobody, route="selfservice")) == "self-service"
    assert outcome(replace(nobody, route="afterhours")) == "after hours"
    assert outcome(replace(nobody, route="queue", wait_s=7.6, abandoned=True)) == (
        "abandoned after 8 s"
    )
    assert outcome(replace(nobody, route="queue", ended=False, wait_s=None)) == (
        "still on the line"
    )
    assert outcome(replace(ANSWERED, agents=("2006",))) == "2006"


def test_the_table_shows_names_whole_and_a_word_for_every_call():
    after_hours = replace(ANSWERED, dnis="5550200", route="afterhours", rule="closed",
                          queue=None, agents=(), talk_s=0.0)  # fmt: skip
    lines = table([replace(ANSWERED, agents=("2006",)), after_hours])
    assert lines[0].split() == [
        "ANI", "DNIS", "customer", "tier", "route", "queue", "prio", "rule", "ms", "answered",
        "by", "talk",
    ]  # fmt: skip
    assert "Carmen Herrera Fernández de Córdoba" in lines[1]  # not cut at 18 characters
    assert re.search(r"  2006 +3\.0 s$", lines[1])
    assert re.search(r"  after hours +-$", lines[2])
    # Columns line up: every row is as wide as the widest.
    assert len({len(line) for line in lines}) <= len(lines)
    assert lines[1].index("gold") == lines[2].index("gold") == lines[0].index("tier")


def test_the_demo_hours_are_described_as_people_say_them():
    assert describe_hours(NUMBERS["5550200"].hours) == "Mon–Fri 08:00–20:00, Sat 09:00–13:00"


def test_a_line_closed_by_the_day_is_named_with_its_local_time():
    sunday = datetime(2026, 11, 22, 16, 14, tzinfo=UTC)  # 11:14 in New York
    after_hours = replace(ANSWERED, dnis="5550200", route="afterhours", agents=())
    notes = closed_lines(PLAN.numbers, sunday, [after_hours])
    assert notes == [
        "note: 5550200 (sales) is closed now, Sunday 11:14 in America/New_York "
        "(open Mon–Fri 08:00–20:00, Sat 09:00–13:00): its calls get the after-hours message."
    ]
    monday_noon = datetime(2026, 11, 23, 17, 0, tzinfo=UTC)
    assert closed_lines(PLAN.numbers, monday_noon) == []
    late = datetime(2026, 11, 24, 2, 30, tzinfo=UTC)  # Monday 21:30 in New York
    assert closed_lines(PLAN.numbers, late)[0].startswith(
        "note: 5550200 (sales) is closed now, Monday 21:30 in America/New_York"
    )


def test_one_call_is_told_line_by_line():
    lines = one_call(ANSWERED)
    assert lines == [
        "call      2120000006 -> 5550100",
        "route     queue spanish (priority 5)",
        "rule      spanish",
        "customer  Carmen Herrera Fernández de Córdoba (gold)",
        "agent     PJSIP/2006, after 1.0 s in the queue",
        "talk      3.0 s",
    ]
    unanswered = replace(ANSWERED, route="selfservice", queue=None, agents=(), customer=None)
    assert one_call(unanswered)[1:] == [
        "route     selfservice (priority 5)",
        "rule      spanish",
        "customer  unknown",
        "agent     none: self-service",
        "talk      -",
    ]


def test_callers_stay_on_the_line_for_the_hold_time(tmp_path: Path):
    """The hint once placed calls without -d: they hung up the moment Asterisk answered."""
    argv = caller_command(
        scenarios=Path("/s"), injection=tmp_path / "c.csv", calls=3, hold_s=4,
        rate=2, errors=tmp_path / "e.log",
    )  # fmt: skip
    assert argv[:2] == ["sipp", "127.0.0.1:5060"]
    assert argv[argv.index("-d") + 1] == "4000"
    assert argv[argv.index("-sf") + 1] == "/s/caller.xml"
    assert (argv[argv.index("-p") + 1], argv[argv.index("-m") + 1]) == ("5080", "3")


def test_the_demo_call_list_is_counted_as_sipp_reads_it():
    lines = DEMO_CALLS.read_text().splitlines()
    calls = [line for line in lines if line and line[0].isdigit()]
    assert count_calls(DEMO_CALLS) == len(calls) > 10
