"""The routing plan (cti.routing.plan): parsing, every kind of mistake, writing it back,
and the in-memory table built from it (cti.routing.table)."""

from __future__ import annotations

import dataclasses
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import tomli_w
from hypothesis import given
from hypothesis import strategies as st

from cti.routing.hours import DAYS, OpeningHours, TimeWindow
from cti.routing.model import STATUSES, TIERS, DialledNumber, Match, RouteKind, Rule
from cti.routing.plan import (
    MAX_PRIORITY,
    MAX_RULES,
    PlanError,
    QueueSpec,
    RoutingPlan,
    check_queues_exist,
    dumps,
    loads,
    parse_match,
    parse_plan,
    parse_rule,
    rule_to_mapping,
)
from cti.routing.table import RoutingTable

GOOD = """
[[queues]]
name = "support"
description = "Customer support"

[[queues]]
name = "vip"

[[numbers]]
dnis = "555-0100"
service = "support"
default_queue = "support"
timezone = "America/New_York"
hours = { mon = ["08:00-20:00"], fri = "22:00-06:00" }

[[numbers]]
dnis = "+442079460000"
service = "uk"
default_queue = "support"

[[rules]]
name = "closed"
match = { hours = "closed" }
route = "afterhours"

[[rules]]
name = "gold-first"
match = { tier = ["gold", "Platinum"], service = "support", known = true }
queue = "vip"
priority = 10

[[rules]]
name = "night-owls"
enabled = false
match = { days = ["sat", "sun"], time = "22:00-06:00", intent = ["balance"] }
route = "selfservice"

[[rules]]
name = "everyone-else"
"""


def test_loads_a_good_plan() -> None:
    plan = loads(GOOD)
    assert plan.queues == (QueueSpec("support", "Customer support"), QueueSpec("vip"))
    assert plan.numbers == (
        DialledNumber(
            "5550100",
            "support",
            "support",
            ZoneInfo("America/New_York"),
            OpeningHours.parse({"mon": ["08:00-20:00"], "fri": ["22:00-06:00"]}),
        ),
        DialledNumber("+442079460000", "uk", "support", ZoneInfo("UTC"), None),
    )
    assert plan.rules == (
        Rule("closed", Match(open=False), RouteKind.AFTERHOURS),
        Rule(
            "gold-first",
            Match(
                tiers=frozenset({"gold", "platinum"}),
                services=frozenset({"support"}),
                known=True,
            ),
            RouteKind.QUEUE,
            queue="vip",
            priority=10,
        ),
        Rule(
            "night-owls",
            Match(
                days=frozenset({5, 6}),
                time=TimeWindow.parse("22:00-06:00"),
                intents=frozenset({"balance"}),
            ),
            RouteKind.SELFSERVICE,
            enabled=False,
        ),
        Rule("everyone-else", Match(), RouteKind.QUEUE),
    )


def test_loads_an_empty_plan() -> None:
    assert loads("") == RoutingPlan((), (), ())


@pytest.mark.parametrize(
    ("hours", "open_"),
    [
        pytest.param("open", True, id="open"),
        pytest.param("closed", False, id="closed"),
    ],
)
def test_match_hours(hours: str, open_: bool) -> None:
    assert parse_match({"hours": hours}, "m") == Match(open=open_)


def test_match_words_are_lowercased() -> None:
    match = parse_match(
        {"tier": "GOLD", "status": ["Active"], "language": "ES", "days": ["Mon"]}, "m"
    )
    assert match == Match(
        tiers=frozenset({"gold"}),
        statuses=frozenset({"active"}),
        languages=frozenset({"es"}),
        days=frozenset({0}),
    )


# --- every kind of mistake -----------------------------------------------------------------

BASE_QUEUES = [{"name": "support"}, {"name": "vip"}]
BASE_NUMBER = {"dnis": "5550100", "service": "support", "default_queue": "support"}
BASE_RULE = {"name": "first", "priority": 1}


def plan_with(
    rule: dict[str, Any] | None = None,
    number: dict[str, Any] | None = None,
    queue: dict[str, Any] | None = None,
) -> str:
    """A valid plan as TOML with ``rule``/``number``/``queue`` as the second entry."""
    doc = {
        "queues": BASE_QUEUES[:1] + ([queue] if queue is not None else BASE_QUEUES[1:]),
        "numbers": [BASE_NUMBER, *([number] if number is not None else [])],
        "rules": [BASE_RULE, *([rule] if rule is not None else [])],
    }
    return tomli_w.dumps(doc)


def test_plan_with_nothing_added_is_valid() -> None:
    assert len(loads(plan_with()).rules) == 1


GOLD_RULE = {"name": "gold", "match": {"tier": ["gold"]}, "priority": 10}


def gold(**changes: Any) -> dict[str, Any]:
    return {**GOLD_RULE, **changes}


@pytest.mark.parametrize(
    ("rule", "where", "what"),
    [
        # unknown keys must never be ignored: a typo would match every caller
        pytest.param(
            gold(match={"teir": ["gold"]}), 'rules[2] "gold".match', "teir", id="match-key"
        ),
        pytest.param(gold(prio=10), "rules[2]", "prio", id="rule-key"),
        pytest.param(gold(match="gold"), 'rules[2] "gold".match', "table", id="match-not-table"),
        # unknown values
        pytest.param(
            gold(match={"tier": ["diamond"]}), 'rules[2] "gold".match.tier', "diamond", id="tier"
        ),
        pytest.param(
            gold(match={"status": ["late"]}), 'rules[2] "gold".match.status', "late", id="status"
        ),
        pytest.param(
            gold(match={"days": ["funday"]}), 'rules[2] "gold".match.days', "funday", id="day"
        ),
        pytest.param(
            gold(match={"days": ["monday"]}), 'rules[2] "gold".match.days', "monday", id="long-day"
        ),
        pytest.param(gold(match={"tier": []}), 'rules[2] "gold".match.tier', "list", id="empty"),
        pytest.param(
            gold(match={"language": ["e s"]}), 'rules[2] "gold".match.language', "word", id="word"
        ),
        pytest.param(
            gold(match={"intent": [1]}), 'rules[2] "gold".match.intent', "word", id="word-not-str"
        ),
        pytest.param(
            gold(match={"hours": "sometimes"}), 'rules[2] "gold".match.hours', "open", id="hours"
        ),
        pytest.param(
            gold(match={"known": "yes"}), 'rules[2] "gold".match.known', "true", id="known"
        ),
        # time windows
        pytest.param(
            gold(match={"time": "8-20"}), 'rules[2] "gold".match.time', "HH:MM", id="time-format"
        ),
        pytest.param(
            gold(match={"time": "25:00-26:00"}), 'rules[2] "gold".match.time', "24", id="time-25h"
        ),
        pytest.param(
            gold(match={"time": "08:00-08:00"}), 'rules[2] "gold".match.time', "empty", id="empty"
        ),
        pytest.param(
            gold(match={"time": 800}), 'rules[2] "gold".match.time', "HH:MM", id="time-not-str"
        ),
        # priority
        pytest.param(gold(priority=-1), 'rules[2] "gold".priority', "between", id="priority-neg"),
        pytest.param(
            gold(priority=MAX_PRIORITY + 1), 'rules[2] "gold".priority', "1000", id="priority-1001"
        ),
        pytest.param(gold(priority=True), 'rules[2] "gold".priority', "integer", id="prio-bool"),
        pytest.param(gold(priority="10"), 'rules[2] "gold".priority', "integer", id="prio-str"),
        pytest.param(gold(priority=1.5), 'rules[2] "gold".priority', "integer", id="prio-float"),
        # route and queue
        pytest.param(
            gold(route="selfservice", queue="vip"),
            'rules[2] "gold".queue',
            "queue",
            id="queue-with-selfservice",
        ),
        pytest.param(
            gold(route="afterhours", queue="vip"),
            'rules[2] "gold".queue',
            "queue",
            id="queue-with-afterhours",
        ),
        pytest.param(gold(route="voicemail"), 'rules[2] "gold".route', "voicemail", id="route"),
        pytest.param(gold(queue="v i p"), 'rules[2] "gold".queue', "name", id="queue-name"),
        pytest.param(gold(enabled="no"), 'rules[2] "gold".enabled', "true", id="enabled"),
        # names
        pytest.param(gold(name="gold rule"), "rules[2].name", "name", id="name-space"),
        pytest.param(gold(name="-gold"), "rules[2].name", "name", id="name-leading-dash"),
        pytest.param(gold(name="g" * 65), "rules[2].name", "name", id="name-too-long"),
        pytest.param(gold(name="gold\n"), "rules[2].name", "name", id="name-trailing-newline"),
        pytest.param(
            gold(queue="vip\n"), 'rules[2] "gold".queue', "name", id="queue-trailing-newline"
        ),
        pytest.param(
            gold(match={"service": ["support\n"]}),
            'rules[2] "gold".match.service',
            "word",
            id="word-trailing-newline",
        ),
        pytest.param({"priority": 1}, "rules[2].name", "None", id="name-missing"),
        pytest.param("gold", "rules[2]", "table", id="rule-not-table"),
    ],
)
def test_rule_errors_say_where(rule: Any, where: str, what: str) -> None:
    with pytest.raises(PlanError) as caught:
        loads(plan_with(rule=rule))
    message = str(caught.value)
    assert message.startswith(where), message
    assert what in message


@pytest.mark.parametrize(
    ("number", "where", "what"),
    [
        pytest.param(
            {**BASE_NUMBER, "dnis": "5550200", "srvice": "x"}, "numbers[2]", "srvice", id="key"
        ),
        pytest.param(
            {**BASE_NUMBER, "dnis": "5550200", "timezone": "Mars/Olympus"},
            'numbers[2] "5550200".timezone',
            "Mars/Olympus",
            id="timezone",
        ),
        pytest.param(
            {**BASE_NUMBER, "dnis": "5550200", "timezone": 5},
            'numbers[2] "5550200".timezone',
            "time zone",
            id="timezone-not-str",
        ),
        pytest.param(
            {**BASE_NUMBER, "dnis": "5550200", "hours": {"funday": ["08:00-20:00"]}},
            'numbers[2] "5550200".hours',
            "funday",
            id="hours-day",
        ),
        pytest.param(
            {**BASE_NUMBER, "dnis": "5550200", "hours": {"mon": ["8-20"]}},
            'numbers[2] "5550200".hours',
            "HH:MM",
            id="hours-range",
        ),
        pytest.param(
            {**BASE_NUMBER, "dnis": "5550200", "hours": {"mon": [8]}},
            'numbers[2] "5550200".hours',
            "",
            id="hours-not-text",
        ),
        pytest.param(
            {**BASE_NUMBER, "dnis": "5550200", "hours": {"mon": 8}},
            'numbers[2] "5550200".hours',
            "",
            id="hours-not-a-list",
        ),
        pytest.param(
            {**BASE_NUMBER, "dnis": "5550200", "hours": "24/7"},
            'numbers[2] "5550200".hours',
            "table",
            id="hours-not-table",
        ),
        pytest.param({**BASE_NUMBER, "dnis": "sales"}, "numbers[2].dnis", "sales", id="dnis"),
        pytest.param({**BASE_NUMBER, "dnis": 5550200}, "numbers[2].dnis", "5550200", id="dnis-int"),
        pytest.param(
            {**BASE_NUMBER, "dnis": "5550200", "service": "sales dept"},
            'numbers[2] "5550200".service',
            "name",
            id="service",
        ),
        pytest.param(
            {"dnis": "5550200", "service": "sales"},
            'numbers[2] "5550200".default_queue',
            "None",
            id="default-queue-missing",
        ),
    ],
)
def test_number_errors_say_where(number: dict[str, Any], where: str, what: str) -> None:
    with pytest.raises(PlanError) as caught:
        loads(plan_with(number=number))
    message = str(caught.value)
    assert message.startswith(where), message
    assert what in message


@pytest.mark.parametrize(
    ("queue", "where", "what"),
    [
        pytest.param({"name": "vip", "size": 3}, "queues[2]", "size", id="key"),
        pytest.param({"name": "v i p"}, "queues[2].name", "name", id="name"),
        pytest.param({"name": "vip", "description": "x" * 201}, "queues[2].description", "200"),
    ],
)
def test_queue_errors_say_where(queue: dict[str, Any], where: str, what: str) -> None:
    with pytest.raises(PlanError) as caught:
        loads(plan_with(queue=queue))
    message = str(caught.value)
    assert message.startswith(where), message
    assert what in message


@pytest.mark.parametrize(
    ("text", "what"),
    [
        pytest.param(plan_with(rule={"name": "first"}), "rule 'first' appears twice", id="rule"),
        pytest.param(plan_with(queue={"name": "support"}), "queue 'support'", id="queue"),
        pytest.param(plan_with(number=BASE_NUMBER), "number '5550100'", id="number"),
        pytest.param(
            plan_with(number={**BASE_NUMBER, "dnis": "555-0100"}),
            "number '5550100' appears twice",
            id="number-same-digits",
        ),
    ],
)
def test_duplicates_are_errors(text: str, what: str) -> None:
    with pytest.raises(PlanError, match="appears twice") as caught:
        loads(text)
    assert what in str(caught.value)


@pytest.mark.parametrize(
    ("text", "what"),
    [
        pytest.param("this is not toml", "not valid TOML", id="not-toml"),
        pytest.param('[[rules]]\nname = "a"\nname = "b"\n', "not valid TOML", id="duplicate-key"),
        pytest.param('[[rule]]\nname = "a"\n', "plan: unknown key(s) ['rule']", id="plan-key"),
        pytest.param('rules = "gold"\n', "rules: expected an array", id="rules-not-array"),
        pytest.param("[queues]\n", "queues: expected an array", id="queues-table"),
    ],
)
def test_document_errors(text: str, what: str) -> None:
    with pytest.raises(PlanError) as caught:
        loads(text)
    assert what in str(caught.value)


def test_too_many_rules() -> None:
    rules = [{"name": f"r{i}"} for i in range(MAX_RULES + 1)]
    with pytest.raises(PlanError, match=f"at most {MAX_RULES}"):
        parse_plan({"rules": rules})
    assert len(parse_plan({"rules": rules[:MAX_RULES]}).rules) == MAX_RULES


def test_plan_error_is_a_value_error() -> None:
    assert issubclass(PlanError, ValueError)


def test_rule_names_its_source_in_errors() -> None:
    """The database uses the same parser with its own "where"."""
    with pytest.raises(PlanError, match=r"^routing_rules row 'x' \"x\"\.priority"):
        parse_rule({"name": "x", "priority": -5}, "routing_rules row 'x'")


# --- queues must exist ---------------------------------------------------------------------


def test_check_queues_exist_accepts_plan_and_stored_queues() -> None:
    plan = loads(plan_with(rule=gold(queue="vip")))
    check_queues_exist(plan, [])
    without_vip = dataclasses.replace(plan, queues=plan.queues[:1])
    check_queues_exist(without_vip, ["vip"])


@pytest.mark.parametrize(
    ("text", "what"),
    [
        pytest.param(plan_with(rule=gold(queue="gold-desk")), 'rule "gold"', id="rule-queue"),
        pytest.param(
            plan_with(number={**BASE_NUMBER, "dnis": "5550200", "default_queue": "sales"}),
            'number "5550200"',
            id="number-default-queue",
        ),
    ],
)
def test_check_queues_exist_rejects_unknown_queues(text: str, what: str) -> None:
    plan = loads(text)
    with pytest.raises(PlanError, match="unknown queue") as caught:
        check_queues_exist(plan, ["support", "vip"])
    assert str(caught.value).startswith(what)


# --- writing the plan back -----------------------------------------------------------------

DEMO_TEXT = resources.files("cti.demo").joinpath("routing.toml").read_text()


@pytest.mark.parametrize(
    "text", [GOOD, DEMO_TEXT, plan_with(), ""], ids=["good", "demo", "small", "empty"]
)
def test_dumps_parses_back_to_an_equal_plan(text: str) -> None:
    plan = loads(text)
    written = dumps(plan)
    assert loads(written) == plan
    assert dumps(loads(written)) == written


def test_dumps_keeps_rule_order_and_disabled_rules() -> None:
    plan = loads(dumps(loads(GOOD)))
    assert [r.name for r in plan.rules] == ["closed", "gold-first", "night-owls", "everyone-else"]
    assert [r.enabled for r in plan.rules] == [True, True, False, True]


_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,20}", fullmatch=True)
_words = st.from_regex(r"[a-z0-9_.\-]{1,12}", fullmatch=True)
_windows = (
    st.tuples(st.integers(0, 1439), st.integers(1, 1440))
    .filter(lambda pair: pair[0] != pair[1])
    .map(lambda pair: TimeWindow(*pair))
)


def _some(values: st.SearchStrategy[Any]) -> st.SearchStrategy[frozenset[Any] | None]:
    return st.none() | st.frozensets(values, min_size=1, max_size=4)


_matches = st.builds(
    Match,
    services=_some(_words),
    tiers=_some(st.sampled_from((*TIERS, "unknown"))),
    statuses=_some(st.sampled_from(STATUSES)),
    languages=_some(_words),
    intents=_some(_words),
    known=st.none() | st.booleans(),
    open=st.none() | st.booleans(),
    days=_some(st.integers(0, 6)),
    time=st.none() | _windows,
)


@st.composite
def _rules(draw: st.DrawFn, name: st.SearchStrategy[str] = _names) -> Rule:
    route = draw(st.sampled_from(RouteKind))
    queue = draw(st.none() | _names) if route is RouteKind.QUEUE else None
    return Rule(
        name=draw(name),
        match=draw(_matches),
        route=route,
        queue=queue,
        priority=draw(st.integers(0, MAX_PRIORITY)),
        enabled=draw(st.booleans()),
    )


@given(_rules())
def test_rule_to_mapping_parses_back(rule: Rule) -> None:
    assert parse_rule(rule_to_mapping(rule), "rule") == rule


_hours = st.none() | st.dictionaries(
    st.sampled_from(DAYS), st.lists(_windows.map(str), max_size=2)
).map(OpeningHours.parse)
_numbers = st.builds(
    DialledNumber,
    dnis=st.from_regex(r"\+?[0-9]{1,15}", fullmatch=True),
    service=_names,
    default_queue=_names,
    timezone=st.sampled_from(["UTC", "America/New_York", "Europe/London", "Asia/Kolkata"]).map(
        ZoneInfo
    ),
    hours=_hours,
)
_plans = st.builds(
    RoutingPlan,
    queues=st.lists(
        st.builds(QueueSpec, _names, st.text(max_size=40)), unique_by=lambda q: q.name
    ).map(tuple),
    numbers=st.lists(_numbers, max_size=4, unique_by=lambda n: n.dnis).map(tuple),
    rules=st.lists(_rules(), max_size=6, unique_by=lambda r: r.name).map(tuple),
)


@given(_plans)
def test_any_plan_survives_dumps_and_loads(plan: RoutingPlan) -> None:
    assert loads(dumps(plan)) == plan


# --- the routing table ---------------------------------------------------------------------


TABLE = RoutingTable.from_plan(
    loads(plan_with(number={"dnis": "+442079460000", "service": "uk", "default_queue": "support"}))
)


@pytest.mark.parametrize(
    ("dnis", "found"),
    [
        pytest.param("5550100", "5550100", id="stored-without-plus"),
        pytest.param("+5550100", "5550100", id="asked-with-plus"),
        pytest.param("555-0100", "5550100", id="asked-with-punctuation"),
        pytest.param("+442079460000", "+442079460000", id="stored-with-plus"),
        pytest.param("442079460000", "+442079460000", id="asked-without-plus"),
        pytest.param("+44 20 7946 0000", "+442079460000", id="asked-spaced"),
        pytest.param("5550101", None, id="other-number"),
        pytest.param("", None, id="empty"),
        pytest.param("s", None, id="not-digits"),
    ],
)
def test_table_finds_numbers_with_and_without_plus(dnis: str, found: str | None) -> None:
    number = TABLE.number(dnis)
    assert (number.dnis if number else None) == found


def test_table_prefers_the_exact_key() -> None:
    plan = loads(
        plan_with(number={"dnis": "+5550100", "service": "plus", "default_queue": "support"})
    )
    table = RoutingTable.from_plan(plan)
    assert table.number("5550100").service == "support"
    assert table.number("+5550100").service == "plus"


def test_table_from_plan_keeps_rule_order_and_is_loaded() -> None:
    plan = loads(GOOD)
    table = RoutingTable.from_plan(plan)
    assert table.loaded
    assert table.rules == plan.rules
    assert not RoutingTable().loaded
    assert RoutingTable().number("5550100") is None
    with pytest.raises(TypeError):
        table.numbers["5550199"] = plan.numbers[0]  # type: ignore[index]
