"""The call summary: wait, talk and hold times, agents, transfers, from a call's events.

Events are made from model effects with :func:`cti.calls.events.to_events`, so these
tests also pin what the summary relies on in that mapping (the ``channel`` of a leg, the
``from`` and ``kind`` of a transfer, the ``cause_txt`` of the end).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from cti.calls.effects import (
    AgentRingCancelled,
    AgentRinging,
    AgentRingNoAnswer,
    CallAbandoned,
    CallEnded,
    CallStarted,
    CallTransferred,
    ConsultStarted,
    TransferKind,
)
from cti.calls.events import CallEvent, to_events
from cti.timeline.summary import CallSummary, ordered, summarize
from tests.unit.call_effects import (
    ALICE,
    BOB,
    CALL,
    CAROL,
    LEG,
    T0,
    connected,
    ended,
    events,
    held,
    left,
    queued,
    ringing,
    unheld,
)


def at(offset: float) -> datetime:
    return datetime.fromtimestamp(T0 + offset, tz=UTC)


def answered_call() -> list[CallEvent]:
    return events(
        CallStarted(
            **CALL,
            at=T0,
            channel="PJSIP/trunk-00000001",
            caller="2125550100",
            context="from-pstn",
            exten="5550100",
        ),
        queued(2),
        ringing(3, ALICE),
        connected(7, ALICE),
        left(67, ALICE),
        ended(67, ALICE),
    )


def test_an_answered_call():
    summary = summarize(answered_call())
    assert summary == CallSummary(
        queued_at=at(2),
        answered_at=at(7),
        ended_at=at(67),
        wait_s=5.0,
        talk_s=60.0,
        hold_s=0.0,
        transfers=0,
        agents=(ALICE,),
        abandoned=False,
        end_cause="Normal Clearing",
    )
    assert summary.ended_at is not None and summary.ended_at.tzinfo is UTC


def test_an_abandoned_call_waited_until_it_ended():
    summary = summarize(
        events(
            queued(0),
            ringing(1, ALICE),
            AgentRingCancelled(
                **CALL, at=T0 + 30, agent=ALICE, channel=LEG[ALICE], reason="CANCEL"
            ),
            CallAbandoned(
                **CALL, at=T0 + 30, queue="sales", position=1, original_position=1, hold_time_s=30
            ),
            ended(30, abandoned=True),
        )
    )
    assert (summary.abandoned, summary.wait_s, summary.answered_at) == (True, 30.0, None)
    assert (summary.talk_s, summary.hold_s, summary.agents) == (0.0, 0.0, ())


def test_the_end_says_abandoned_even_without_the_queue_event():
    assert summarize(events(queued(0), ended(12, abandoned=True))).abandoned


def test_a_ring_without_answer_then_another_agent():
    summary = summarize(
        events(
            queued(0),
            ringing(1, ALICE),
            AgentRingNoAnswer(
                **CALL,
                at=T0 + 16,
                agent=ALICE,
                member_name=None,
                channel=LEG[ALICE],
                queue="sales",
                ring_time_ms=15_000,
            ),
            ringing(17, BOB),
            connected(20, BOB),
            left(50, BOB),
            ended(50, BOB),
        )
    )
    assert (summary.agents, summary.wait_s, summary.talk_s) == ((BOB,), 20.0, 30.0)
    assert summary.answered_at == at(20)


def test_hold_and_unhold_twice():
    summary = summarize(
        events(
            queued(0),
            connected(5, ALICE),
            held(10, ALICE),
            unheld(20, ALICE),
            held(30, ALICE),
            unheld(45, ALICE),
            left(60, ALICE),
            ended(60, ALICE),
        )
    )
    assert (summary.hold_s, summary.talk_s) == (25.0, 30.0)


def test_a_blind_then_an_attended_transfer_with_three_agents():
    summary = summarize(
        events(
            queued(0),
            connected(5, ALICE),
            held(10, ALICE),  # the blind transfer releases it: no unhold comes
            CallTransferred(
                **CALL,
                at=T0 + 15,
                kind=TransferKind.BLIND,
                from_agent=ALICE,
                to="2002",
                context="agents",
            ),
            left(15, ALICE),
            ringing(16, BOB),
            connected(20, BOB),
            held(30, BOB),
            ConsultStarted(
                **CALL,
                at=T0 + 31,
                from_agent=BOB,
                channel="Local/2003@agents-1;1",
                to="2003",
                consult_linkedid=None,
            ),
            CallTransferred(
                **CALL,
                at=T0 + 40,
                kind=TransferKind.ATTENDED,
                from_agent=BOB,
                to=CAROL,
                to_channel=LEG[CAROL],
            ),
            connected(40, CAROL, via=("Local/2003@agents-1;1", "Local/2003@agents-1;2")),
            left(40.5, BOB),
            left(100, CAROL),
            ended(100, ALICE, BOB, CAROL),
        )
    )
    assert (summary.transfers, summary.agents) == (2, (ALICE, BOB, CAROL))
    assert summary.hold_s == pytest.approx(5 + 10)  # 10→15 and 30→40
    assert summary.talk_s == pytest.approx(5 + 10 + 60)  # 5→10, 20→30, 40→100
    assert (summary.wait_s, summary.answered_at) == (5.0, at(5))


def test_an_attended_transfer_keeps_another_agents_hold():
    summary = summarize(
        events(
            connected(0, ALICE),
            connected(1, BOB),
            held(10, BOB),
            CallTransferred(
                **CALL, at=T0 + 20, kind=TransferKind.ATTENDED, from_agent=ALICE, to=CAROL
            ),
            left(20, ALICE),
            ended(40),
        )
    )
    assert (summary.hold_s, summary.talk_s) == (30.0, 10.0)


def test_held_at_the_end_counts_until_the_end_and_late_legs_count_nothing():
    summary = summarize(
        events(
            queued(0),
            connected(5, ALICE),
            held(50, ALICE),
            ended(70, ALICE),  # the caller hung up on hold
            left(71, ALICE),  # the agent's leg goes later
        )
    )
    assert (summary.hold_s, summary.talk_s, summary.ended_at) == (20.0, 45.0, at(70))


def test_a_holding_leg_that_hangs_up_ends_its_hold():
    summary = summarize(events(connected(0, ALICE), held(10, ALICE), left(15, ALICE), ended(20)))
    assert (summary.hold_s, summary.talk_s) == (5.0, 10.0)


def test_duplicates_and_out_of_order_events_give_the_same_summary():
    timeline = answered_call() + events(held(20, ALICE), unheld(25, ALICE))
    expected = summarize(timeline)
    assert (expected.hold_s, expected.talk_s) == (5.0, 55.0)
    # Another instance's copies (one rebuilt from a snapshot, stamped later), shuffled.
    copies = [*timeline, *timeline[2:5]]
    snapshot = AgentRinging(
        **CALL, at=None, agent=ALICE, member_name=None, channel=LEG[ALICE], queue="sales"
    )
    rebuilt = to_events(snapshot, now=T0 + 40)
    assert rebuilt[0].fingerprint == timeline[1].fingerprint and rebuilt[0].at == T0 + 40
    rng = random.Random(4)
    for _ in range(20):
        rng.shuffle(copies)
        assert summarize([*copies, *rebuilt]) == expected
    assert len(ordered([*copies, *rebuilt])) == len(timeline)


def test_events_at_the_same_instant_are_ordered_by_their_place_in_the_call():
    timeline = events(queued(0), connected(5, ALICE), left(5, ALICE), ended(5, ALICE))
    assert [e.kind for e in ordered(timeline[::-1])] == ["queued", "connected", "left", "ended"]
    assert summarize(timeline[::-1]) == summarize(timeline)


def test_a_call_never_queued_has_no_wait():
    summary = summarize(events(connected(0, BOB), left(42, BOB), ended(42, BOB)))
    assert (summary.queued_at, summary.wait_s) == (None, None)
    assert (summary.answered_at, summary.talk_s, summary.agents) == (at(0), 42.0, (BOB,))


def test_a_call_not_ended_is_summarised_up_to_its_last_event():
    summary = summarize(events(queued(0), ringing(1, ALICE), connected(4, ALICE), held(9, ALICE)))
    assert (summary.ended_at, summary.end_cause, summary.wait_s) == (None, None, 4.0)
    assert (summary.talk_s, summary.hold_s) == (5.0, 0.0)
    waiting = summarize(events(queued(0), ringing(3, ALICE)))
    assert waiting.wait_s is None


def test_an_agent_the_end_names_is_kept_even_if_its_connect_was_missed():
    summary = summarize(events(connected(0, ALICE), ended(10, ALICE, BOB)))
    assert summary.agents == (ALICE, BOB)


def test_the_cause_code_when_there_is_no_text():
    end = CallEnded(**CALL, at=T0, cause="17", cause_txt=None, abandoned=False, agents=())
    assert summarize(events(end)).end_cause == "17"


def test_no_events():
    summary = summarize([])
    assert (summary.ended_at, summary.talk_s, summary.hold_s, summary.agents) == (
        None,
        0.0,
        0.0,
        (),
    )
