"""The call model driven by the captures recorded with tools/record_ami.py (real AMI from
the Asterisk 22.10.1 test bed; each file's first line says how): an attended transfer
made from the agent's phone, an AMI attended transfer whose event names no target, a
blind transfer back to a queue, a Local-channel queue member, and three calls
interleaved in one recording. Replayed strictly
(tests/unit/ami_replay: any event the model cannot place fails).

The assertions are about what matters to the rest of the system: who rang and who
connected, in order; the transfer's kind, from and to; one CallEnded per call;
CTI_CALL_ID on everything the route's call did; nothing left over. A re-recording
(tools/record_ami.py) changes ids and timestamps, so those are read from the capture,
never written here, and where Asterisk's order of simultaneous hang-ups may vary
(AgentLeft around CallEnded) the tests do not depend on it.
"""

from __future__ import annotations

from collections.abc import Sequence

from cti.ami.protocol import Message
from cti.calls import (
    AgentConnected,
    AgentLeft,
    AgentRingCancelled,
    AgentRinging,
    AgentRingNoAnswer,
    CallAbandoned,
    CallEnded,
    CallHeld,
    CallIdentified,
    CallMerged,
    CallModel,
    CallQueued,
    CallStarted,
    CallState,
    CallStateChanged,
    CallTransferred,
    ConsultStarted,
    Effect,
    TransferKind,
)
from tests.unit import ami_replay
from tests.unit.ami_replay import is_event_block, load, parse, replay, replay_fixture, split_blocks


def rang(effects: Sequence[Effect]) -> list[tuple[str, str | None]]:
    return [(e.agent, e.queue) for e in effects if isinstance(e, AgentRinging)]


def connected(effects: Sequence[Effect]) -> list[tuple[str, str | None]]:
    return [(e.agent, e.queue) for e in effects if isinstance(e, AgentConnected)]


def states(effects: Sequence[Effect]) -> list[tuple[str, str | None]]:
    return [(e.state.value, e.agent) for e in effects if isinstance(e, CallStateChanged)]


def of(effects: Sequence[Effect], *types: type[Effect]) -> list:
    return [e for e in effects if isinstance(e, types)]


def routed_call(effects: Sequence[Effect]) -> str:
    """One call that went through the FastAGI route: started first, identified once, and
    from then on every effect carries that CTI_CALL_ID; ended exactly once, as its last
    story event but for the AgentLeft of legs hung up with it. Returns the call id."""
    assert isinstance(effects[0], CallStarted)
    assert len({e.linkedid for e in effects}) == 1
    (identified,) = of(effects, CallIdentified)
    assert identified.call_id
    assert {e.call_id for e in effects[effects.index(identified) :]} == {identified.call_id}
    (ended,) = of(effects, CallEnded)
    after = effects[effects.index(ended) + 1 :]
    assert all(isinstance(e, AgentLeft | CallStateChanged) for e in after)
    assert states(effects)[-1] == ("ended", None)
    # every agent that connected left again, once
    lefts = [e.agent for e in of(effects, AgentLeft)]
    assert sorted(lefts) == sorted(agent for agent, _queue in connected(effects))
    return identified.call_id


def ringing_fields(e: AgentRinging) -> tuple[str, str | None, str | None]:
    return e.agent, e.queue, e.member_name


def raw_events(name: str) -> list[Message]:
    return ami_replay.parse(ami_replay.load(name))


# -- attended transfer from the phone --------------------------------------------------------
def test_attended_transfer_made_from_the_phone() -> None:
    """Agent 2001 holds the caller, calls 2003 from the same phone (a call of its own,
    with its own Linkedid and no CTI_CALL_ID), then REFERs with Replaces."""
    result = replay_fixture("attended_transfer_phone")
    messages = [m for m, _ in result.by_message]
    calls = result.calls()
    assert len(calls) == 2
    origin = next(m for m in messages if m.name == "Newchannel")
    customer = calls[origin["Linkedid"]]
    (consult_linkedid,) = set(calls) - {origin["Linkedid"]}
    consult = calls[consult_linkedid]

    call_id = routed_call(customer)
    join = next(m for m in messages if m.name == "QueueCallerJoin")
    assert call_id == join.variable("CTI_CALL_ID")
    assert [(q.queue, q.priority) for q in of(customer, CallQueued)] == [("support", 10)]
    assert rang(customer) == [("PJSIP/2001", "support")]
    assert connected(customer) == [("PJSIP/2001", "support"), ("PJSIP/2003", None)]
    assert [h.by for h in of(customer, CallHeld)] == ["PJSIP/2001"]

    (started,) = of(customer, ConsultStarted)
    assert (started.from_agent, started.to) == ("PJSIP/2001", "2003")
    assert started.consult_linkedid == consult_linkedid
    assert started.channel.startswith("PJSIP/2001-")  # the phone's second leg

    (transfer,) = of(customer, CallTransferred)
    assert (transfer.kind, transfer.from_agent, transfer.to) == (
        TransferKind.ATTENDED,
        "PJSIP/2001",
        "PJSIP/2003",
    )
    target_leg = of(customer, AgentConnected)[1].channel
    assert transfer.to_channel == target_leg and target_leg.startswith("PJSIP/2003-")
    (ended,) = of(customer, CallEnded)
    assert (ended.agents, ended.abandoned, ended.cause) == (
        ("PJSIP/2001", "PJSIP/2003"),
        False,
        "16",
    )
    assert states(customer) == [
        ("queued", None),
        ("ringing", "PJSIP/2001"),
        ("talking", "PJSIP/2001"),
        ("on_hold", "PJSIP/2001"),
        ("transferring", None),
        ("talking", "PJSIP/2003"),
        ("ended", None),
    ]

    # The consult call was followed as a call of its own: it rang and connected 2003,
    # lost 2003 to the customer's call, and ended when the phone's consult leg went.
    assert all(e.call_id is None for e in consult)
    assert rang(consult) == [("PJSIP/2003", None)] and connected(consult) == rang(consult)
    assert [e.agent for e in of(consult, AgentLeft)] == ["PJSIP/2003"]
    assert [e.agents for e in of(consult, CallEnded)] == [("PJSIP/2003",)]
    assert not of(result.effects, CallMerged, AgentRingNoAnswer, AgentRingCancelled)
    assert result.model.size == (0, 0, 0)


def test_attended_transfer_event_shows_the_target_as_it_was() -> None:
    """Observed: AttendedTransfer comes after the target's BridgeEnter into the caller's
    bridge (which shows the caller's Linkedid), yet describes the target with the consult
    call's Linkedid. The model must not move the target back to the consult call (it did,
    emitting AgentLeft and a second AgentConnected for 2003 in the customer's call)."""
    messages = raw_events("attended_transfer_phone")
    at = next(i for i, m in enumerate(messages) if m.name == "AttendedTransfer")
    transfer = messages[at]
    target = transfer["TransferTargetUniqueid"]
    entered = next(  # the target joins the caller's bridge, before the event
        m
        for m in messages[:at]
        if m.name == "BridgeEnter"
        and m["Uniqueid"] == target
        and m["BridgeUniqueid"] == transfer["DestBridgeUniqueid"]
    )
    assert entered["Linkedid"] == transfer["TransfereeLinkedid"]  # moved already ...
    assert transfer["TransferTargetLinkedid"] != entered["Linkedid"]  # ... the event: not yet

    model = CallModel()
    replay(messages[:at], model)
    call = model.call(transfer["TransfereeUniqueid"])
    assert call is not None and model.call(target) is call
    effects = model.apply(transfer)
    assert not of(effects, AgentLeft, AgentConnected)
    assert [type(e) for e in effects if not isinstance(e, CallStateChanged)] == [CallTransferred]
    assert model.call(target) is call
    assert call.state is CallState.TALKING and call.agent == "PJSIP/2003"
    assert [c.name for c in call.talking] == [call.channels[target].name]
    assert call.agents == ["PJSIP/2001", "PJSIP/2003"]


def test_two_agents_consults_at_once_each_go_to_the_call_held_last() -> None:
    """The capture and a renamed copy 1 s later in one stream: agent 2001 (the same
    device in both) holds two callers at once when the copy's consult call starts. The
    consult belongs to the call held last; each call's story is the one it has alone."""
    streams = [
        ami_replay.renamed_events("attended_transfer_phone", "p1x"),
        ami_replay.renamed_events("attended_transfer_phone", "p2x", shift=1.0),
    ]
    merged = ami_replay.interleave(streams)
    together = replay(ami_replay.parse(b"".join(merged)))
    original = raw_events("attended_transfer_phone")
    held_leg = next(m["Channel"] for m in original if m.name == "Hold")
    consult_leg = next(  # the phone's own second leg, dialling 2003
        m["Channel"]
        for m in original
        if m.name == "DialBegin" and m["DestChannel"].startswith("PJSIP/2003-")
    )

    def tagged(channel: str, tag: str) -> str:  # as ami_replay.Renamer renames it
        dash = channel.rindex("-") + 1
        return channel[:dash] + tag + channel[dash:]

    seen = [(m.name, m.get("Channel")) for m, _ in together.by_message]
    first_unhold = seen.index(("Unhold", tagged(held_leg, "p1x")))
    second_hold = seen.index(("Hold", tagged(held_leg, "p2x")))
    second_consult = seen.index(("Newchannel", tagged(consult_leg, "p2x")))
    assert second_hold < second_consult < first_unhold  # 2001 holds both callers then
    for stream in streams:
        alone = replay(ami_replay.parse(b"".join(stream)))
        for linkedid, effects in alone.calls().items():
            assert together.calls()[linkedid] == effects
    assert together.model.size == (0, 0, 0)


def test_attended_transfer_without_a_target_in_the_event() -> None:
    """A second recording of the AMI Atxfer scenario (attended_transfer_ami): this time
    the AttendedTransfer event has no TransferTarget* at all. The target is then the
    agent the caller is connected to by then (2003, through the Local pair); the model
    said ``to=None`` before."""
    result = replay_fixture("attended_transfer_ami_no_target")
    messages = [m for m, _ in result.by_message]
    (event,) = [m for m in messages if m.name == "AttendedTransfer"]
    assert event.get("TransferTargetUniqueid") is None and event["Result"] == "Success"
    ((_linkedid, effects),) = result.calls().items()
    routed_call(effects)
    assert rang(effects) == [("PJSIP/2001", "support"), ("PJSIP/2003", None)]
    assert connected(effects) == rang(effects)
    (consult,) = of(effects, ConsultStarted)
    assert (consult.from_agent, consult.to) == ("PJSIP/2001", "2003")
    assert consult.channel.startswith("Local/2003@agents-")
    (transfer,) = of(effects, CallTransferred)
    assert (transfer.kind, transfer.from_agent, transfer.to) == (
        TransferKind.ATTENDED,
        "PJSIP/2001",
        "PJSIP/2003",
    )
    assert transfer.to_channel == of(effects, AgentConnected)[1].channel
    assert of(effects, CallEnded)[0].agents == ("PJSIP/2001", "PJSIP/2003")
    assert states(effects)[-3:] == [
        ("transferring", None),
        ("talking", "PJSIP/2003"),
        ("ended", None),
    ]
    assert result.model.size == (0, 0, 0)


# -- blind transfer back to a queue ------------------------------------------------------------
def test_blind_transfer_back_to_a_queue_keeps_the_call() -> None:
    result = replay_fixture("blind_transfer_to_queue")
    ((_linkedid, effects),) = result.calls().items()
    call_id = routed_call(effects)
    queued = of(effects, CallQueued)
    # The same call, same CTI_CALL_ID, queued twice with the route's priority both times.
    assert [(q.queue, q.priority, q.call_id) for q in queued] == [
        ("support", 10, call_id),
        ("sales", 10, call_id),
    ]
    assert rang(effects) == [("PJSIP/2001", "support"), ("PJSIP/2004", "sales")]
    assert connected(effects) == rang(effects)
    (transfer,) = of(effects, CallTransferred)
    assert (transfer.kind, transfer.from_agent, transfer.to, transfer.context) == (
        TransferKind.BLIND,
        "PJSIP/2001",
        "sales",
        "agents",
    )
    order = [type(e) for e in effects]
    assert order.index(CallTransferred) < effects.index(queued[1])  # transfer, then queue
    assert of(effects, CallEnded)[0].agents == ("PJSIP/2001", "PJSIP/2004")
    # The caller's channel itself went back into a queue: one channel, both joins.
    joins = [m for m, _ in result.by_message if m.name == "QueueCallerJoin"]
    assert [m["Queue"] for m in joins] == ["support", "sales"]
    assert joins[0]["Uniqueid"] == joins[1]["Uniqueid"]
    assert result.model.size == (0, 0, 0)


# -- Local-channel queue member ----------------------------------------------------------------
def test_local_channel_member_is_the_phone_behind_it() -> None:
    """Queue ``local``: member Local/2006@agents/n, state interface PJSIP/2006. No
    QueueMemberStatus comes before the first AgentCalled (it names only the Local
    interface), so the agent is learnt when the ;2 dials the phone: one AgentRinging for
    PJSIP/2006, not one for ``Local/2006@agents/n``."""
    result = replay_fixture("local_member")
    ((_linkedid, effects),) = result.calls().items()
    routed_call(effects)
    messages = [m for m, _ in result.by_message]
    called = next(m for m in messages if m.name == "AgentCalled")
    assert called["Interface"] == "Local/2006@agents/n"
    assert not any(m.name == "QueueMemberStatus" for m in messages[: messages.index(called)])

    assert [(q.queue, q.priority) for q in of(effects, CallQueued)] == [("local", 10)]
    (ringing,) = of(effects, AgentRinging)
    assert (ringing.agent, ringing.queue, ringing.member_name) == (
        "PJSIP/2006",
        "local",
        "Agent 2006 via Local",
    )
    one = called["DestChannel"]
    assert ringing.channel == one and one.endswith(";1")  # the leg the queue rings
    (talk,) = of(effects, AgentConnected)
    assert (talk.agent, talk.queue, talk.member_name) == ringing_fields(ringing)
    assert talk.channel.startswith("PJSIP/2006-")
    assert talk.via == (one, one[:-1] + "2")
    assert states(effects) == [
        ("queued", None),
        ("ringing", "PJSIP/2006"),
        ("talking", "PJSIP/2006"),
        ("ended", None),
    ]
    assert of(effects, CallEnded)[0].agents == ("PJSIP/2006",)
    assert result.model.size == (0, 0, 0)


def test_local_member_known_from_queue_member_status_rings_at_once() -> None:
    """The same capture twice through one model (the second copy renamed): by then the
    QueueMemberStatus events of the first taught the model the member's state interface,
    so the second call's AgentRinging comes with its AgentCalled. Same story both times."""
    first = ami_replay.renamed_events("local_member", "a1x")
    second = ami_replay.renamed_events("local_member", "a2x", shift=60)
    result = replay(ami_replay.parse(b"".join(first + second)))
    stories = list(result.calls().values())
    assert len(stories) == 2

    def trigger(effect_type: type[Effect], linkedid: str) -> str:
        return next(
            m.name
            for m, effects in result.by_message
            if any(isinstance(e, effect_type) and e.linkedid == linkedid for e in effects)
        )

    linkedids = list(result.calls())
    assert trigger(AgentRinging, linkedids[0]) == "DialBegin"  # learnt from the ;2's dial
    assert trigger(AgentRinging, linkedids[1]) == "AgentCalled"  # known already
    for effects in stories:
        assert [ringing_fields(e) for e in of(effects, AgentRinging)] == [
            ("PJSIP/2006", "local", "Agent 2006 via Local")
        ]
        assert states(effects) == states(stories[0])


# -- three calls interleaved in one recording --------------------------------------------------
EXPECTED = {  # ANI -> (queue, priority, agent)
    "2120000002": ("support", 10, "PJSIP/2001"),
    "2120000003": ("support", 5, "PJSIP/2002"),  # 2001 is busy: linear goes on to 2002
    "2120000005": ("collections", 5, "PJSIP/2005"),
}


def by_linkedid(messages: Sequence[Message], linkedid: str) -> list[Message]:
    """The events of one call: those with a snapshot of one of its channels."""
    return [
        m
        for m in messages
        if m.is_event and any(k.endswith("linkedid") and v == linkedid for k, v in m.fields.items())
    ]


def test_interleaved_calls_in_one_recording() -> None:
    result = replay_fixture("interleaved_calls")
    messages = [m for m, _ in result.by_message]
    calls = result.calls()
    starts = [e for e in result.effects if isinstance(e, CallStarted)]
    assert [s.caller for s in starts] == list(EXPECTED)
    # They really overlap: every call started before the first one was answered.
    first_connect = next(i for i, m in enumerate(messages) if m.name == "AgentConnect")
    last_new = max(i for i, m in enumerate(messages) if m.name == "Newchannel")
    assert last_new < first_connect

    call_ids = set()
    for start in starts:
        effects = calls[start.linkedid]
        call_ids.add(routed_call(effects))
        queue, priority, agent = EXPECTED[start.caller or ""]
        assert [(q.queue, q.priority) for q in of(effects, CallQueued)] == [(queue, priority)]
        assert rang(effects) == [(agent, queue)] and connected(effects) == rang(effects)
        assert of(effects, CallEnded)[0].agents == (agent,)
        assert states(effects) == [
            ("queued", None),
            ("ringing", agent),
            ("talking", agent),
            ("ended", None),
        ]
        # Interleaving changed nothing: the call's own events alone tell the same story.
        alone = replay(by_linkedid(messages, start.linkedid))
        assert alone.effects == effects
    assert len(call_ids) == 3
    assert not of(result.effects, CallTransferred, CallAbandoned, AgentRingNoAnswer)
    assert result.model.size == (0, 0, 0)


def test_attended_transfer_without_a_target_before_the_target_is_bridged() -> None:
    """The same capture with the target's bridging (its BridgeCreate/Enter/Leave/Merge
    after 2003 answered) arriving only after the AttendedTransfer event, so that neither
    the event nor the topology names the target (seen once on the test bed as a report
    leg without ``to_whom``): the target is the agent who answered the consult."""
    head, blocks = split_blocks(load("attended_transfer_ami_no_target"))
    events = [b for b in blocks if is_event_block(b)]
    transfer = next(i for i, b in enumerate(events) if b.startswith(b"Event: AttendedTransfer"))
    answered = max(i for i, b in enumerate(events[:transfer]) if b.startswith(b"Event: DialEnd"))
    bridging = [
        b for b in events[answered:transfer] if b.startswith((b"Event: Bridge", b"Event: MusicOn"))
    ]
    rest = [b for b in events[answered:transfer] if b not in bridging]
    order = events[:answered] + rest + [events[transfer]] + bridging + events[transfer + 1 :]
    result = replay(parse(head + b"".join(order)))
    ((_linkedid, effects),) = result.calls().items()
    (moved,) = of(effects, CallTransferred)
    assert (moved.kind, moved.from_agent, moved.to) == (
        TransferKind.ATTENDED,
        "PJSIP/2001",
        "PJSIP/2003",
    )
