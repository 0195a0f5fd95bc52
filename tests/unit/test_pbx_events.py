"""Call events of several PBXes (cti.calls.events, cti.calls.tracker with ``pbx``), from
recorded AMI traffic, without sockets; and a call that crosses PBXes summarised
(cti.timeline.summary) and cut into report segments (cti.reports.segments).

Two Asterisk servers number their channels alike (two servers booted in the same second
give the same Uniqueids, Linkedids and channel names), so the worst case is replayed
here: PBX ``a`` (home) and PBX ``b`` each fed the SAME capture. Their events must never
meet on a fingerprint or a Linkedid call key (the publisher's seen-set and the
timeline's primary key), must name b's agents ``PJSIP/200x@b``, and the home PBX's
events must be exactly what a single-PBX deployment publishes today.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

import pytest

from cti.ami.protocol import Message
from cti.calls.effects import (
    AgentConnected,
    AgentLeft,
    CallEnded,
    CallQueued,
    CallTransferred,
    Effect,
    TransferKind,
)
from cti.calls.events import CallEvent, call_key, fingerprint_prefix, namespace_of, to_events
from cti.calls.model import CallModel
from cti.calls.tracker import GONE, CallTracker, model_for
from cti.pbx import Pbx
from cti.reports.segments import derive
from cti.screenpop.access import parse_call_key
from cti.timeline.summary import end_of, ordered, summarize
from tests.unit.ami_replay import fixture_names, load, parse

NOW = 1_800_000_000.0
A = Pbx(name="a", host="10.0.0.1", port=5038, username="cti", home=True)
B = Pbx(name="b", host="10.0.0.2", port=5038, username="cti", home=False)
DEFAULT = Pbx(name="default", host="127.0.0.1", port=5038, username="cti")
_CALL_ID = re.compile(rb"(ChanVariable: CTI_CALL_ID=)[0-9a-f-]+")


class Followed:
    """One PBX's model and tracker, wired as the composition wires them, its events
    collected in the order handed over."""

    def __init__(self, pbx: Pbx | None, model: CallModel | None = None) -> None:
        self.events: list[CallEvent] = []
        self.tracker = CallTracker(
            model if model is not None else model_for(pbx),
            handover=self.events.extend,
            clock=lambda: NOW,
            pbx=pbx,
        )

    def feed(self, messages: Sequence[Message]) -> list[CallEvent]:
        for msg in messages:
            self.tracker.apply(msg)
        return self.events


def capture(name: str, *, call_ids: bool = True) -> list[Message]:
    raw = load(name)
    if not call_ids:  # calls that never went through the route: keyed by Linkedid
        raw = _CALL_ID.sub(rb"\1", raw)
    return parse(raw)


def today(name: str, *, call_ids: bool = True) -> list[CallEvent]:
    """What the single-PBX tracker (no PBX named) makes of the capture."""
    return Followed(None, CallModel()).feed(capture(name, call_ids=call_ids))


@pytest.mark.parametrize("call_ids", [True, False], ids=["call-ids", "linkedids"])
@pytest.mark.parametrize("name", fixture_names())
def test_two_pbxes_fed_the_same_capture_never_collide(name: str, call_ids: bool) -> None:
    on_a = Followed(A).feed(capture(name, call_ids=call_ids))
    on_b = Followed(B).feed(capture(name, call_ids=call_ids))
    assert on_a and len(on_a) == len(on_b)

    # The publisher's seen-set and the timeline's key: (call_key, fingerprint).
    keys_a = {(e.call_key, e.fingerprint) for e in on_a}
    keys_b = {(e.call_key, e.fingerprint) for e in on_b}
    assert len(keys_a) == len(on_a) and len(keys_b) == len(on_b)
    assert not keys_a & keys_b
    assert not {e.fingerprint for e in on_a} & {e.fingerprint for e in on_b}
    assert all(e.fingerprint.startswith("@b|") for e in on_b)
    assert all(namespace_of(e.fingerprint) == "b" for e in on_b)
    assert all(namespace_of(e.fingerprint) is None for e in on_a)
    # A call with a call id keeps it on every PBX (a call that crosses PBXes is one
    # call); a Linkedid key is the PBX's own.
    linkedid_a = {e.call_key for e in on_a if not e.call_id}
    linkedid_b = {e.call_key for e in on_b if not e.call_id}
    assert not linkedid_a & linkedid_b
    assert all(k.startswith("L:") and k.endswith("@b") for k in linkedid_b)
    if not call_ids:
        assert linkedid_a and linkedid_b
    assert {e.call_key for e in on_a if e.call_id} == {e.call_key for e in on_b if e.call_id}

    assert {e.pbx for e in on_a} == {"a"} and {e.pbx for e in on_b} == {"b"}
    assert all(e.as_json()["pbx"] == e.pbx for e in on_a + on_b)
    agents_a = {e.agent for e in on_a if e.agent}
    agents_b = {e.agent for e in on_b if e.agent}
    assert agents_a and all(re.fullmatch(r"PJSIP/20\d\d", agent) for agent in agents_a)
    assert agents_b == {f"{agent}@b" for agent in agents_a}
    assert {r for e in on_b for r in e.recipients} == {f"{r}@b" for e in on_a for r in e.recipients}


@pytest.mark.parametrize("call_ids", [True, False], ids=["call-ids", "linkedids"])
@pytest.mark.parametrize("name", fixture_names())
def test_the_home_pbx_publishes_what_one_pbx_publishes_today(name: str, call_ids: bool) -> None:
    before = today(name, call_ids=call_ids)
    # The default PBX of a deployment without CTI_PBXES: only "pbx" is new.
    single = Followed(DEFAULT).feed(capture(name, call_ids=call_ids))
    assert [replace(e, pbx=None) for e in single] == before
    assert [e.as_json() for e in single] == [{**e.as_json(), "pbx": "default"} for e in before]
    # The home PBX among named ones: the same events, to the same agents; only its
    # ``ended`` does not also go to the agents the call had on other PBXes.
    home = Followed(A).feed(capture(name, call_ids=call_ids))
    assert [
        replace(e, pbx=None, to_call_agents=e.kind == "ended" or e.to_call_agents) for e in home
    ] == before
    assert [(e.kind, e.to_call_agents) for e in home if e.kind == "ended"] == [
        ("ended", False)
    ] * len([e for e in before if e.kind == "ended"])


def test_catch_up_events_after_a_reconnect_carry_their_pbx() -> None:
    """Calls that vanished while b's AMI was away end with b's namespace and agents."""
    messages = capture("blind_transfer_ami", call_ids=False)
    half = len(messages) // 2
    for pbx in (A, B):
        followed = Followed(pbx)
        followed.feed(messages[:half])
        live = len(followed.events)
        followed.tracker.reset()
        followed.tracker.connected(True)  # the snapshot says: no call is up any more
        caught_up = followed.events[live:]
        (ended,) = [e for e in caught_up if e.kind == "ended"]
        assert ended.data["cause_txt"] == GONE and ended.pbx == pbx.name
        assert ended.fingerprint == fingerprint_prefix(pbx) + "ended"
        assert ended.call_key == call_key(None, ended.linkedid, pbx)
        assert ended.recipients and all(r.endswith("@b") == (pbx is B) for r in ended.recipients)


def test_fingerprints_and_keys_of_the_home_pbx_are_unchanged() -> None:
    model = CallModel()
    effects = [e for msg in capture("answered_call", call_ids=False) for e in model.apply(msg)]
    (effect,) = [e for e in effects if isinstance(e, CallQueued)]
    (plain,) = to_events(effect, NOW)
    (home,) = to_events(effect, NOW, A)
    (other,) = to_events(effect, NOW, B)
    assert (home.fingerprint, home.call_key) == (plain.fingerprint, plain.call_key)
    assert plain.call_key == f"L:{effect.linkedid}" and plain.pbx is None
    assert other.fingerprint == "@b|" + plain.fingerprint
    assert other.call_key == f"L:{effect.linkedid}@b"


# -- a call on two PBXes: its summary and segments -------------------------------------------
def _part(pbx: Pbx, *effects: Effect) -> list[CallEvent]:
    return [event for effect in effects for event in to_events(effect, NOW, pbx)]


def _crossing_call() -> tuple[list[CallEvent], list[CallEvent]]:
    """Alice on a answers, consults Alice on b (same channel name on both servers),
    transfers; a's part ends at +90, b's at +95."""
    ids = {"call_id": "c0ffee00-0000-4000-8000-000000000001", "linkedid": "1.1"}
    channel = "PJSIP/2001-00000001"

    def connected(t: float, agent: str) -> AgentConnected:
        return AgentConnected(
            **ids, at=NOW + t, agent=agent, member_name=None, channel=channel, queue="sales"
        )

    def ended(t: float, agent: str) -> CallEnded:
        return CallEnded(
            **ids, at=NOW + t, cause="16", cause_txt="Normal Clearing", abandoned=False,
            agents=(agent,),
        )  # fmt: skip

    on_a = _part(
        A,
        CallQueued(**ids, at=NOW, queue="sales", position=1, priority=10),
        connected(5, "PJSIP/2001"),
        CallTransferred(
            **ids, at=NOW + 30, kind=TransferKind.ATTENDED, from_agent="PJSIP/2001", to="2001"
        ),
        AgentLeft(**ids, at=NOW + 30, agent="PJSIP/2001", channel=channel),
        ended(90, "PJSIP/2001"),
    )
    on_b = _part(
        B,
        CallQueued(**ids, at=NOW + 20, queue="sales", position=1, priority=10),
        connected(25, "PJSIP/2001@b"),
        ended(95, "PJSIP/2001@b"),
    )
    return on_a, on_b


def test_a_call_on_two_pbxes_ends_with_its_last_part_in_any_order() -> None:
    on_a, on_b = _crossing_call()
    not_yet = summarize([*on_a, *on_b[:-1]])
    assert not_yet.ended_at is None and end_of(ordered([*on_a, *on_b[:-1]]))[0] is None
    for events in ([*on_a, *on_b], [*reversed(on_b), *on_a], [*on_b, *on_a, *on_a]):
        summary = summarize(events)
        assert summary.ended_at is not None and summary.ended_at.timestamp() == NOW + 95
        assert (summary.talk_s, summary.transfers) == (90.0, 1)
        assert summary.agents == ("PJSIP/2001", "PJSIP/2001@b")


def test_legs_and_visits_of_two_pbxes_are_not_merged_by_channel_name() -> None:
    on_a, on_b = _crossing_call()
    segments = derive([*on_b, *on_a])
    assert segments.ended == NOW + 95
    assert [(leg.pbx, leg.agent, leg.how, leg.talk_s) for leg in segments.legs] == [
        ("a", "PJSIP/2001", "attended", 25.0),
        ("b", "PJSIP/2001@b", "hangup", 70.0),
    ]
    assert [(v.pbx, v.queue, v.outcome, v.agent) for v in segments.visits] == [
        ("a", "sales", "answered", "PJSIP/2001"),
        ("b", "sales", "answered", "PJSIP/2001@b"),
    ]
    assert segments.journey is not None and segments.journey.pbx == "a"


def test_the_sidebar_accepts_a_linkedid_key_of_another_pbx() -> None:
    assert parse_call_key(call_key(None, "1795410950.10", B)) == "L:1795410950.10@b"
    assert parse_call_key("L:1795410950.10") == "L:1795410950.10"
    assert parse_call_key("L:1795410950.10@B") is None
    assert parse_call_key("L:1795410950.10@b@c") is None
