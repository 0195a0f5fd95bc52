"""The rule engine (cti.routing.engine): every condition, precedence, route kinds,
fail-open, time of day in the dialled number's zone, and the demo call center."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cti.demo.seed import demo_plan
from cti.routing.engine import FAIL_OPEN_RULE, NO_RULE, decide, fail_open, matches
from cti.routing.hours import OpeningHours, TimeWindow
from cti.routing.model import (
    STATUSES,
    TIERS,
    CallFacts,
    Customer,
    Decision,
    DialledNumber,
    Match,
    RouteKind,
    Rule,
)
from cti.routing.phone import normalize
from cti.routing.table import RoutingTable

NEW_YORK = ZoneInfo("America/New_York")
TOKYO = ZoneInfo("Asia/Tokyo")
GLOBAL_DEFAULT = "default"

SUPPORT = DialledNumber("5550100", "support", "support", NEW_YORK, None)
SALES = DialledNumber(
    "5550200",
    "sales",
    "sales",
    NEW_YORK,
    OpeningHours.parse(
        {
            **{day: ["08:00-20:00"] for day in ("mon", "tue", "wed", "thu", "fri")},
            "sat": ["09:00-13:00"],
        }
    ),
)
NIGHT_DESK = DialledNumber(
    "5550400", "nights", "nights", NEW_YORK, OpeningHours.parse({"fri": ["22:00-06:00"]})
)

# Instants, with their local time in New York (EST, UTC-5, in late November 2026).
MON_1030 = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)  # Monday 10:30 local
MON_0730 = datetime(2026, 11, 23, 12, 30, tzinfo=UTC)  # Monday 07:30 local: sales closed
MON_0830 = datetime(2026, 11, 23, 13, 30, tzinfo=UTC)  # Monday 08:30 local
SUN_1000 = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)  # Sunday 10:00 local
SAT_0300 = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)  # Saturday 03:00 local
FRI_2330 = datetime(2026, 11, 21, 4, 30, tzinfo=UTC)  # Friday 23:30 local (UTC Saturday)
MON_0030 = datetime(2026, 11, 23, 5, 30, tzinfo=UTC)  # Monday 00:30 local


def customer(
    tier: str = "gold", status: str = "active", language: str = "en", id_: int = 42
) -> Customer:
    return Customer(id_, f"A{id_:07d}", "Test Customer", tier, status, language)


def facts(
    *,
    cust: Customer | None = None,
    number: DialledNumber | None = SUPPORT,
    now: datetime = MON_1030,
    ivr: Mapping[str, str] | None = None,
) -> CallFacts:
    dnis = number.dnis if number else "5559999"
    return CallFacts(normalize("+12125550001"), dnis, number, cust, now, dict(ivr or {}))


def rule(name: str = "r", route: RouteKind = RouteKind.QUEUE, **kwargs: object) -> Rule:
    """A rule; keyword arguments that are Match fields go to its match."""
    match_fields = {f.name for f in dataclasses.fields(Match)}
    match = Match(**{k: v for k, v in kwargs.items() if k in match_fields})
    rest = {k: v for k, v in kwargs.items() if k not in match_fields}
    return Rule(name, match, route, **rest)


GOLD = customer("gold")
BRONZE = customer("bronze")
DELINQUENT = customer("gold", status="delinquent")
SPANISH = customer("silver", language="es")


# --- each condition ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("match", "call", "expected"),
    [
        pytest.param(Match(), facts(), True, id="empty-match-matches-anything"),
        pytest.param(Match(), facts(number=None), True, id="empty-match-unknown-number"),
        # service: the dialled number's line of business
        pytest.param(Match(services=frozenset({"support"})), facts(), True, id="service-hit"),
        pytest.param(
            Match(services=frozenset({"sales"})), facts(), False, id="service-other-number"
        ),
        pytest.param(
            Match(services=frozenset({"sales", "support"})), facts(), True, id="service-any-of"
        ),
        pytest.param(
            Match(services=frozenset({"support"})),
            facts(number=None),
            False,
            id="service-unknown-number",
        ),
        # tier, with "unknown" for callers we could not identify
        pytest.param(Match(tiers=frozenset({"gold"})), facts(cust=GOLD), True, id="tier-hit"),
        pytest.param(Match(tiers=frozenset({"platinum"})), facts(cust=GOLD), False, id="tier-miss"),
        pytest.param(
            Match(tiers=frozenset({"unknown"})), facts(cust=None), True, id="tier-unknown-caller"
        ),
        pytest.param(
            Match(tiers=frozenset({"unknown"})), facts(cust=GOLD), False, id="tier-unknown-known"
        ),
        pytest.param(
            Match(tiers=frozenset(TIERS)), facts(cust=None), False, id="tiers-exclude-unknown"
        ),
        # status
        pytest.param(
            Match(statuses=frozenset({"delinquent"})),
            facts(cust=DELINQUENT),
            True,
            id="status-hit",
        ),
        pytest.param(
            Match(statuses=frozenset({"delinquent"})), facts(cust=GOLD), False, id="status-miss"
        ),
        pytest.param(
            Match(statuses=frozenset(STATUSES)),
            facts(cust=None),
            False,
            id="status-unknown-caller",
        ),
        # language
        pytest.param(
            Match(languages=frozenset({"es"})), facts(cust=SPANISH), True, id="language-hit"
        ),
        pytest.param(
            Match(languages=frozenset({"es"})), facts(cust=GOLD), False, id="language-miss"
        ),
        pytest.param(
            Match(languages=frozenset({"en"})),
            facts(cust=None),
            False,
            id="language-unknown-caller",
        ),
        # intent, from what the IVR collected
        pytest.param(
            Match(intents=frozenset({"balance"})),
            facts(ivr={"intent": "balance"}),
            True,
            id="intent-hit",
        ),
        pytest.param(
            Match(intents=frozenset({"balance"})),
            facts(ivr={"intent": "fraud"}),
            False,
            id="intent-miss",
        ),
        pytest.param(
            Match(intents=frozenset({"balance"})), facts(ivr={}), False, id="intent-absent"
        ),
        pytest.param(
            Match(intents=frozenset({"balance"})),
            facts(ivr={"account": "balance"}),
            False,
            id="intent-only-from-intent-key",
        ),
        # known
        pytest.param(Match(known=True), facts(cust=GOLD), True, id="known-true-hit"),
        pytest.param(Match(known=True), facts(cust=None), False, id="known-true-miss"),
        pytest.param(Match(known=False), facts(cust=None), True, id="known-false-hit"),
        pytest.param(Match(known=False), facts(cust=GOLD), False, id="known-false-miss"),
        # open / closed against the dialled number's opening hours
        pytest.param(Match(open=True), facts(number=SALES), True, id="open-during-hours"),
        pytest.param(
            Match(open=True), facts(number=SALES, now=SUN_1000), False, id="open-on-sunday"
        ),
        pytest.param(
            Match(open=False), facts(number=SALES, now=SUN_1000), True, id="closed-on-sunday"
        ),
        pytest.param(
            Match(open=False), facts(number=SALES, now=MON_0730), True, id="closed-0730-local"
        ),
        pytest.param(
            Match(open=False), facts(number=SALES, now=MON_0830), False, id="open-0830-local"
        ),
        pytest.param(
            Match(open=True), facts(number=NIGHT_DESK, now=SAT_0300), True, id="open-wrapped"
        ),
        pytest.param(
            Match(open=False), facts(number=SUPPORT, now=SUN_1000), False, id="24-7-never-closed"
        ),
        pytest.param(
            Match(open=False), facts(number=None), False, id="unknown-number-counts-as-open"
        ),
        # days, in the number's time zone
        pytest.param(Match(days=frozenset({0})), facts(now=MON_1030), True, id="days-monday"),
        pytest.param(Match(days=frozenset({6})), facts(now=MON_1030), False, id="days-not-sunday"),
        pytest.param(
            Match(days=frozenset({4})),
            facts(now=FRI_2330),
            True,
            id="days-local-friday-while-utc-saturday",
        ),
        pytest.param(
            Match(days=frozenset({5})),
            facts(now=FRI_2330),
            False,
            id="days-not-utc-saturday",
        ),
        pytest.param(
            Match(days=frozenset({5})),
            facts(now=FRI_2330, number=None),
            True,
            id="days-unknown-number-uses-utc",
        ),
        # time windows, in the number's time zone
        pytest.param(
            Match(time=TimeWindow.parse("09:00-17:00")), facts(now=MON_1030), True, id="time-in"
        ),
        pytest.param(
            Match(time=TimeWindow.parse("09:00-17:00")),
            facts(now=MON_0830),
            False,
            id="time-before",
        ),
        pytest.param(
            Match(time=TimeWindow.parse("15:00-16:00")),
            facts(now=MON_1030),
            False,
            id="time-is-local-not-utc",
        ),
        pytest.param(
            Match(time=TimeWindow.parse("15:00-16:00")),
            facts(now=MON_1030, number=None),
            True,
            id="time-unknown-number-uses-utc",
        ),
        pytest.param(
            Match(time=TimeWindow.parse("22:00-06:00")),
            facts(now=FRI_2330),
            True,
            id="time-wraps-before-midnight",
        ),
        pytest.param(
            Match(time=TimeWindow.parse("22:00-06:00")),
            facts(now=MON_0030),
            True,
            id="time-wraps-after-midnight",
        ),
        pytest.param(
            Match(time=TimeWindow.parse("22:00-06:00")),
            facts(now=MON_1030),
            False,
            id="time-wraps-not-midday",
        ),
        pytest.param(
            Match(days=frozenset({0}), time=TimeWindow.parse("22:00-06:00")),
            facts(now=MON_0030),
            True,
            id="days-and-time-by-local-date",
        ),
        pytest.param(
            Match(days=frozenset({6}), time=TimeWindow.parse("22:00-06:00")),
            facts(now=MON_0030),
            False,
            id="days-is-the-calendar-day-not-the-windows-start",
        ),
        # every condition must hold
        pytest.param(
            Match(tiers=frozenset({"gold"}), services=frozenset({"sales"})),
            facts(cust=GOLD),
            False,
            id="all-conditions-must-hold",
        ),
        pytest.param(
            Match(
                services=frozenset({"sales"}),
                tiers=frozenset({"gold"}),
                statuses=frozenset({"active"}),
                languages=frozenset({"en"}),
                intents=frozenset({"buy"}),
                known=True,
                open=True,
                days=frozenset({0}),
                time=TimeWindow.parse("10:00-11:00"),
            ),
            facts(cust=GOLD, number=SALES, ivr={"intent": "buy"}),
            True,
            id="every-condition-holds",
        ),
    ],
)
def test_matches(match: Match, call: CallFacts, expected: bool) -> None:
    assert matches(match, call) is expected


def test_match_compares_case_insensitively_with_the_plans_lowercased_words() -> None:
    """The plan lowercases every match word, so facts must be compared lowercased."""
    sales = dataclasses.replace(SALES, service="Sales")
    assert matches(Match(services=frozenset({"sales"})), facts(number=sales))
    assert matches(Match(intents=frozenset({"balance"})), facts(ivr={"intent": "Balance"}))


# --- precedence ----------------------------------------------------------------------------


def test_first_matching_rule_wins() -> None:
    rules = [
        rule("silver", tiers=frozenset({"silver"}), priority=5),
        rule("gold-a", tiers=frozenset({"gold"}), priority=10),
        rule("gold-b", tiers=frozenset({"gold"}), priority=99),
        rule("everyone", priority=1),
    ]
    decision = decide(facts(cust=GOLD), rules, GLOBAL_DEFAULT)
    assert (decision.rule, decision.priority) == ("gold-a", 10)


def test_order_decides_not_priority() -> None:
    rules = [rule("low", priority=1), rule("high", priority=1000)]
    assert decide(facts(), rules, GLOBAL_DEFAULT).rule == "low"
    assert decide(facts(), rules[::-1], GLOBAL_DEFAULT).rule == "high"


def test_disabled_rules_are_skipped() -> None:
    rules = [
        rule("off", tiers=frozenset({"gold"}), queue="vip", priority=50, enabled=False),
        rule("on", tiers=frozenset({"gold"}), priority=10),
    ]
    decision = decide(facts(cust=GOLD), rules, GLOBAL_DEFAULT)
    assert (decision.rule, decision.queue, decision.priority) == ("on", "support", 10)


def test_only_disabled_rules_fall_through_to_default() -> None:
    rules = [rule("off", enabled=False, priority=50)]
    assert decide(facts(cust=GOLD), rules, GLOBAL_DEFAULT).rule == NO_RULE


def test_no_match_goes_to_the_numbers_default_queue_at_priority_0() -> None:
    rules = [rule("platinum", tiers=frozenset({"platinum"}), queue="vip", priority=20)]
    decision = decide(facts(cust=GOLD, number=SALES), rules, GLOBAL_DEFAULT)
    assert decision == Decision(
        route=RouteKind.QUEUE,
        queue="sales",
        priority=0,
        rule="default",
        tier="gold",
        customer_id=42,
        service="sales",
    )


def test_no_rules_at_all_still_routes() -> None:
    decision = decide(facts(cust=None), [], GLOBAL_DEFAULT)
    assert (decision.route, decision.queue, decision.priority, decision.rule) == (
        RouteKind.QUEUE,
        "support",
        0,
        NO_RULE,
    )


def test_unknown_number_goes_to_the_global_default_queue() -> None:
    decision = decide(facts(number=None, cust=GOLD), [], "overflow")
    assert (decision.queue, decision.priority, decision.rule, decision.service) == (
        "overflow",
        0,
        NO_RULE,
        None,
    )


def test_unknown_number_with_a_matching_rule_without_queue_uses_the_global_default() -> None:
    rules = [rule("gold", tiers=frozenset({"gold"}), priority=10)]
    decision = decide(facts(number=None, cust=GOLD), rules, "overflow")
    assert (decision.queue, decision.priority, decision.rule) == ("overflow", 10, "gold")


# --- route kinds ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("the_rule", "number", "route", "queue"),
    [
        pytest.param(rule(queue="vip"), SUPPORT, RouteKind.QUEUE, "vip", id="explicit-queue"),
        pytest.param(
            rule(queue="vip"), None, RouteKind.QUEUE, "vip", id="explicit-queue-unknown-number"
        ),
        pytest.param(rule(), SUPPORT, RouteKind.QUEUE, "support", id="numbers-default-queue"),
        pytest.param(rule(), SALES, RouteKind.QUEUE, "sales", id="other-numbers-default"),
        pytest.param(rule(), None, RouteKind.QUEUE, GLOBAL_DEFAULT, id="global-default-queue"),
        pytest.param(
            rule(route=RouteKind.SELFSERVICE), SUPPORT, RouteKind.SELFSERVICE, None, id="self"
        ),
        pytest.param(
            rule(route=RouteKind.AFTERHOURS), SUPPORT, RouteKind.AFTERHOURS, None, id="after"
        ),
        pytest.param(
            rule(route=RouteKind.AFTERHOURS), None, RouteKind.AFTERHOURS, None, id="after-unknown"
        ),
        pytest.param(
            # Not loadable from a plan, but the engine must still not send a queue.
            rule(route=RouteKind.SELFSERVICE, queue="vip"),
            SUPPORT,
            RouteKind.SELFSERVICE,
            None,
            id="non-queue-route-drops-queue",
        ),
    ],
)
def test_route_kinds(
    the_rule: Rule, number: DialledNumber | None, route: RouteKind, queue: str | None
) -> None:
    decision = decide(facts(number=number, cust=GOLD), [the_rule], GLOBAL_DEFAULT)
    assert (decision.route, decision.queue, decision.rule) == (route, queue, the_rule.name)


def test_decision_describes_the_caller_and_the_number() -> None:
    decision = decide(facts(cust=customer("platinum", id_=7), number=SALES), [], GLOBAL_DEFAULT)
    assert (decision.tier, decision.customer_id, decision.service) == ("platinum", 7, "sales")
    unknown = decide(facts(cust=None, number=SALES), [], GLOBAL_DEFAULT)
    assert (unknown.tier, unknown.customer_id) == ("unknown", None)


# --- fail open -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "queue", "service"),
    [
        pytest.param(SALES, "sales", "sales", id="known-number"),
        pytest.param(None, GLOBAL_DEFAULT, None, id="unknown-number"),
    ],
)
def test_fail_open(number: DialledNumber | None, queue: str, service: str | None) -> None:
    decision = fail_open(facts(number=number, cust=None, now=SUN_1000), GLOBAL_DEFAULT)
    assert decision == Decision(
        route=RouteKind.QUEUE,
        queue=queue,
        priority=0,
        rule=FAIL_OPEN_RULE,
        tier="unknown",
        customer_id=None,
        service=service,
    )
    assert FAIL_OPEN_RULE == "fail-open"


# --- properties ----------------------------------------------------------------------------


def _set(values: tuple[str, ...]) -> st.SearchStrategy[frozenset[str] | None]:
    return st.none() | st.frozensets(st.sampled_from(values), min_size=1)


_matches = st.builds(
    Match,
    services=_set(("support", "sales", "billing")),
    tiers=_set((*TIERS, "unknown")),
    statuses=_set(STATUSES),
    languages=_set(("en", "es")),
    intents=_set(("balance", "buy")),
    known=st.none() | st.booleans(),
    open=st.none() | st.booleans(),
    days=st.none() | st.frozensets(st.integers(0, 6), min_size=1),
    time=st.none()
    | st.tuples(st.integers(0, 1439), st.integers(1, 1440))
    .filter(lambda pair: pair[0] != pair[1])
    .map(lambda pair: TimeWindow(*pair)),
)
_rules = st.lists(
    st.builds(
        Rule,
        name=st.sampled_from("abcdefgh"),
        match=_matches,
        route=st.sampled_from(RouteKind),
        queue=st.none() | st.sampled_from(["vip", "collections"]),
        priority=st.integers(0, 1000),
        enabled=st.booleans(),
    ),
    max_size=6,
)
_facts = st.builds(
    lambda cust, number, now, intent: facts(
        cust=cust, number=number, now=now, ivr={"intent": intent} if intent else {}
    ),
    cust=st.none()
    | st.builds(
        customer,
        tier=st.sampled_from(TIERS),
        status=st.sampled_from(STATUSES),
        language=st.sampled_from(["en", "es"]),
    ),
    number=st.sampled_from([SUPPORT, SALES, NIGHT_DESK, None]),
    now=st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
    ),
    intent=st.sampled_from(["", "balance", "buy"]),
)


@given(_facts, _rules)
def test_decision_follows_the_first_enabled_matching_rule(
    call: CallFacts, rules: list[Rule]
) -> None:
    decision = decide(call, rules, GLOBAL_DEFAULT)
    winner = next((r for r in rules if r.enabled and matches(r.match, call)), None)
    if winner is None:
        assert (decision.rule, decision.route, decision.priority) == (NO_RULE, RouteKind.QUEUE, 0)
    else:
        assert (decision.route, decision.priority) == (winner.route, winner.priority)
    if decision.route is RouteKind.QUEUE:
        assert decision.queue
    else:
        assert decision.queue is None


@given(_facts, _rules, _rules)
def test_disabled_rules_never_change_the_decision(
    call: CallFacts, rules: list[Rule], noise: list[Rule]
) -> None:
    disabled = [dataclasses.replace(r, name=f"off-{r.name}", enabled=False) for r in noise]
    assert decide(call, disabled + rules, GLOBAL_DEFAULT) == decide(call, rules, GLOBAL_DEFAULT)


@given(_facts, _matches)
def test_match_with_every_condition_is_the_conjunction_of_single_conditions(
    call: CallFacts, match: Match
) -> None:
    singles = [
        Match(**{f.name: getattr(match, f.name)})
        for f in dataclasses.fields(Match)
        if getattr(match, f.name) is not None
    ]
    assert matches(match, call) is all(matches(single, call) for single in singles)


@given(_facts)
def test_the_same_instant_in_another_zone_moves_the_time_window(call: CallFacts) -> None:
    """A window is read in the number's zone: moving the number to Tokyo (UTC+9, no DST)
    gives the same answer as asking about the moment nine hours later in UTC."""
    window = Match(time=TimeWindow.parse("09:00-17:00"))
    number = dataclasses.replace(SUPPORT, timezone=TOKYO)
    local = call.now.astimezone(TOKYO)
    in_window = 9 * 60 <= local.hour * 60 + local.minute < 17 * 60
    assert matches(window, dataclasses.replace(call, number=number)) is in_window


# --- the demo call center (README, "The demo call center") --------------------------------

DEMO = demo_plan()
DEMO_TABLE = RoutingTable.from_plan(DEMO)
NAMED = {
    "grace": customer("platinum", id_=1),
    "alan": customer("gold", id_=2),
    "ada": customer("silver", id_=3),
    "edsger": customer("bronze", id_=4),
    "barbara": customer("gold", "delinquent", id_=5),
    "carmen": customer("gold", language="es", id_=6),
    "suspended": customer("silver", "suspended", id_=7),
    None: None,
}


Q, SELF, AFTER = "queue", "selfservice", "afterhours"

# id: (caller, dialled, when, IVR intent, (route, queue, priority, deciding rule))
DEMO_CASES = {
    "platinum": ("grace", "5550100", MON_1030, "", (Q, "support", 20, "platinum")),
    "gold-support-priority-10": ("alan", "5550100", MON_1030, "", (Q, "support", 10, "gold")),
    "support-is-24-7": ("alan", "5550100", SUN_1000, "", (Q, "support", 10, "gold")),
    "silver": ("ada", "5550100", MON_1030, "", (Q, "support", 5, "silver")),
    "bronze": ("edsger", "5550100", MON_1030, "", (Q, "support", 1, "bronze")),
    "bronze-balance-selfservice": (
        "edsger",
        "5550100",
        MON_1030,
        "balance",
        (SELF, None, 0, "balance-self-service"),
    ),
    "gold-balance-still-queued": (
        "alan",
        "5550100",
        MON_1030,
        "balance",
        (Q, "support", 10, "gold"),
    ),
    "delinquent-collections": (
        "barbara",
        "5550100",
        MON_1030,
        "",
        (Q, "collections", 5, "collections"),
    ),
    "suspended-collections": (
        "suspended",
        "5550300",
        MON_1030,
        "",
        (Q, "collections", 5, "collections"),
    ),
    "es-spanish": ("carmen", "5550100", MON_1030, "", (Q, "spanish", 5, "spanish")),
    "sales-open-monday": ("alan", "5550200", MON_1030, "", (Q, "sales", 10, "gold")),
    "sales-closed-sunday": ("alan", "5550200", SUN_1000, "", (AFTER, None, 0, "closed")),
    "sales-closed-0730-local": ("alan", "5550200", MON_0730, "", (AFTER, None, 0, "closed")),
    "closed-beats-collections": ("barbara", "5550200", SUN_1000, "", (AFTER, None, 0, "closed")),
    "closed-unknown-caller": (None, "5550200", SUN_1000, "", (AFTER, None, 0, "closed")),
    "billing-number": ("alan", "5550300", MON_1030, "", (Q, "billing", 10, "gold")),
    "unknown-caller": (None, "5550100", MON_1030, "", (Q, "support", 0, "unknown-caller")),
    "unknown-caller-unknown-number": (
        None,
        "5559999",
        MON_1030,
        "",
        (Q, "default", 0, "unknown-caller"),
    ),
    "unknown-caller-balance-not-bronze": (
        None,
        "+5550100",
        MON_1030,
        "balance",
        (Q, "support", 0, "unknown-caller"),
    ),
    "gold-unknown-number": ("alan", "5559999", SUN_1000, "", (Q, "default", 10, "gold")),
}


@pytest.mark.parametrize(
    ("who", "dnis", "now", "intent", "want"), list(DEMO_CASES.values()), ids=list(DEMO_CASES)
)
def test_demo_call_center(
    who: str | None,
    dnis: str,
    now: datetime,
    intent: str,
    want: tuple[str, str | None, int, str],
) -> None:
    call = CallFacts(
        normalize("+12125550001"),
        dnis,
        DEMO_TABLE.number(dnis),
        NAMED[who],
        now,
        {"intent": intent} if intent else {},
    )
    decision = decide(call, DEMO_TABLE.rules, "default")
    assert (decision.route.value, decision.queue, decision.priority, decision.rule) == want


def test_demo_plan_numbers_match_the_readme() -> None:
    numbers = {n.dnis: (n.service, n.default_queue, n.hours is None) for n in DEMO.numbers}
    assert numbers == {
        "5550100": ("support", "support", True),
        "5550200": ("sales", "sales", False),
        "5550300": ("billing", "billing", True),
    }
    assert {q.name for q in DEMO.queues} == {
        "support",
        "sales",
        "billing",
        "collections",
        "spanish",
        "default",
    }
    assert DEMO_TABLE.number("5550200").hours.to_spec() == {
        **{day: ["08:00-20:00"] for day in ("mon", "tue", "wed", "thu", "fri")},
        "sat": ["09:00-13:00"],
    }
