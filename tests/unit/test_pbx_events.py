"""Call events of several PBXes (cti.calls.events, cti.calls.tracker with ``pbx``), from
recorded AMI traffic, without sockets.

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
from cti.calls.effects import CallQueued
from cti.calls.events import CallEvent, call_key, fingerprint_prefix, namespace_of, to_events
from cti.calls.model import CallModel
from cti.calls.tracker import GONE, CallTracker, model_for
from cti.pbx import Pbx
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
    home = Followed(A).feed(capture(name, call_ids=call_ids))
    assert [replace(e, pbx=None) for e in home] == today(name, call_ids=call_ids)
    # The default PBX of a deployment without CTI_PBXES too: only "pbx" is new.
    single = Followed(DEFAULT).feed(capture(name, call_ids=call_ids))
    for new, old in zip(single, today(name, call_ids=call_ids), strict=True):
        assert new.as_json() == {**old.as_json(), "pbx": "default"}
        assert (new.fingerprint, new.call_key, new.recipients) == (
            old.fingerprint,
            old.call_key,
            old.recipients,
        )


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
