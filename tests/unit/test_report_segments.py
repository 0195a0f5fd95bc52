"""Segments from hand-built timelines: queue visits, agent legs, the journey."""

from __future__ import annotations

import pytest

from cti.calls.effects import (
    AgentConnected,
    AgentLeft,
    AgentRingCancelled,
    AgentRinging,
    AgentRingNoAnswer,
    CallAbandoned,
    CallEnded,
    CallHeld,
    CallQueued,
    CallTransferred,
    CallUnheld,
    ConsultStarted,
    Effect,
    TransferKind,
)
from cti.calls.events import CallEvent, to_events
from cti.reports.segments import derive, with_wrapup

T0 = 1_700_000_000.0
CALL = {"call_id": "3f1c9a52-5d7e-4a3b-9c1d-2b7f8e6a4c10", "linkedid": "1700000000.1"}
ALICE, BOB, CAROL, DAVE = "PJSIP/2001", "PJSIP/2002", "PJSIP/2003", "PJSIP/2004"
LEG = {a: f"{a}-0000000{i}" for i, a in enumerate((ALICE, BOB, CAROL, DAVE))}


def events(*effects: Effect) -> list[CallEvent]:
    return [event for effect in effects for event in to_events(effect, now=T0 + 9_999)]


def queued(t: float, queue: str = "sales") -> CallQueued:
    return CallQueued(**CALL, at=T0 + t, queue=queue, position=1, priority=10)


def ringing(t: float, agent: str, queue: str | None = "sales") -> AgentRinging:
    return AgentRinging(
        **CALL, at=T0 + t, agent=agent, member_name=None, channel=LEG[agent], queue=queue
    )


def no_answer(t: float, agent: str) -> AgentRingNoAnswer:
    return AgentRingNoAnswer(
        **CALL, at=T0 + t, agent=agent, member_name=None, channel=LEG[agent], queue="sales",
        ring_time_ms=None,
    )  # fmt: skip


def connected(t: float, agent: str, queue: str | None = "sales") -> AgentConnected:
    return AgentConnected(
        **CALL, at=T0 + t, agent=agent, member_name=None, channel=LEG[agent], queue=queue, via=()
    )


def left(t: float, agent: str) -> AgentLeft:
    return AgentLeft(**CALL, at=T0 + t, agent=agent, channel=LEG[agent])


def ended(t: float, *agents: str, abandoned: bool = False) -> CallEnded:
    return CallEnded(
        **CALL, at=T0 + t, cause="16", cause_txt="Normal Clearing", abandoned=abandoned,
        agents=agents,
    )  # fmt: skip


def abandoned(t: float, queue: str = "sales") -> CallAbandoned:
    return CallAbandoned(
        **CALL, at=T0 + t, queue=queue, position=1, original_position=1, hold_time_s=int(t)
    )


def blind(t: float, agent: str, to: str) -> CallTransferred:
    return CallTransferred(
        **CALL, at=T0 + t, kind=TransferKind.BLIND, from_agent=agent, to=to, context="agents"
    )


def attended(t: float, agent: str, to: str) -> CallTransferred:
    return CallTransferred(
        **CALL, at=T0 + t, kind=TransferKind.ATTENDED, from_agent=agent, to=to,
        to_channel=LEG[to],
    )  # fmt: skip


def test_an_answered_call_one_visit_one_leg():
    s = derive(
        events(queued(2), ringing(3, ALICE), connected(7, ALICE), left(67, ALICE), ended(67, ALICE))
    )
    (visit,) = s.visits
    assert (visit.queue, visit.outcome, visit.wait_s, visit.agent) == (
        "sales",
        "answered",
        5.0,
        ALICE,
    )
    assert (visit.talk_s, visit.position) == (60.0, 1)
    (leg,) = s.legs
    assert (leg.rang, leg.answered, leg.ended) == (T0 + 3, T0 + 7, T0 + 67)
    assert (leg.talk_s, leg.hold_s, leg.how, leg.queue) == (60.0, 0.0, "hangup", "sales")
    assert s.journey is not None
    assert (s.journey.outcome, s.journey.wait_s, s.journey.talk_s) == ("answered", 5.0, 60.0)


def test_a_call_that_rang_three_agents_before_one_answered():
    s = derive(
        events(
            queued(0),
            ringing(1, ALICE),
            no_answer(16, ALICE),
            ringing(17, BOB),
            no_answer(32, BOB),
            ringing(33, CAROL),
            connected(40, CAROL),
            left(100, CAROL),
            ended(100, CAROL),
        )
    )
    assert [(leg.agent, leg.how) for leg in s.legs] == [
        (ALICE, "not_answered"),
        (BOB, "not_answered"),
        (CAROL, "hangup"),
    ]
    assert [leg.ended - T0 for leg in s.legs] == [16, 32, 100]
    (visit,) = s.visits
    assert (visit.outcome, visit.wait_s, visit.agent) == ("answered", 40.0, CAROL)


def test_an_abandoned_call():
    s = derive(
        events(
            queued(0),
            ringing(1, ALICE),
            AgentRingCancelled(
                **CALL, at=T0 + 30, agent=ALICE, channel=LEG[ALICE], reason="CANCEL"
            ),
            abandoned(30),
            ended(30, abandoned=True),
        )
    )
    (visit,) = s.visits
    assert (visit.outcome, visit.wait_s) == ("abandoned", 30.0)
    assert [leg.how for leg in s.legs] == ["not_answered"]
    assert s.journey is not None and s.journey.outcome == "abandoned"


def test_the_end_says_abandoned_without_the_queue_event():
    (visit,) = derive(events(queued(0), ended(12, abandoned=True))).visits
    assert (visit.outcome, visit.wait_s) == ("abandoned", 12.0)


def test_a_queue_that_lets_the_caller_go_to_a_message_times_out():
    (visit,) = derive(events(queued(0), ended(300))).visits
    assert (visit.outcome, visit.wait_s) == ("timed_out", 300.0)


def test_a_call_transferred_from_queue_to_queue_is_offered_to_each_and_one_call():
    s = derive(
        events(
            queued(0),
            connected(10, ALICE),
            blind(40, ALICE, "600"),
            left(40, ALICE),
            queued(41, "billing"),
            ringing(42, BOB, "billing"),
            connected(50, BOB, "billing"),
            left(110, BOB),
            ended(110, ALICE, BOB),
        )
    )
    assert [(v.queue, v.outcome, v.wait_s, v.agent) for v in s.visits] == [
        ("sales", "answered", 10.0, ALICE),
        ("billing", "answered", 9.0, BOB),
    ]
    assert [v.transferred for v in s.visits] == [True, False]
    alice, bob = s.legs
    assert (alice.talk_s, alice.how, alice.to) == (30.0, "blind", "600")
    assert (bob.talk_s, bob.how, bob.queue) == (60.0, "hangup", "billing")
    j = s.journey
    assert j is not None
    assert (j.queue, j.outcome, j.wait_s, j.talk_s, j.transfers) == (
        "sales",
        "answered",
        10.0,
        90.0,
        1,
    )


def test_a_queue_overflowing_into_another_is_sent_elsewhere():
    s = derive(
        events(queued(0), queued(60, "overflow"), connected(70, BOB, "overflow"), ended(100, BOB))
    )
    assert [(v.queue, v.outcome, v.wait_s) for v in s.visits] == [
        ("sales", "sent_elsewhere", 60.0),
        ("overflow", "answered", 10.0),
    ]
    assert s.journey is not None and (s.journey.outcome, s.journey.wait_s) == ("answered", 70.0)


def test_an_attended_transfer_to_an_agent_outside_any_queue_splits_the_talk():
    s = derive(
        events(
            queued(0),
            ringing(1, ALICE),
            connected(5, ALICE),
            CallHeld(**CALL, at=T0 + 30, by=ALICE, channel=LEG[ALICE]),
            ConsultStarted(
                **CALL, at=T0 + 31, from_agent=ALICE, channel="Local/2004@agents-1;1", to="2004",
                consult_linkedid=None,
            ),
            connected(40, DAVE, None),
            attended(40, ALICE, DAVE),
            left(40.5, ALICE),
            left(100, DAVE),
            ended(100, ALICE, DAVE),
        )
    )  # fmt: skip
    alice, dave = s.legs
    assert (alice.talk_s, alice.hold_s, alice.how, alice.to, alice.ended) == (
        25.0,
        10.0,
        "attended",
        DAVE,
        T0 + 40,
    )
    assert (dave.talk_s, dave.queue, dave.rang, dave.how) == (60.0, None, None, "hangup")
    (visit,) = s.visits
    assert (visit.talk_s, visit.hold_s, visit.transferred) == (25.0, 10.0, True)
    assert s.journey is not None
    assert (s.journey.talk_s, s.journey.hold_s, s.journey.transfers) == (85.0, 10.0, 1)


def test_hold_and_unhold_and_the_end_while_held():
    s = derive(
        events(
            queued(0),
            connected(5, ALICE),
            CallHeld(**CALL, at=T0 + 10, by=ALICE, channel=LEG[ALICE]),
            CallUnheld(**CALL, at=T0 + 20, by=ALICE, channel=LEG[ALICE]),
            CallHeld(**CALL, at=T0 + 50, by=ALICE, channel=LEG[ALICE]),
            ended(70, ALICE),
            left(71, ALICE),
        )
    )
    (leg,) = s.legs
    assert (leg.talk_s, leg.hold_s, leg.ended) == (35.0, 30.0, T0 + 70)


def test_a_direct_call_has_legs_and_no_journey():
    s = derive(
        events(ringing(0, ALICE, None), connected(3, ALICE, None), left(33, ALICE), ended(33))
    )
    assert s.visits == () and s.journey is None
    assert [(leg.queue, leg.talk_s) for leg in s.legs] == [(None, 30.0)]


def test_duplicates_and_any_order_give_the_same_segments():
    timeline = events(queued(0), ringing(1, ALICE), connected(4, ALICE), left(20, ALICE), ended(20))
    expected = derive(timeline)
    assert derive([*reversed(timeline), *timeline]) == expected


def test_wrapup_plugs_into_legs_and_journey():
    s = derive(events(queued(0), connected(4, ALICE), left(20, ALICE), ended(20)))
    s2 = with_wrapup(s, {LEG[ALICE]: 12.5})
    assert s2.legs[0].wrapup_s == 12.5
    assert s2.journey is not None and s2.journey.wrapup_s == pytest.approx(12.5)
