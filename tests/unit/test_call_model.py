"""The call model (cti.calls) driven by recorded AMI traffic from the Asterisk 22.10.1
test bed (tests/fixtures/ami), through the real parser, strictly (tests/unit/ami_replay:
an event the model cannot place fails the test).

A few variants (a reconnect snapshot, orderings a capture cannot force) are driven by
short synthetic event sequences built here with :func:`ev`, shaped like the captured
events (same headers), and say so. The Local-channel member and the attended transfer
made from the phone were captured too since (tools/record_ami.py); their replays are in
tests/unit/test_call_model_captures.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

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
    CallLeftQueue,
    CallMerged,
    CallModel,
    CallQueued,
    CallRestored,
    CallStarted,
    CallState,
    CallStateChanged,
    CallTransferred,
    ConsultStarted,
    Effect,
    TransferKind,
)
from tests.unit import ami_replay
from tests.unit.ami_replay import replay, replay_fixture

STORY = (
    CallStarted,
    CallIdentified,
    CallQueued,
    AgentRinging,
    AgentRingNoAnswer,
    AgentRingCancelled,
    AgentConnected,
    AgentLeft,
    CallHeld,
    ConsultStarted,
    CallTransferred,
    CallAbandoned,
    CallEnded,
)


def story(effects: Sequence[Effect]) -> list[tuple]:
    """A compact, readable story: (effect, the one or two fields that matter)."""
    out: list[tuple] = []
    for e in effects:
        match e:
            case CallQueued():
                out.append(("queued", e.queue, e.priority))
            case AgentRinging():
                out.append(("ringing", e.agent, e.queue))
            case AgentRingNoAnswer():
                out.append(("no-answer", e.agent))
            case AgentRingCancelled():
                out.append(("ring-cancelled", e.agent, e.reason))
            case AgentConnected():
                out.append(("connected", e.agent, e.queue))
            case AgentLeft():
                out.append(("left", e.agent))
            case CallHeld():
                out.append(("held", e.by))
            case ConsultStarted():
                out.append(("consult", e.from_agent, e.to))
            case CallTransferred():
                out.append((f"{e.kind}-transfer", e.from_agent, e.to))
            case CallAbandoned():
                out.append(("abandoned", e.queue))
            case CallEnded():
                out.append(("ended", e.agents))
            case CallStarted():
                out.append(("started", e.exten))
            case CallIdentified():
                out.append(("identified",))
            case CallMerged():
                out.append(("merged",))
    return out


def states(effects: Sequence[Effect]) -> list[tuple[str, str | None]]:
    return [(e.state.value, e.agent) for e in effects if isinstance(e, CallStateChanged)]


def one_call_id(effects: Sequence[Effect]) -> str:
    """Every effect from CallIdentified on names the same CTI_CALL_ID (and Linkedid)."""
    identified = [e for e in effects if isinstance(e, CallIdentified)]
    assert len(identified) == 1
    call_id = identified[0].call_id
    assert call_id
    after = effects[effects.index(identified[0]) :]
    assert {e.call_id for e in after} == {call_id}
    assert len({e.linkedid for e in effects}) == 1
    return call_id


# -- the captured scenarios -----------------------------------------------------------------
def test_answered_call() -> None:
    result = replay_fixture("answered_call")
    assert story(result.effects) == [
        ("started", "5550100"),
        ("identified",),
        ("queued", "support", None),
        ("ringing", "PJSIP/2001", "support"),
        ("connected", "PJSIP/2001", "support"),
        ("ended", ("PJSIP/2001",)),
        ("left", "PJSIP/2001"),
    ]
    call_id = one_call_id(result.effects)
    assert call_id == "5725ac94-715c-4685-bb1a-4828333e4e47"
    assert states(result.effects) == [
        ("queued", None),
        ("ringing", "PJSIP/2001"),
        ("talking", "PJSIP/2001"),
        ("ended", None),
    ]
    started, ringing = result.of(CallStarted)[0], result.of(AgentRinging)[0]
    assert started.channel == "PJSIP/trunk-00000000" and started.caller == "2120000002"
    assert started.linkedid == "1795410888.0" and started.at == pytest.approx(1795410888.729913)
    assert ringing.member_name == "Agent 2001" and ringing.channel == "PJSIP/2001-00000001"
    ended = result.of(CallEnded)[0]
    assert (ended.cause, ended.cause_txt, ended.abandoned) == ("16", "Normal Clearing", False)
    assert result.model.size == (0, 0, 0)  # nothing kept once the call is over


def with_priority_channelvar(data: bytes, priority: int) -> bytes:
    """The capture as it would read with ``channelvars = CTI_CALL_ID,CTI_PRIORITY``:
    a second ChanVariable after each non-empty CTI_CALL_ID one (edited, not recorded)."""
    out = []
    for line in data.split(b"\r\n"):
        out.append(line)
        if line.startswith(b"ChanVariable: CTI_CALL_ID=") and line != b"ChanVariable: CTI_CALL_ID=":
            out.append(b"ChanVariable: CTI_PRIORITY=%d" % priority)
    return b"\r\n".join(out)


def test_queued_with_the_routes_priority_when_manager_conf_lists_it() -> None:
    # The captures list only CTI_CALL_ID in channelvars (QueueCallerJoin has no queue
    # priority of its own): the priority is unknown there ...
    assert replay_fixture("answered_call").of(CallQueued)[0].priority is None
    # ... and read from ChanVariable when manager.conf lists CTI_PRIORITY too.
    data = with_priority_channelvar(ami_replay.load("answered_call"), 5)
    queued = replay(ami_replay.parse(data)).of(CallQueued)
    assert [(q.queue, q.position, q.priority) for q in queued] == [("support", 1, 5)]


def test_queued_with_the_routes_tier_and_rule_when_manager_conf_lists_them() -> None:
    # The wallboard's per-tier and per-rule figures read them from the queued event.
    assert replay_fixture("answered_call").of(CallQueued)[0].tier is None
    data = ami_replay.load("answered_call").replace(
        b"ChanVariable: CTI_CALL_ID=",
        b"ChanVariable: CTI_TIER=gold\r\nChanVariable: CTI_RULE=gold-first\r\n"
        b"ChanVariable: CTI_CALL_ID=",
    )
    queued = replay(ami_replay.parse(data)).of(CallQueued)
    assert [(q.queue, q.tier, q.rule) for q in queued] == [("support", "gold", "gold-first")]


def test_abandoned_call() -> None:
    result = replay_fixture("abandoned_call")
    assert story(result.effects) == [
        ("started", "5550300"),
        ("identified",),
        ("queued", "collections", None),
        ("ringing", "PJSIP/2005", "collections"),
        ("ring-cancelled", "PJSIP/2005", "CANCEL"),
        ("abandoned", "collections"),
        ("ended", ()),
    ]
    one_call_id(result.effects)
    abandoned = result.of(CallAbandoned)[0]
    assert (abandoned.position, abandoned.original_position, abandoned.hold_time_s) == (1, 1, 5)
    assert result.of(CallEnded)[0].abandoned is True
    assert states(result.effects) == [
        ("queued", None),
        ("ringing", "PJSIP/2005"),
        ("queued", None),
        ("ended", None),
    ]
    assert result.model.size == (0, 0, 0)


def test_ring_no_answer_then_another_agent() -> None:
    result = replay_fixture("ring_no_answer")
    assert story(result.effects) == [
        ("started", "5550100"),
        ("identified",),
        ("queued", "support", None),
        ("ringing", "PJSIP/2001", "support"),
        ("no-answer", "PJSIP/2001"),  # once, though two DialEnd follow (NOANSWER, CANCEL)
        ("ringing", "PJSIP/2002", "support"),
        ("connected", "PJSIP/2002", "support"),
        ("left", "PJSIP/2002"),
        ("ended", ("PJSIP/2002",)),
    ]
    one_call_id(result.effects)
    assert result.of(AgentRingNoAnswer)[0].ring_time_ms == 15000
    assert states(result.effects) == [
        ("queued", None),
        ("ringing", "PJSIP/2001"),
        ("queued", None),
        ("ringing", "PJSIP/2002"),
        ("talking", "PJSIP/2002"),
        ("ended", None),
    ]


@pytest.mark.parametrize("name", ["blind_transfer_refer", "blind_transfer_ami"])
def test_blind_transfer(name: str) -> None:
    result = replay_fixture(name)
    assert story(result.effects) == [
        ("started", "5550100"),
        ("identified",),
        ("queued", "support", None),
        ("ringing", "PJSIP/2001", "support"),
        ("connected", "PJSIP/2001", "support"),
        ("blind-transfer", "PJSIP/2001", "2002"),
        ("left", "PJSIP/2001"),
        ("ringing", "PJSIP/2002", None),  # the caller's channel dials 2002 itself
        ("connected", "PJSIP/2002", None),
        ("left", "PJSIP/2002"),
        ("ended", ("PJSIP/2001", "PJSIP/2002")),
    ]
    one_call_id(result.effects)
    assert result.of(CallTransferred)[0].context == "agents"
    assert states(result.effects) == [
        ("queued", None),
        ("ringing", "PJSIP/2001"),
        ("talking", "PJSIP/2001"),
        ("transferring", None),
        ("ringing", "PJSIP/2002"),
        ("talking", "PJSIP/2002"),
        ("ended", None),
    ]


def test_blind_transfer_back_to_a_queue() -> None:
    # Recorded with manager.conf channelvars CTI_CALL_ID,CTI_PRIORITY: the priority shows,
    # and the caller keeps it in the second queue.
    result = replay_fixture("blind_transfer_to_queue")
    assert story(result.effects) == [
        ("started", "5550100"),
        ("identified",),
        ("queued", "support", 10),
        ("ringing", "PJSIP/2001", "support"),
        ("connected", "PJSIP/2001", "support"),
        ("blind-transfer", "PJSIP/2001", "sales"),
        ("queued", "sales", 10),  # the caller's channel runs cti-queue,sales at once ...
        ("left", "PJSIP/2001"),  # ... while agent 2001's leg is hung up
        ("ringing", "PJSIP/2004", "sales"),
        ("connected", "PJSIP/2004", "sales"),
        ("ended", ("PJSIP/2001", "PJSIP/2004")),
        ("left", "PJSIP/2004"),
    ]
    one_call_id(result.effects)
    assert states(result.effects) == [
        ("queued", None),
        ("ringing", "PJSIP/2001"),
        ("talking", "PJSIP/2001"),
        ("transferring", None),
        ("queued", None),
        ("ringing", "PJSIP/2004"),
        ("talking", "PJSIP/2004"),
        ("ended", None),
    ]
    assert result.model.size == (0, 0, 0)


def test_attended_transfer_through_a_local_pair() -> None:
    result = replay_fixture("attended_transfer_ami")
    assert story(result.effects) == [
        ("started", "5550100"),
        ("identified",),
        ("queued", "support", None),
        ("ringing", "PJSIP/2001", "support"),
        ("connected", "PJSIP/2001", "support"),
        ("held", "PJSIP/2001"),
        ("consult", "PJSIP/2001", "2003"),  # Local/2003@agents ;1 appears in the call
        ("ringing", "PJSIP/2003", None),  # ;2 dials agent 2003
        ("connected", "PJSIP/2003", None),  # the merge puts ;1 in the caller's bridge
        ("attended-transfer", "PJSIP/2001", "PJSIP/2003"),
        ("left", "PJSIP/2001"),
        ("left", "PJSIP/2003"),
        ("ended", ("PJSIP/2001", "PJSIP/2003")),
    ]
    one_call_id(result.effects)
    connected = result.of(AgentConnected)[1]
    assert connected.channel == "PJSIP/2003-0000000f"
    assert connected.via == ("Local/2003@agents-00000000;1", "Local/2003@agents-00000000;2")
    transfer = result.of(CallTransferred)[0]
    assert transfer.kind is TransferKind.ATTENDED
    assert transfer.to_channel == "PJSIP/2003-0000000f"
    assert result.of(ConsultStarted)[0].channel == "Local/2003@agents-00000000;1"
    assert states(result.effects) == [
        ("queued", None),
        ("ringing", "PJSIP/2001"),
        ("talking", "PJSIP/2001"),
        ("on_hold", "PJSIP/2001"),
        ("transferring", None),
        ("talking", "PJSIP/2003"),
        ("ended", None),
    ]
    assert result.model.size == (0, 0, 0)


def test_the_model_knows_who_talks_to_the_caller_after_the_transfer() -> None:
    messages = ami_replay.parse(ami_replay.load("attended_transfer_ami"))
    model = CallModel()
    transfer_at = next(i for i, m in enumerate(messages) if m.name == "AttendedTransfer")
    replay(messages[: transfer_at + 1], model)
    call = model.call("e3a2371a-eabc-42a1-850e-f40385c3639b")
    assert call is not None
    assert call is model.call("1795410966.13") is model.call("1795410970.17")  # Linkedid, leg
    assert call.state is CallState.TALKING and call.agent == "PJSIP/2003"
    assert [channel.name for channel in call.talking] == ["PJSIP/2003-0000000f"]
    assert call.agents == ["PJSIP/2001", "PJSIP/2003"]
    assert [t.kind for t in call.transfers] == [TransferKind.ATTENDED]
    assert call.queue == "support"
    assert set(call.channels) == {  # the Local pair and both agents' legs, all tracked
        "1795410966.13",
        "1795410966.14",
        "1795410970.15",
        "1795410970.16",
        "1795410970.17",
    }


# -- interleaved concurrent calls ----------------------------------------------------------
def concurrent_streams() -> tuple[list[str], list[list[bytes]]]:
    """Every capture renamed with its own tag (ids, channels, CTI_CALL_ID: see
    ami_replay) and shifted to start 0.7 s after the previous one, so the calls overlap
    (the recordings last 5-22 s) and share agents 2001/2002."""
    names = ami_replay.fixture_names()
    streams = []
    for index, name in enumerate(names):
        _, blocks = ami_replay.split_blocks(ami_replay.load(name))
        first = min(t for b in blocks if (t := ami_replay.block_timestamp(b)) is not None)
        start = 1_800_000_000.0 + 0.7 * index
        streams.append(ami_replay.renamed_events(name, f"c{index}x", start - first))
    return names, streams


def test_interleaved_calls_tell_each_story_independently() -> None:
    names, streams = concurrent_streams()
    merged = ami_replay.interleave(streams)
    # The merge really interleaves: while the first call is still going, others start.
    assert [block.count(b"c0x") > 0 for block in merged[:40]].count(False) > 10
    together = replay(ami_replay.parse(b"Asterisk Call Manager/11.0.0\r\n" + b"".join(merged)))
    calls = together.calls()
    alone_calls: dict[str, list[Effect]] = {}  # some captures hold several calls
    for stream in streams:
        alone_calls |= replay(ami_replay.parse(b"".join(stream))).calls()
    assert len(alone_calls) >= len(names)
    assert calls == alone_calls  # same effects, same order, same timestamps, per call
    call_ids = {e.call_id for e in together.of(CallIdentified)}
    assert len(call_ids) == sum(  # every routed call, each its own CTI_CALL_ID
        any(isinstance(e, CallIdentified) for e in effects) for effects in alone_calls.values()
    )
    assert together.model.size == (0, 0, 0)


def test_many_concurrent_copies_keep_memory_bounded() -> None:
    names = ami_replay.fixture_names()
    renamers = []
    for name in names:
        _, blocks = ami_replay.split_blocks(ami_replay.load(name))
        renamers.append(ami_replay.Renamer([b for b in blocks if ami_replay.is_event_block(b)]))
    model = CallModel(max_remembered=100)
    biggest = (0, 0, 0)
    for batch in range(10):
        streams = [
            ami_replay.split_blocks(r.render(f"b{batch}n{i}x"))[1] for i, r in enumerate(renamers)
        ]
        for copy in range(5):  # 6 copies of every capture per batch, interleaved
            streams += [
                ami_replay.split_blocks(r.render(f"b{batch}k{copy}n{i}x"))[1]
                for i, r in enumerate(renamers)
            ]
        blocks = [block for group in zip(*streams, strict=False) for block in group]
        blocks += [b for s in streams for b in s[min(map(len, streams)) :]]
        for message in ami_replay.parse(b"".join(blocks)):
            model.apply(message)
            biggest = max(biggest, model.size)
    assert model.size == (0, 0, 0)
    per_batch = sum(len(replay_fixture(name).calls()) for name in names)  # some hold several
    concurrent = 6 * per_batch  # calls in flight at most: one batch
    assert biggest[0] <= concurrent and biggest[1] <= concurrent * 5
    assert len(model._dead) <= 100 and len(model._ended) <= 100
    leftovers = (model._by_call_id, model._bridges, model._local_halves, model._holding)
    assert not any(leftovers)
    stats = model.stats
    assert (stats.late_channels, stats.late_events, stats.unattributed) == (0, 0, 0)


# -- synthetic sequences for what was not captured --------------------------------------------
T0 = 1_800_000_000.0


def snapshot(prefix: str, channel: str, uniqueid: str, linkedid: str, call_id: str = "") -> list:
    fields = [
        ("Channel", channel),
        ("ChannelState", "6"),
        ("CallerIDNum", channel.split("/")[1].split("-")[0]),
        ("Context", "agents"),
        ("Exten", "s"),
        ("Uniqueid", uniqueid),
        ("Linkedid", linkedid),
        ("ChanVariable", f"CTI_CALL_ID={call_id}"),
    ]
    return [(prefix + key, value) for key, value in fields]


def ev(name: str, *parts: list, **headers: str) -> Message:
    pairs = [("Event", name), ("Privilege", "call,all"), ("Timestamp", f"{T0:.6f}")]
    for part in parts:
        pairs += part
    pairs += [(key.replace("_", "-"), value) for key, value in headers.items()]
    return Message.from_pairs(pairs)


class Leg:
    """One synthetic channel: ``leg.snap()``, ``leg.snap("Dest")`` for events."""

    def __init__(self, name: str, uniqueid: str, linkedid: str, call_id: str = "") -> None:
        self.name, self.uniqueid, self.linkedid, self.call_id = name, uniqueid, linkedid, call_id

    def snap(self, prefix: str = "") -> list:
        return snapshot(prefix, self.name, self.uniqueid, self.linkedid, self.call_id)

    def new(self) -> Message:
        return ev("Newchannel", snapshot("", self.name, self.uniqueid, self.linkedid, ""))


def queue_call_to(customer: Leg, agent: Leg, bridge: str, queue: str = "support") -> list:
    """Caller queued, one agent leg rung, answered and bridged (as in answered_call)."""
    member = agent.name.rsplit("-", 1)[0]
    return [
        customer.new(),
        ev("QueueCallerJoin", customer.snap(), Queue=queue, Position="1", Count="1"),
        agent.new(),
        ev(
            "AgentCalled",
            customer.snap(),
            agent.snap("Dest"),
            Queue=queue,
            Interface=member,
            MemberName=f"Agent {member[-4:]}",
        ),
        ev("DialBegin", customer.snap(), agent.snap("Dest"), DialString=member),
        ev("DialEnd", customer.snap(), agent.snap("Dest"), DialStatus="ANSWER"),
        ev("AgentConnect", customer.snap(), agent.snap("Dest"), Queue=queue, Interface=member),
        ev("BridgeEnter", agent.snap(), BridgeUniqueid=bridge),
        ev("BridgeEnter", customer.snap(), BridgeUniqueid=bridge),
    ]


@pytest.mark.parametrize("transfer_first", [False, True])
def test_attended_transfer_from_the_phone_follows_the_consult_call(transfer_first: bool) -> None:
    """Synthetic: agent 2001 holds the caller, dials 2003 from the phone (a new call
    with its own Linkedid and no CTI_CALL_ID), then completes the transfer: 2003's leg
    joins the caller's bridge and takes the caller's (older) Linkedid."""
    customer = Leg("PJSIP/trunk-00000001", "100.1", "100.1", "cid-1")
    agent = Leg("PJSIP/2001-00000002", "100.2", "100.1", "cid-1")
    consult = Leg("PJSIP/2001-00000003", "200.3", "200.3")
    target = Leg("PJSIP/2003-00000004", "200.4", "200.3")
    moved = Leg(target.name, target.uniqueid, "100.1")  # its events after the transfer
    messages = [
        *queue_call_to(customer, agent, "B1"),
        ev("Hold", agent.snap()),
        consult.new(),
        target.new(),
        ev("DialBegin", consult.snap(), target.snap("Dest"), DialString="PJSIP/2003"),
        ev("DialEnd", consult.snap(), target.snap("Dest"), DialStatus="ANSWER"),
        ev("BridgeEnter", consult.snap(), BridgeUniqueid="B2"),
        ev("BridgeEnter", target.snap(), BridgeUniqueid="B2"),
    ]
    transfer = ev(
        "AttendedTransfer",
        agent.snap("OrigTransferer"),
        consult.snap("SecondTransferer"),
        customer.snap("Transferee"),
        (moved if not transfer_first else target).snap("TransferTarget"),
        Result="Success",
        DestType="Bridge",
        DestBridgeUniqueid="B1",
    )
    moves = [
        ev("BridgeLeave", agent.snap(), BridgeUniqueid="B1"),
        ev("BridgeLeave", consult.snap(), BridgeUniqueid="B2"),
        ev("BridgeLeave", target.snap(), BridgeUniqueid="B2"),
        ev("BridgeEnter", moved.snap(), BridgeUniqueid="B1"),
    ]
    messages += [transfer, *moves] if transfer_first else [*moves, transfer]
    messages += [
        ev("Hangup", consult.snap(), Cause="16"),
        ev("Hangup", agent.snap(), Cause="16"),
        ev("BridgeLeave", moved.snap(), BridgeUniqueid="B1"),
        ev("Hangup", moved.snap(), Cause="16"),
        ev("Hangup", customer.snap(), Cause="16"),
    ]
    result = replay(messages)
    calls = result.calls()
    assert set(calls) == {"100.1", "200.3"}
    customer_story = story(calls["100.1"])
    assert customer_story[:5] == [
        ("started", "s"),
        ("identified",),
        ("queued", "support", None),
        ("ringing", "PJSIP/2001", "support"),
        ("connected", "PJSIP/2001", "support"),
    ]
    assert ("held", "PJSIP/2001") in customer_story
    consult_started = [e for e in calls["100.1"] if isinstance(e, ConsultStarted)]
    assert [(c.from_agent, c.consult_linkedid) for c in consult_started] == [
        ("PJSIP/2001", "200.3")
    ]
    tail = customer_story[customer_story.index(("consult", "PJSIP/2001", "s")) + 1 :]
    assert ("attended-transfer", "PJSIP/2001", "PJSIP/2003") in tail
    assert ("connected", "PJSIP/2003", None) in tail
    assert tail[-1] == ("ended", ("PJSIP/2001", "PJSIP/2003"))
    assert {e.call_id for e in calls["100.1"][1:]} == {"cid-1"}
    # The consult call was followed too: it rang and connected 2003, lost 2003 to the
    # customer's call, and ended when the agent's consult leg hung up.
    assert story(calls["200.3"]) == [
        ("started", "s"),
        ("ringing", "PJSIP/2003", None),
        ("connected", "PJSIP/2003", None),
        ("left", "PJSIP/2003"),
        ("ended", ("PJSIP/2003",)),
    ]
    assert all(e.call_id is None for e in calls["200.3"])
    assert result.model.size == (0, 0, 0)


def test_local_channel_queue_member() -> None:
    """Synthetic: queue member ``Local/2001@agents/n`` with state interface PJSIP/2001;
    the queue rings ;1, ;2 dials the phone; later the pair is optimised away."""
    customer = Leg("PJSIP/trunk-00000001", "300.1", "300.1", "cid-3")
    one = Leg("Local/2001@agents-0000000a;1", "300.2", "300.1", "cid-3")
    two = Leg("Local/2001@agents-0000000a;2", "300.3", "300.1", "cid-3")
    phone = Leg("PJSIP/2001-0000000b", "300.4", "300.1", "cid-3")
    member = {"Interface": "Local/2001@agents/n", "MemberName": "Agent 2001"}
    messages = [
        Message.from_pairs(
            [
                ("Event", "QueueMemberStatus"),
                ("Queue", "support"),
                ("StateInterface", "PJSIP/2001"),
                *member.items(),
            ]
        ),
        customer.new(),
        ev("QueueCallerJoin", customer.snap(), Queue="support", Position="1"),
        one.new(),
        two.new(),
        ev("AgentCalled", customer.snap(), one.snap("Dest"), Queue="support", **member),
        ev("DialBegin", customer.snap(), one.snap("Dest"), DialString="Local/2001@agents/n"),
        ev("LocalBridge", one.snap("LocalOne"), two.snap("LocalTwo"), LocalOptimization="Yes"),
        phone.new(),
        ev("DialBegin", two.snap(), phone.snap("Dest"), DialString="PJSIP/2001"),
        ev("DialEnd", two.snap(), phone.snap("Dest"), DialStatus="ANSWER"),
        ev("BridgeEnter", phone.snap(), BridgeUniqueid="B2"),
        ev("BridgeEnter", two.snap(), BridgeUniqueid="B2"),
        ev("DialEnd", customer.snap(), one.snap("Dest"), DialStatus="ANSWER"),
        ev("AgentConnect", customer.snap(), one.snap("Dest"), Queue="support", **member),
        ev("BridgeEnter", one.snap(), BridgeUniqueid="B1"),
        ev("BridgeEnter", customer.snap(), BridgeUniqueid="B1"),
        # Optimisation: the phone's leg replaces ;1 in the caller's bridge.
        ev("LocalOptimizationBegin", one.snap("LocalOne"), two.snap("LocalTwo")),
        ev("BridgeLeave", phone.snap(), BridgeUniqueid="B2"),
        ev("BridgeEnter", phone.snap(), BridgeUniqueid="B1", SwapUniqueid="300.2"),
        ev("BridgeLeave", one.snap(), BridgeUniqueid="B1"),
        ev("LocalOptimizationEnd", one.snap("LocalOne"), two.snap("LocalTwo")),
        ev("Hangup", one.snap(), Cause="16"),
        ev("BridgeLeave", two.snap(), BridgeUniqueid="B2"),
        ev("Hangup", two.snap(), Cause="16"),
        ev("BridgeLeave", customer.snap(), BridgeUniqueid="B1"),
        ev("Hangup", customer.snap(), Cause="16"),
        ev("BridgeLeave", phone.snap(), BridgeUniqueid="B1"),
        ev("Hangup", phone.snap(), Cause="16"),
    ]
    result = replay(messages)
    assert story(result.effects) == [
        ("started", "s"),
        ("identified",),
        ("queued", "support", None),
        ("ringing", "PJSIP/2001", "support"),  # one ring, though ;1 and the phone both ring
        ("connected", "PJSIP/2001", "support"),  # once, before and after the optimisation
        ("ended", ("PJSIP/2001",)),
        ("left", "PJSIP/2001"),
    ]
    ringing, connected = result.of(AgentRinging)[0], result.of(AgentConnected)[0]
    assert ringing.channel == one.name and ringing.member_name == "Agent 2001"
    assert connected.channel == phone.name and connected.via == (one.name, two.name)
    assert states(result.effects) == [
        ("queued", None),
        ("ringing", "PJSIP/2001"),
        ("talking", "PJSIP/2001"),
        ("ended", None),
    ]


def test_a_linkedid_change_moves_the_channel_and_merges_an_emptied_call() -> None:
    customer = Leg("PJSIP/trunk-00000001", "400.1", "400.1", "cid-4")
    agent = Leg("PJSIP/2001-00000002", "400.2", "400.1", "cid-4")
    other = Leg("PJSIP/2002-00000003", "500.3", "500.3")
    messages = [*queue_call_to(customer, agent, "B1"), other.new()]
    result = replay(messages)
    assert result.model.size[0] == 2
    moved = Leg(other.name, other.uniqueid, "400.1")
    effects = result.model.apply(ev("BridgeEnter", moved.snap(), BridgeUniqueid="B1"))
    merged = [e for e in effects if isinstance(e, CallMerged)]
    assert [(m.linkedid, m.into_linkedid, m.into_call_id) for m in merged] == [
        ("500.3", "400.1", "cid-4")
    ]
    connected = [e.agent for e in effects if isinstance(e, AgentConnected)]
    assert connected == ["PJSIP/2002"]  # now in the caller's bridge (a three-way call)
    assert result.model.size[0] == 1
    # 500.3 is no call's Linkedid any more, only the Uniqueid of a leg of 400.1.
    assert result.model.call("500.3") is result.model.call("400.1")
    assert "500.3" not in {c.linkedid for c in result.model.calls()}


def test_a_call_with_another_linkedid_but_the_same_call_id_is_merged() -> None:
    customer = Leg("PJSIP/trunk-00000001", "600.1", "600.1", "cid-6")
    stray = Leg("PJSIP/2004-00000009", "700.9", "700.9", "cid-6")
    result = replay([*queue_call_to(customer, Leg("PJSIP/2001-2", "600.2", "600.1"), "B")])
    model = result.model
    model.apply(stray.new())
    effects = model.apply(ev("Newstate", stray.snap()))  # now it shows CTI_CALL_ID
    assert [type(e) for e in effects if not isinstance(e, CallStateChanged)] == [CallMerged]
    assert model.call("700.9") is model.call("cid-6") is model.call("600.1")


# -- reconnect: reset and snapshot -------------------------------------------------------------
def core_show_channel(msg: Message, bridge: str = "", application: str = "") -> Message:
    """A CoreShowChannel list event for the channel snapshot in ``msg`` (synthetic, with
    the Asterisk 22 field names: snapshot + BridgeId, Application, ApplicationData)."""
    keys = ("channel", "channelstate", "calleridnum", "context", "exten", "uniqueid")
    pairs = [("Event", "CoreShowChannel"), ("ActionID", "snap-1")]
    pairs += [(key, msg.fields[key]) for key in keys]
    pairs += [("Linkedid", msg.fields["linkedid"])]
    pairs += [("ChanVariable", value) for value in msg.getall("chanvariable")]
    app, _, data = application.partition("(")
    pairs += [("BridgeId", bridge), ("Application", app), ("ApplicationData", data.rstrip(")"))]
    return Message.from_pairs(pairs)


def complete(name: str) -> Message:
    return Message.from_pairs([("Event", name), ("ActionID", "snap-1"), ("EventList", "Complete")])


def test_reconnect_mid_call_rebuilds_from_core_show_channels() -> None:
    messages = ami_replay.parse(ami_replay.load("answered_call"))
    cut = [i for i, m in enumerate(messages) if m.name == "BridgeEnter"][-1]
    model = CallModel()
    replay(messages[:cut], model)  # the old connection saw part of the call ...
    model.reset()  # ... then was lost; the new one starts with a snapshot
    assert model.size == (0, 0, 0) and model.restoring
    bridge = messages[cut]["bridgeuniqueid"]
    agent_leg = next(m for m in messages[:cut] if m.name == "BridgeEnter")
    snapshot_messages = [
        core_show_channel(messages[cut], bridge, "Queue(support,t,,,300)"),
        core_show_channel(agent_leg, bridge, "AppQueue((Outgoing Line))"),
    ]
    assert replay(snapshot_messages, model).effects == []  # nothing until the list ends
    restored = model.apply(complete("CoreShowChannelsComplete"))
    assert [type(e) for e in restored] == [CallRestored]
    (call,) = restored
    assert isinstance(call, CallRestored)
    assert (call.call_id, call.linkedid, call.channel) == (
        "5725ac94-715c-4685-bb1a-4828333e4e47",
        "1795410888.0",
        "PJSIP/trunk-00000000",
    )
    assert (call.state, call.agent, call.agents) == (
        CallState.TALKING,
        "PJSIP/2001",
        ("PJSIP/2001",),
    )
    assert not model.restoring
    # The live events after the snapshot continue the same call without surprises.
    rest = replay(messages[cut + 1 :], model)
    assert story(rest.effects) == [("ended", ("PJSIP/2001",)), ("left", "PJSIP/2001")]
    assert model.size == (0, 0, 0)


def test_reconnect_while_queued_takes_queue_and_priority_from_queue_status() -> None:
    messages = ami_replay.parse(ami_replay.load("abandoned_call"))
    join = next(i for i, m in enumerate(messages) if m.name == "QueueCallerJoin")
    model = CallModel()
    model.reset()
    replay([core_show_channel(messages[join], "", "Queue(collections,t,,,300)")], model)
    (restored,) = model.apply(complete("CoreShowChannelsComplete"))
    assert isinstance(restored, CallRestored)
    assert (restored.state, restored.queue) == (CallState.QUEUED, "collections")
    entry = Message.from_pairs(
        [
            ("Event", "QueueEntry"),
            ("Queue", "collections"),
            ("Position", "1"),
            ("Channel", messages[join]["channel"]),
            ("Uniqueid", messages[join]["uniqueid"]),
            ("Wait", "1"),
            ("Priority", "7"),
        ]
    )
    member = Message.from_pairs(
        [
            ("Event", "QueueMember"),
            ("Queue", "collections"),
            ("Name", "Agent 2005"),
            ("Location", "PJSIP/2005"),
            ("StateInterface", "PJSIP/2005"),
        ]
    )
    effects = replay([entry, member, complete("QueueStatusComplete")], model).effects
    assert [(e.queue, e.priority) for e in effects if isinstance(e, CallQueued)] == [
        ("collections", 7)
    ]
    rest = replay(messages[join + 1 :], model)
    assert story(rest.effects) == [
        ("ringing", "PJSIP/2005", "collections"),
        ("ring-cancelled", "PJSIP/2005", "CANCEL"),
        ("abandoned", "collections"),
        ("ended", ()),
    ]


def test_snapshot_skips_channels_that_hung_up_meanwhile() -> None:
    messages = ami_replay.parse(ami_replay.load("answered_call"))
    newchannel = messages[3]
    assert newchannel.name == "Newchannel"
    model = CallModel()
    model.reset()
    model.apply(newchannel)
    model.apply(ev("Hangup", [(k, v) for k, v in newchannel.items() if k != "Event"]))
    model.apply(core_show_channel(newchannel))  # listed before its Hangup was sent
    assert model.apply(complete("CoreShowChannelsComplete")) == []
    assert model.size == (0, 0, 0)


# -- strictness of the replay itself ------------------------------------------------------------
def test_replay_fails_on_an_event_the_model_does_not_know() -> None:
    customer = Leg("PJSIP/trunk-00000001", "800.1", "800.1")
    with pytest.raises(AssertionError, match="unknown events"):
        replay([customer.new(), ev("BrandNewEvent", customer.snap())])


def test_replay_fails_on_an_event_after_the_channels_hangup() -> None:
    customer = Leg("PJSIP/trunk-00000001", "800.1", "800.1")
    with pytest.raises(AssertionError, match="late events"):
        replay([customer.new(), ev("Hangup", customer.snap()), ev("Newstate", customer.snap())])


def test_replay_fails_on_a_channel_first_seen_mid_call() -> None:
    agent = Leg("PJSIP/2001-00000002", "800.2", "800.1")
    with pytest.raises(AssertionError, match="late channels"):
        replay([ev("BridgeEnter", agent.snap(), BridgeUniqueid="B")])


def test_responses_and_system_events_are_not_calls() -> None:
    model = CallModel()
    assert model.apply(Message.from_pairs([("Response", "Success"), ("Ping", "Pong")])) == []
    assert model.apply(Message.from_pairs([("Event", "PeerStatus"), ("Peer", "x")])) == []
    assert (model.stats.ignored, model.stats.non_call) == (1, 1)


def test_effects_are_plain_frozen_dataclasses() -> None:
    effect = replay_fixture("answered_call").effects[0]
    assert dataclasses.is_dataclass(effect)
    with pytest.raises(dataclasses.FrozenInstanceError):
        effect.call_id = "x"  # type: ignore[misc]


# -- leaving a queue: a timeout is not an abandon ------------------------------------------
CALLER = Leg("PJSIP/trunk-00000001", "1800000000.1", "1800000000.1", "call-1")


def _queue_story(*middle: Message) -> list[Effect]:
    model = CallModel()
    effects: list[Effect] = []
    for msg in [
        CALLER.new(),
        ev("QueueCallerJoin", CALLER.snap(), Queue="support", Position="1", Count="1"),
        *middle,
        ev("Hangup", CALLER.snap(), Cause="16", Cause_txt="Normal Clearing"),
    ]:
        effects += model.apply(msg)
    return effects


def _abandon() -> Message:
    return ev("QueueCallerAbandon", CALLER.snap(), Queue="support", Position="1",
              OriginalPosition="1", HoldTime="4")  # fmt: skip


def _leave(queue: str = "support") -> Message:
    return ev("QueueCallerLeave", CALLER.snap(), Queue=queue, Position="1", Count="0")


def test_a_queue_timeout_is_no_abandon_and_says_timeout() -> None:
    """app_queue reports its timeout with QueueCallerAbandon on a channel nobody asked
    to hang up; the dialplan goes on, and hangs up later (SoftHangupRequest)."""
    later = ev("SoftHangupRequest", CALLER.snap(), Cause="16")
    effects = _queue_story(_abandon(), _leave(), later)
    assert not [e for e in effects if isinstance(e, CallAbandoned)]
    (left,) = [e for e in effects if isinstance(e, CallLeftQueue)]
    assert (left.queue, left.reason) == ("support", "timeout")
    assert next(e for e in effects if isinstance(e, CallEnded)).abandoned is False


def test_a_queue_timeout_overflowing_to_another_queue() -> None:
    join = ev("QueueCallerJoin", CALLER.snap(), Queue="overflow", Position="1", Count="1")
    effects = _queue_story(_abandon(), _leave(), join, _leave("overflow"))
    left = [(e.queue, e.reason) for e in effects if isinstance(e, CallLeftQueue)]
    assert left == [("support", "timeout"), ("overflow", "exited")]


@pytest.mark.parametrize("request_event", ["HangupRequest", "SoftHangupRequest"])
def test_a_caller_who_hung_up_first_abandoned(request_event: str) -> None:
    hangup = ev(request_event, CALLER.snap(), Cause="16")
    effects = _queue_story(hangup, _abandon(), _leave())
    assert [e.queue for e in effects if isinstance(e, CallAbandoned)] == ["support"]
    (left,) = [e for e in effects if isinstance(e, CallLeftQueue)]
    assert left.reason == "abandoned"
    assert next(e for e in effects if isinstance(e, CallEnded)).abandoned is True
