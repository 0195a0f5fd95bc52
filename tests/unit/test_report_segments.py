"""Segments from hand-built timelines: queue visits, agent legs, the journey."""

from __future__ import annotations

import pytest

from cti.calls.effects import (
    AgentRingCancelled,
    CallHeld,
    CallLeftQueue,
    CallUnheld,
    ConsultStarted,
)
from cti.calls.events import to_events
from cti.reports.segments import derive, with_wrapup
from tests.unit.call_effects import (
    ALICE,
    BOB,
    CALL,
    CAROL,
    DAVE,
    LEG,
    T0,
    abandoned,
    attended,
    blind,
    connected,
    ended,
    events,
    left,
    no_answer,
    queued,
    ringing,
)


def queue_left(t: float, queue: str = "sales", reason: str = "timeout") -> CallLeftQueue:
    return CallLeftQueue(**CALL, at=T0 + t, queue=queue, reason=reason)


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


def test_a_timed_out_visit_waits_until_the_caller_leaves_the_queue_not_to_the_end():
    (visit,) = derive(events(queued(0), ringing(1, ALICE), queue_left(60), ended(75))).visits
    assert (visit.outcome, visit.wait_s) == ("timed_out", 60.0)


def test_a_timeout_that_overflows_into_another_queue_is_timed_out_not_sent_elsewhere():
    s = derive(
        events(
            queued(0),
            queue_left(20),
            queued(20.2, "overflow"),
            connected(26, BOB, "overflow"),
            left(90, BOB),
            ended(90, BOB),
        )
    )
    assert [(v.queue, v.outcome, round(v.wait_s, 1)) for v in s.visits] == [
        ("sales", "timed_out", 20.0),
        ("overflow", "answered", 5.8),
    ]
    j = s.journey
    assert j is not None and (j.queue, j.outcome, j.wait_s) == ("sales", "answered", 26.0)


def test_a_timeout_then_a_direct_dial_is_timed_out():
    s = derive(events(queued(0), queue_left(20), connected(25, BOB, None), ended(50, BOB)))
    assert [(v.outcome, v.wait_s) for v in s.visits] == [("timed_out", 20.0)]


def test_leaving_the_queue_answered_or_abandoned_keeps_those_outcomes():
    answered = derive(
        events(queued(0), queue_left(10, reason="answered"), connected(10.001, ALICE), ended(40))
    )
    assert [(v.outcome, v.agent) for v in answered.visits] == [("answered", ALICE)]
    # said "timeout", yet the queue's own answer follows: answered all the same
    late = derive(events(queued(0), queue_left(10), connected(10.001, ALICE), ended(40)))
    assert [v.outcome for v in late.visits] == ["answered"]
    # QueueCallerAbandon and QueueCallerLeave in the same instant, either order
    for leave_at in (30.0, 29.999):
        s = derive(
            events(
                queued(0),
                queue_left(leave_at, reason="abandoned"),
                abandoned(30),
                ended(30, abandoned=True),
            )
        )
        assert [(v.outcome, round(v.wait_s)) for v in s.visits] == [("abandoned", 30)]


def test_a_queue_left_for_another_queue_or_twice_changes_nothing():
    s = derive(events(queued(0), queue_left(5, "billing"), queue_left(8), queue_left(9), ended(20)))
    assert [(v.outcome, v.wait_s) for v in s.visits] == [("timed_out", 8.0)]


def test_a_caller_redirected_out_of_the_queue_is_transferred_out_when_it_left():
    s = derive(events(queued(0), queue_left(15), blind(15.1, ALICE, "700"), ended(40)))
    assert [(v.outcome, v.wait_s) for v in s.visits] == [("transferred_out", 15.0)]


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


# -- recorded captures (tools/record_ami.py, real Asterisk) -----------------------------
def _capture_segments(name: str):
    from tests.unit.ami_replay import replay_fixture

    effects = replay_fixture(name).effects
    timeline = [e for effect in effects for e in to_events(effect, now=T0)]
    keys = {e.call_key for e in timeline if e.kind == "queued"}
    (key,) = keys
    return derive([e for e in timeline if e.call_key == key]), timeline


def test_capture_answered_call_visit_ends_at_the_answer():
    s, timeline = _capture_segments("answered_call")
    (visit,) = s.visits
    connect = next(e for e in timeline if e.kind == "connected")
    assert (visit.queue, visit.outcome, visit.left) == ("support", "answered", connect.at)
    assert [e.data["reason"] for e in timeline if e.kind == "queue_left"] == ["answered"]


def test_capture_abandoned_call_visit_ends_when_the_caller_hung_up():
    s, timeline = _capture_segments("abandoned_call")
    (visit,) = s.visits
    gone = next(e for e in timeline if e.kind == "abandoned")
    assert (visit.queue, visit.outcome, visit.left) == ("collections", "abandoned", gone.at)
    assert [e.data["reason"] for e in timeline if e.kind == "queue_left"] == ["abandoned"]


def test_capture_blind_transfer_to_a_queue_is_answered_in_both_queues():
    s, _timeline = _capture_segments("blind_transfer_to_queue")
    assert [(v.queue, v.outcome) for v in s.visits] == [
        ("support", "answered"),
        ("sales", "answered"),
    ]


def test_capture_queue_timeout_is_timed_out_and_waits_until_the_queue_let_go():
    """Queue() timed out after 3 s (QUEUE_TIMEOUT=3); Asterisk said QueueCallerAbandon,
    the dialplan played a message for 9 s more and hung up."""
    s, timeline = _capture_segments("queue_timeout")
    (visit,) = s.visits
    assert (visit.queue, visit.outcome) == ("collections", "timed_out")
    assert 2.9 <= visit.wait_s <= 3.5, visit.wait_s
    assert s.ended is not None and s.ended - visit.left > 5  # the message, not the wait
    assert [e.data["reason"] for e in timeline if e.kind == "queue_left"] == ["timeout"]
    assert not [e for e in timeline if e.kind == "abandoned"]
    ended = next(e for e in timeline if e.kind == "ended")
    assert ended.data["abandoned"] is False
    j = s.journey
    assert j is not None and j.outcome == "timed_out"
