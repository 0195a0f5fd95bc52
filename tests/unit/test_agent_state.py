"""The agent state machine (cti.agents.state): built from AMI messages and the call
model's effects, replayed from recorded Asterisk traffic (tests/fixtures/ami) and from
hand-made messages for the roster and pauses."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from cti.agents.state import (
    AGENT_EVENTS,
    RANK,
    WRAPUP_REASON,
    AgentBoard,
    AgentChanged,
    AgentState,
    WrapUp,
    status_to_json,
)
from cti.ami.protocol import Message, MessageKind
from cti.calls.effects import AgentConnected, AgentLeft, AgentRinging, CallHeld, CallUnheld
from cti.calls.model import AMI_EVENTS, CallModel, Source
from tests.unit import ami_replay

S = AgentState
A, B, C = "PJSIP/2001", "PJSIP/2002", "PJSIP/2003"


def event(name: str, **fields: str) -> Message:
    return Message(MessageKind.EVENT, name, {k.lower(): v for k, v in fields.items()})


def member(name: str = "QueueMemberStatus", queue: str = "support", **fields: str) -> Message:
    base = {"Queue": queue, "Interface": A, "StateInterface": A, "Status": "1", "Paused": "0"}
    return event(name, **{**base, **fields})


def board(wrapup: dict[str, int] | None = None, now: float = 1000.0) -> AgentBoard:
    table = wrapup or {}
    return AgentBoard(wrapup_s=lambda q: table.get(q or "", 0), clock=lambda: now)


def states(changes: Iterable[AgentChanged]) -> list[tuple[str, AgentState]]:
    return [(c.status.agent, c.status.state) for c in changes]


def test_the_rank_is_the_documented_order() -> None:
    order = sorted(AgentState, key=RANK.__getitem__)
    assert order == [
        S.LOGGED_OUT,
        S.AVAILABLE,
        S.PAUSED,
        S.WRAP_UP,
        S.RINGING,
        S.ON_HOLD,
        S.ON_CALL,
    ]


def test_every_event_the_board_reads_reaches_it() -> None:
    for name in AGENT_EVENTS:
        assert name in AMI_EVENTS, name
        assert AMI_EVENTS[name].source in (Source.LIVE, Source.REPLY), name


def test_member_added_paused_with_reason_and_removed() -> None:
    b = board()
    changes = b.apply(member("QueueMemberAdded", Timestamp="10.5"))
    assert states(changes) == [(A, S.AVAILABLE)]
    assert changes[0].previous is None and changes[0].at == 10.5
    changes = b.apply(member("QueueMemberPause", Paused="1", PausedReason="lunch", Timestamp="11"))
    status = changes[0].status
    assert (status.state, status.reason, status.since) == (S.PAUSED, "lunch", 11.0)
    assert changes[0].previous is S.AVAILABLE
    only = status.memberships[0]
    assert (only.queue, only.state, only.reason) == ("support", S.PAUSED, "lunch")
    assert only.paused
    # A second queue, not paused: paused still beats available overall.
    b.apply(member("QueueMemberAdded", queue="sales"))
    status = b.snapshot()[A]
    assert status.state is S.PAUSED
    assert [m.state for m in status.memberships] == [S.AVAILABLE, S.PAUSED]
    b.apply(member("QueueMemberRemoved", queue="support"))
    b.apply(member("QueueMemberRemoved", queue="sales"))
    assert b.snapshot()[A].state is S.LOGGED_OUT
    assert b.snapshot()[A].memberships == ()


def test_nothing_changes_nothing_is_said() -> None:
    b = board()
    b.apply(member())
    assert b.apply(member()) == []
    assert b.apply(event("Newchannel", Channel="PJSIP/2001-1")) == []


def test_unreachable_device_is_logged_out() -> None:
    b = board()
    b.apply(member(Status="5"))
    assert b.snapshot()[A].state is S.LOGGED_OUT
    b.apply(member(Status="1"))
    assert b.snapshot()[A].state is S.AVAILABLE
    b.apply(event("DeviceStateChange", Device=A, State="UNAVAILABLE"))
    assert b.snapshot()[A].state is S.LOGGED_OUT
    b.apply(event("DeviceStateChange", Device=A, State="INUSE"))
    assert b.snapshot()[A].state is S.ON_CALL  # a call no queue sees (outbound)
    b.apply(event("DeviceStateChange", Device=A, State="NOT_INUSE"))
    assert b.snapshot()[A].state is S.AVAILABLE


def _call(b: AgentBoard, at: float = 100.0) -> None:
    common = {"call_id": "c1", "linkedid": "L1", "channel": "PJSIP/2001-1"}
    b.apply_effects(
        [
            AgentRinging(at=at, agent=A, member_name=None, queue="support", **common),
            AgentConnected(at=at + 1, agent=A, member_name=None, queue="support", **common),
        ]
    )


def test_wrap_up_after_a_queue_call_and_its_end() -> None:
    b = board({"support": 30})
    b.apply(member())
    _call(b)
    assert b.snapshot()[A].state is S.ON_CALL and b.snapshot()[A].call_id == "c1"
    changes = b.apply_effects(
        [AgentLeft(call_id="c1", linkedid="L1", at=110.0, agent=A, channel="PJSIP/2001-1")]
    )
    status = changes[0].status
    assert (status.state, status.reason, status.wrapup_until) == (S.WRAP_UP, WRAPUP_REASON, 140.0)
    assert (status.call_id, status.queue, status.since) == ("c1", "support", 110.0)
    assert b.wrap_up(A) == WrapUp(140.0, "c1", "support")
    assert b.due(139.9) == [] and b.due(140.0) == [A]
    # cti pauses the member for wrap-up: still wrap_up, not paused
    b.apply(member("QueueMemberPause", Paused="1", PausedReason=WRAPUP_REASON))
    assert b.snapshot()[A].state is S.WRAP_UP
    assert b.snapshot()[A].memberships[0].reason == WRAPUP_REASON
    changes = b.end_wrap_up(A, 120.0)
    # Asterisk still says paused for wrap-up until cti's unpause arrives
    assert states(changes) == [(A, S.WRAP_UP)] and changes[0].status.wrapup_until is None
    b.apply(member("QueueMemberPause", Paused="0"))
    assert b.snapshot()[A].state is S.AVAILABLE


def test_no_wrap_up_for_a_queue_without_one() -> None:
    b = board({"support": 0})
    b.apply(member())
    _call(b)
    b.apply_effects([AgentLeft(call_id="c1", linkedid="L1", at=110.0, agent=A, channel="x")])
    assert b.snapshot()[A].state is S.AVAILABLE


def test_paused_by_choice_during_wrap_up_stays_paused_after() -> None:
    b = board({"support": 30})
    b.apply(member())
    _call(b)
    b.apply_effects([AgentLeft(call_id="c1", linkedid="L1", at=110.0, agent=A, channel="x")])
    b.apply(member("QueueMemberPause", Paused="1", PausedReason="lunch"))
    assert b.snapshot()[A].state is S.WRAP_UP  # wrap-up beats paused
    b.end_wrap_up(A)
    assert (b.snapshot()[A].state, b.snapshot()[A].reason) == (S.PAUSED, "lunch")


def test_hold_and_unhold() -> None:
    b = board()
    _call(b)
    b.apply_effects([CallHeld(call_id="c1", linkedid="L1", at=105.0, by=A, channel="x")])
    assert b.snapshot()[A].state is S.ON_HOLD
    b.apply_effects([CallUnheld(call_id="c1", linkedid="L1", at=106.0, by=A, channel="x")])
    assert b.snapshot()[A].state is S.ON_CALL


def test_restore_wrap_up_from_the_store() -> None:
    b = board()
    b.apply(member())
    changes = b.restore_wrap_up(A, WrapUp(2000.0, "c9", "support"))
    assert changes[0].status.state is S.WRAP_UP and changes[0].status.wrapup_until == 2000.0
    assert b.restore_wrap_up(A, WrapUp(2000.0, "c9", "support")) == []
    b.restore_wrap_up(A, None)
    assert b.snapshot()[A].state is S.AVAILABLE


def test_resync_forgets_memberships_it_did_not_list() -> None:
    b = board()
    b.apply(member(queue="support"))
    b.apply(member(queue="sales"))
    b.reset()
    b.apply(
        event("QueueMember", Queue="sales", Name="Agent", Location=A, StateInterface=A, Status="1")
    )
    changes = b.resynced()
    assert [m.queue for m in changes[0].status.memberships] == ["sales"]
    assert b.resynced() == []


def test_status_to_json() -> None:
    b = board()
    b.apply(member(Paused="1", PausedReason="break", Timestamp="5"))
    assert status_to_json(b.snapshot()[A]) == {
        "agent": A,
        "pbx": "default",
        "state": "paused",
        "reason": "break",
        "since": 5.0,
        "call_id": None,
        "queue": None,
        "wrapup_until": None,
        "memberships": [
            {"queue": "support", "state": "paused", "reason": "break", "since": 5.0, "paused": True}
        ],
    }


# -- recorded Asterisk traffic -------------------------------------------------------------
def replay(name: str, wrapup: dict[str, int]) -> tuple[AgentBoard, list[AgentChanged]]:
    """The capture through the call model and the board, as the daemon feeds them."""
    b = board(wrapup)
    return b, feed(name, CallModel(), b)


def feed(name: str, model: CallModel, b: AgentBoard) -> list[AgentChanged]:
    """Each message of the capture to the model, its effects and then itself to the board."""
    changes: list[AgentChanged] = []
    for msg in ami_replay.parse(ami_replay.load(name)):
        changes += b.apply_effects(model.apply(msg))
        changes += b.apply(msg)
    return changes


def history(changes: list[AgentChanged], agent: str) -> list[AgentState]:
    out: list[AgentState] = []
    for change in changes:
        if change.status.agent == agent and (not out or out[-1] is not change.status.state):
            out.append(change.status.state)
    return out


def test_answered_call_ends_in_wrap_up() -> None:
    b, changes = replay("answered_call", {"support": 30})
    assert history(changes, A) == [S.RINGING, S.ON_CALL, S.WRAP_UP]
    status = b.snapshot()[A]
    assert status.queue == "support" and status.call_id
    assert status.wrapup_until == pytest.approx(status.since + 30)


def test_ring_no_answer_returns_to_available() -> None:
    b, changes = replay("ring_no_answer", {"support": 0})
    assert history(changes, A) == [S.RINGING, S.AVAILABLE]
    assert b.snapshot()[A].state is S.AVAILABLE
    assert history(changes, "PJSIP/2002") == [S.RINGING, S.ON_CALL, S.AVAILABLE]


def test_wrap_up_across_an_attended_transfer() -> None:
    """The transferer enters wrap-up when the transfer completes; the target, who
    took over the queue call, enters it when the caller hangs up."""
    b, changes = replay("attended_transfer_phone", {"support": 30})
    assert history(changes, A) == [S.RINGING, S.ON_CALL, S.ON_HOLD, S.ON_CALL, S.WRAP_UP]
    assert history(changes, "PJSIP/2003") == [S.RINGING, S.ON_CALL, S.WRAP_UP]
    target = b.snapshot()["PJSIP/2003"]
    assert target.state is S.WRAP_UP and target.queue == "support"
    assert b.snapshot()[A].call_id == target.call_id


# -- the news of a change (cti.agents.news) --------------------------------------------------
def test_a_change_closes_the_intervals_it_ends() -> None:
    from cti.agents.news import AGENT_EVENT, agent_event, ended_intervals, intervals_of

    b = board({"support": 30})
    b.apply(member(Timestamp="50"))
    _call(b)  # ringing at 100, on_call at 101
    [change] = b.apply_effects(
        [AgentLeft(call_id="c1", linkedid="L1", at=110.0, agent=A, channel="PJSIP/2001-1")]
    )
    intervals = ended_intervals(change)
    overall = [i for i in intervals if i.queue is None]
    assert [(i.state, i.started_at, i.ended_at, i.call_id) for i in overall] == [
        ("on_call", 101.0, 110.0, "c1")
    ]
    assert [(i.queue, i.state) for i in intervals if i.queue] == [("support", "on_call")]
    event = agent_event(change)
    assert (event.kind, event.call_key, event.agent, event.recipients) == (
        AGENT_EVENT,
        "agent:PJSIP/2001",
        A,
        (A,),
    )
    wire = event.as_json()
    assert (wire["state"], wire["previous"], wire["wrapup_until"]) == ("wrap_up", "on_call", 140.0)
    assert intervals_of(event) == intervals
    # The same change seen by another instance has the same fingerprint.
    assert agent_event(change).fingerprint == event.fingerprint


def test_a_membership_that_goes_away_closes_its_interval() -> None:
    from cti.agents.news import ended_intervals

    b = board()
    b.apply(member(Timestamp="10"))
    [change] = b.apply(member("QueueMemberRemoved", Timestamp="20"))
    assert [(i.queue, i.state, i.started_at, i.ended_at) for i in ended_intervals(change)] == [
        (None, "available", 10.0, 20.0),
        ("support", "available", 10.0, 20.0),
    ]


def test_pause_with_reason_capture() -> None:
    """2001 paused for lunch in every queue: the call rings 2002; 2001 unpaused after."""
    _, changes = replay("pause_with_reason", {"support": 0})
    a_states = [(c.status.state, c.status.reason) for c in changes if c.status.agent == A]
    assert (S.PAUSED, "lunch") in a_states
    assert a_states[-1] == (S.AVAILABLE, None)
    lunch = [c.status for c in changes if c.status.agent == A and c.status.reason == "lunch"]
    assert {"default", "support"} in [{m.queue for m in s.memberships if m.paused} for s in lunch]
    assert S.RINGING not in history(changes, A)
    assert history(changes, B) == [S.RINGING, S.ON_CALL, S.AVAILABLE]


def test_member_added_and_removed_capture() -> None:
    """2004 added to support takes the call, then is removed from support."""
    b, changes = replay("member_added_removed", {"support": 0})
    d = "PJSIP/2004"
    queues = [{m.queue for m in c.status.memberships} for c in changes if c.status.agent == d]
    assert "support" in queues[0]
    assert S.ON_CALL in history(changes, d)
    assert "support" not in {m.queue for m in b.snapshot()[d].memberships}
    paused = [c.status for c in changes if c.status.agent == "PJSIP/2003"]
    assert (paused[0].state, paused[0].reason) == (S.PAUSED, "recording")
    assert b.snapshot()["PJSIP/2003"].state is S.AVAILABLE


def test_wrap_up_across_an_ami_attended_transfer() -> None:
    """Atxfer from AMI, completed by hanging the transferer's leg up: the transferer
    wraps up from the transfer, the target from the caller's hang-up."""
    b, changes = replay("attended_transfer_ami", {"support": 30})
    assert history(changes, A)[-1] is S.WRAP_UP
    assert history(changes, C)[-1] is S.WRAP_UP
    assert b.snapshot()[A].wrapup_until < b.snapshot()[C].wrapup_until
