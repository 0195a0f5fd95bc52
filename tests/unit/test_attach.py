"""The attach decision (cti.routing.attach): whom to believe, and what the receiving PBX
decides for a call it knows. Pure: tables of inputs and outputs, the demo plan."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cti.calldata.document import CallDocument, new_document
from cti.calls.events import CallEvent
from cti.demo.seed import demo_plan
from cti.pbx import Pbx, trunk_peer
from cti.routing.attach import (
    AttachArgs,
    AttachOutcome,
    customer_of,
    judge_claim,
    number_of_queue,
    parse_attach_args,
    receiving_pbx,
    redecide,
)
from cti.routing.model import Customer, Decision, RouteKind
from cti.routing.table import RoutingTable
from cti.timeline.summary import end_of, ordered, summarize

BILLING = "billing"
CALL_ID = "0b5e7c1e-2f4a-4c7e-9d43-5f2b1a6e8c90"
PBXES = frozenset({"a", "b"})
PLAN = RoutingTable.from_plan(demo_plan())
#: A Wednesday at noon in New York: every demo number is open.
OPEN = datetime(2026, 12, 2, 17, 0, tzinfo=UTC)
#: A Sunday at noon in New York: sales (5550200) is closed.
SUNDAY = datetime(2026, 12, 6, 17, 0, tzinfo=UTC)


def args(call_id: str | None = CALL_ID, queue: str = "billing", dropped: bool = False):
    return AttachArgs(call_id, queue, dropped)


@pytest.mark.parametrize(
    ("channel", "claimed", "outcome", "from_pbx"),
    [
        # Only an inter-PBX trunk of a PBX we follow is believed ...
        ("PJSIP/pbx-a-00000001", args(), None, "a"),
        ("PJSIP/pbx-b-0000001f", args(), None, "b"),
        # ... never the public trunk, a phone, a Local channel, or a PBX we do not follow.
        ("PJSIP/trunk-00000001", args(), AttachOutcome.UNTRUSTED, None),
        ("PJSIP/2001-00000003", args(), AttachOutcome.UNTRUSTED, None),
        ("Local/2001@agents-00000001;2", args(), AttachOutcome.UNTRUSTED, None),
        ("PJSIP/pbx-z-00000001", args(), AttachOutcome.UNTRUSTED, None),
        ("", args(), AttachOutcome.UNTRUSTED, None),
        # No header (or an empty one): nothing to believe, wherever the call came from.
        ("PJSIP/pbx-a-00000001", args(None), AttachOutcome.NO_ID, "a"),
        ("PJSIP/trunk-00000001", args(None), AttachOutcome.NO_ID, None),
        # A trusted trunk, but not the router's spelling.
        ("PJSIP/pbx-a-00000001", args("not-a-uuid"), AttachOutcome.MALFORMED, "a"),
        ("PJSIP/pbx-a-00000001", args(CALL_ID + "0"), AttachOutcome.MALFORMED, "a"),
        ("PJSIP/pbx-a-00000001", args(CALL_ID + "\n"), AttachOutcome.MALFORMED, "a"),
        ("PJSIP/pbx-a-00000001", args("x" * 4000), AttachOutcome.MALFORMED, "a"),
        ("PJSIP/pbx-a-00000001", args("{" + CALL_ID + "}"), AttachOutcome.MALFORMED, "a"),
        # The AGI parser dropped the argument for a control character.
        ("PJSIP/pbx-a-00000001", args(None, dropped=True), AttachOutcome.MALFORMED, "a"),
        ("PJSIP/trunk-00000001", args(None, dropped=True), AttachOutcome.UNTRUSTED, None),
    ],
)
def test_judge_claim(channel, claimed, outcome, from_pbx):
    claim = judge_claim(channel, claimed, PBXES)
    assert (claim.outcome, claim.from_pbx) == (outcome, from_pbx)
    assert (claim.call_id is not None) == (outcome is None)
    assert claim.reason


def test_an_upper_case_id_is_canonical_lower_case():
    claim = judge_claim("PJSIP/pbx-a-00000001", args(CALL_ID.upper()), PBXES)
    assert claim.call_id == CALL_ID


def test_a_trunk_to_the_receiving_pbx_itself_is_not_believed():
    assert judge_claim("PJSIP/pbx-a-1", args(), PBXES, receiving="a").outcome is (
        AttachOutcome.UNTRUSTED
    )
    assert judge_claim("PJSIP/pbx-a-1", args(), PBXES, receiving="b").outcome is None


def test_a_malformed_id_is_quoted_short_in_the_reason():
    claim = judge_claim("PJSIP/pbx-a-1", args("\x1b[31m" + "x" * 5000), PBXES)
    assert claim.outcome is AttachOutcome.MALFORMED
    assert "\x1b" not in claim.reason and len(claim.reason) < 200


@pytest.mark.parametrize(
    ("raw", "dropped", "expected"),
    [
        ([f"call_id={CALL_ID}", "queue=billing"], False, AttachArgs(CALL_ID, "billing")),
        ([" Call_ID = " + CALL_ID, ""], False, AttachArgs(CALL_ID, "")),
        (["call_id=", "queue=5550300"], False, AttachArgs(None, "5550300")),
        (["queue=billing"], False, AttachArgs(None, "billing")),
        (["", "queue=billing"], True, AttachArgs(None, "billing", True)),
        (["garbage", "account=1"], False, AttachArgs(None, "")),
        (["call_id=a", "call_id=b"], False, AttachArgs("a", "")),  # the first counts
        # A header that smuggles arguments in: the dialplan's own queue= (the last) counts.
        (
            [f"call_id={CALL_ID}", "queue=sales", "queue=billing"],
            False,
            AttachArgs(CALL_ID, BILLING),
        ),
        (["queue=" + "q" * 65], False, AttachArgs(None, "")),
    ],
)
def test_parse_attach_args(raw, dropped, expected):
    assert parse_attach_args(raw, dropped) == expected


def test_receiving_pbx_is_known_only_when_one_pbx_has_the_address():
    a = Pbx("a", "10.0.0.1", 5038, "cti")
    b = Pbx("b", "10.0.0.2", 5038, "cti", home=False)
    c = Pbx("c", "10.0.0.2", 5039, "cti", home=False)
    assert receiving_pbx("10.0.0.1", [a, b]) == "a"
    assert receiving_pbx("10.0.0.2", [a, b]) == "b"
    assert receiving_pbx("10.0.0.2", [a, b, c]) is None  # two PBXes on one host
    assert receiving_pbx("10.0.0.9", [a, b]) is None
    assert receiving_pbx("", [a, b]) is None


CUSTOMERS = {
    "gold": Customer(2, "A0000002", "Alan Turing", "gold", "active", "en"),
    "platinum": Customer(1, "A0000001", "Ada", "platinum", "active", "en"),
    "delinquent": Customer(5, "A0000005", "Bob", "gold", "delinquent", "en"),
    "bronze": Customer(4, "A0000004", "Cy", "bronze", "active", "en"),
}


def document(customer: Customer | None, ivr: dict[str, str] | None = None) -> CallDocument:
    """Version 1 as A's router made it (support, its own decision)."""
    decision = Decision(RouteKind.QUEUE, "support", 10, "gold", "gold", None, "support")
    return new_document(
        call_id=CALL_ID,
        created_at=OPEN,
        channel="PJSIP/trunk-00000001",
        uniqueid="1.1",
        ani="+12120000002",
        dnis="5550100",
        customer=customer,
        decision=decision,
        fail_open=None,
        ivr=ivr or {},
    )


def test_customer_of_reads_the_documents_card():
    assert customer_of(document(CUSTOMERS["gold"])) == CUSTOMERS["gold"]
    assert customer_of(document(None)) is None


def test_number_of_queue_is_the_number_whose_default_it_is():
    number = number_of_queue(PLAN, "billing")
    assert number is not None and number.dnis == "5550300"
    assert number_of_queue(PLAN, "collections") is None  # only a rule sends calls there


@pytest.mark.parametrize(
    ("who", "requested", "now", "expected"),
    [
        # A queue of the plan: the call goes there; the customer's rule gives the priority.
        ("gold", "billing", OPEN, ("queue", "billing", 10, "gold", "gold", 2, "billing")),
        ("platinum", "billing", OPEN, ("queue", BILLING, 20, "platinum", "platinum", 1, BILLING)),
        # A rule with a queue of its own: the transfer's target still wins.
        ("delinquent", "billing", OPEN, ("queue", BILLING, 5, "collections", "gold", 5, BILLING)),
        # A queue no number serves: the rules without a service condition still apply.
        ("gold", "spanish", OPEN, ("queue", "spanish", 10, "gold", "gold", 2, None)),
        # A customer the call never had: unknown, exactly as the entrance decided.
        (None, "billing", OPEN, ("queue", BILLING, 0, "unknown-caller", "unknown", None, BILLING)),
        # Not a queue: a dialled number, decided as route would for it.
        ("gold", "5550300", OPEN, ("queue", "billing", 10, "gold", "gold", 2, "billing")),
        # Neither: the global default queue, the customer kept.
        ("gold", "nowhere", OPEN, ("queue", "default", 10, "gold", "gold", 2, None)),
        ("gold", "", OPEN, ("queue", "default", 10, "gold", "gold", 2, None)),
        # The requested service is closed on this PBX: after hours, as a call dialled there.
        ("gold", "sales", SUNDAY, ("afterhours", None, 0, "closed", "gold", 2, "sales")),
    ],
)  # fmt: skip
def test_redecide(who, requested, now, expected):
    customer = CUSTOMERS[who] if who else None
    decision = redecide(
        document(customer), requested, PLAN, default_queue="default", region="US", now=now
    )
    assert (
        decision.route.value,
        decision.queue,
        decision.priority,
        decision.rule,
        decision.tier,
        decision.customer_id,
        decision.service,
    ) == expected


def test_redecide_leaves_the_entrances_ivr_answers_out():
    # At the entrance, bronze + intent=balance went to self service; a transferred call
    # has been handled by an agent since, and must not be sent back into the IVR.
    doc = document(CUSTOMERS["bronze"], {"intent": "balance"})
    decision = redecide(doc, "support", PLAN, default_queue="default", region="US", now=OPEN)
    assert (decision.route, decision.queue, decision.rule) == (RouteKind.QUEUE, "support", "bronze")


def test_redecide_without_a_plan_fails_open_to_the_default_queue():
    decision = redecide(
        document(CUSTOMERS["gold"]),
        "billing",
        RoutingTable(),
        default_queue="default",
        region="US",
        now=OPEN,
    )
    assert (decision.queue, decision.rule, decision.customer_id) == ("default", "fail-open", 2)


def test_redecide_never_touches_the_document():
    doc = document(CUSTOMERS["gold"])
    before = repr(doc)
    redecide(doc, "billing", PLAN, default_queue="default", region="US", now=OPEN)
    assert repr(doc) == before


def _event(kind: str, fingerprint: str, at: float, **kw) -> CallEvent:
    return CallEvent(kind, CALL_ID, CALL_ID, "1.1", fingerprint, at, **kw)


def test_an_attached_event_is_no_pbx_part_of_the_call():
    # A call entered on b and crossed to c (neither the home PBX); the crossing's record,
    # its asking PBX unknown, is in no namespace: it must not open a part of its own
    # that would keep the call from ending once b's and c's parts have.
    events = [
        _event("queued", "@b|queued|support|1.0", 1.0, pbx="b"),
        _event("attached", "attached|PJSIP/pbx-b-00000001|2.1", 2.0),
        _event("queued", "@c|queued|billing|3.0", 3.0, pbx="c"),
        _event("ended", "@c|ended", 9.0, pbx="c"),
        _event("ended", "@b|ended", 10.0, pbx="b"),
    ]
    ended, parts = end_of(ordered(events))
    assert ended is not None and ended.at == 10.0
    assert len(parts) == 2
    assert summarize(events).ended_at is not None


CHANNELS = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["PJSIP/pbx-a-00000001", "PJSIP/pbx-b-1", "PJSIP/trunk-1", "PJSIP/pbx-"]),
    st.text(max_size=20).map(lambda tail: "PJSIP/pbx-" + tail),
)
CLAIMS = st.one_of(
    st.text(max_size=80),
    st.uuids().map(str),
    st.tuples(st.uuids(), st.text(max_size=3)).map(lambda p: str(p[0]) + p[1]),
)


@given(channel=CHANNELS, claimed=CLAIMS)
def test_only_a_uuid_from_a_followed_pbxs_trunk_is_ever_looked_up(channel, claimed):
    claim = judge_claim(channel, AttachArgs(claimed or None, "billing"), PBXES)
    if claim.outcome is None:
        assert trunk_peer(channel) in PBXES
        assert claim.call_id == str(uuid.UUID(claimed))
    assert "\n" not in claim.reason and "\x00" not in claim.reason
