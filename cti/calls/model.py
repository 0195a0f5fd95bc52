"""The call model: AMI events in, :mod:`cti.calls.effects` out. Plain Python.

``CallModel.apply(message)`` takes every message of one AMI connection in arrival order
and returns what changed. It has no I/O and no clock (times come from each event's
``Timestamp``), so it is driven in tests by recorded traffic (tests/fixtures/ami).

How a call is followed (shared/asterisk-brief.md §2 "What identifies one customer
call", §7):

* A **call** is created by the first channel seen with a Linkedid no live call has.
  That channel is the call's *origin* (the caller's trunk leg for an inbound call).
  Every later channel with the same Linkedid joins it, and so does any channel whose
  Linkedid changes to one of the call's (Asterisk gives every channel of a bridge the
  oldest Linkedid). The call is found by Uniqueid → channel → call, by Linkedid, and by
  ``CTI_CALL_ID`` once a channel shows it (``channelvars`` in manager.conf; empty on a
  leg's first ``Newchannel``). A call with another Linkedid that turns out to carry a
  known ``CTI_CALL_ID`` is merged into that call.
* **Who the caller talks to** comes from the topology, not from queue events: bridges
  (``BridgeEnter`` / ``BridgeLeave`` / ``BridgeMerge`` by BridgeUniqueid) and Local
  channel pairs (``;1`` ↔ ``;2``, by name and by ``LocalBridge``). Every non-Local leg
  reachable from the origin through bridges and Local pairs is *connected*; that is how
  the customer is known to talk to agent 2003 through ``Local/2003@agents-…;1/;2`` after
  an attended transfer. Queue events (``AgentCalled``, ``AgentConnect``) only name the
  queue and the member. A member is named by its state interface once a
  ``QueueMemberStatus`` / ``QueueMember`` told it; until then a Local member
  (``Local/2006@agents/n``) is the phone its ;2 dials, and its ``AgentRinging`` waits
  for that dial (tests/fixtures/ami/local_member.txt).
* **Transfers**: ``BlindTransfer`` (SIP REFER or AMI action; the caller's channel runs
  the new extension and keeps its ids), ``AttendedTransfer`` (the target may be a Local
  ;1, or a leg of the agent's own consult call, which then moves into this call; the
  snapshots of a transfer event may predate events already seen, so their Linkedid
  never moves a channel: tests/fixtures/ami/attended_transfer_phone.txt). A new
  channel that appears in a call while an agent talks to the caller (AMI/DTMF
  ``Atxfer``), or a new call from the phone of an agent who holds the caller, is
  reported as :class:`~cti.calls.effects.ConsultStarted`.
* **Memory is bounded**: a channel is dropped at its ``Hangup``, a bridge when empty or
  destroyed, a call when its last channel is gone. Recently hung-up Uniqueids and ended
  Linkedids are remembered in bounded FIFOs only to recognise late events.

After a reconnect the adapter calls :meth:`CallModel.reset` and asks Asterisk for
``CoreShowChannels`` and ``QueueStatus``; feeding their list events through
:meth:`CallModel.apply` (with any live events, in arrival order) rebuilds the calls, and
``CoreShowChannelsComplete`` emits one :class:`~cti.calls.effects.CallRestored` each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cti.ami.protocol import Message, MessageKind
from cti.calls.effects import (
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
    CallQueued,
    CallRestored,
    CallStarted,
    CallState,
    CallStateChanged,
    CallTransferred,
    CallUnheld,
    ConsultStarted,
    Effect,
    TransferKind,
)

_EVENT = MessageKind.EVENT

# Events that only tell us a channel exists / what its snapshot says now.
_TOUCH_ONLY = frozenset(
    {
        "Newstate",
        "NewCallerid",
        "NewConnectedLine",
        "NewAccountCode",
        "DialState",
        "HangupRequest",
        "SoftHangupRequest",
        "MusicOnHoldStart",
        "MusicOnHoldStop",
        "VarSet",
        "Newexten",
        "AGIExecStart",
        "AGIExecEnd",
        "AsyncAGIStart",
        "AsyncAGIExec",
        "AsyncAGIEnd",
        "DTMFBegin",
        "DTMFEnd",
        "AgentComplete",
        "AgentDump",
        "ChannelTalkingStart",
        "ChannelTalkingStop",
        "MixMonitorStart",
        "MixMonitorStop",
        "MixMonitorMute",
        "LocalOptimizationBegin",
        "LocalOptimizationEnd",
        "UserEvent",
        "ChanSpyStart",
        "ChanSpyStop",
        "Pickup",
        "Flash",
        "Wink",
    }
)

# Events about the system, queues' members or devices: no call in them.
_NOT_CALLS = frozenset(
    {
        "FullyBooted",
        "QueueMemberStatus",
        "QueueMemberAdded",
        "QueueMemberRemoved",
        "QueueMemberPause",
        "QueueMemberPenalty",
        "QueueMemberRinginuse",
        "QueueParams",
        "QueueStatusComplete",
        "QueueSummary",
        "QueueSummaryComplete",
        "QueueMember",
        "DeviceStateChange",
        "ExtensionStatus",
        "PresenceStateChange",
        "PeerStatus",
        "ContactStatus",
        "Registry",
        "Reload",
        "Shutdown",
        "SuccessfulAuth",
        "ChallengeSent",
        "RTCPSent",
        "RTCPReceived",
        "BridgeCreate",
        "BridgeInfoComplete",
        "BridgeListComplete",
        "BridgeVideoSourceUpdate",
        "Cdr",
        "LoadAverageLimit",
        "ModuleLoadReport",
    }
)


@dataclass(frozen=True, slots=True)
class _Snap:
    """Header names of one (prefixed) channel snapshot in an event."""

    uniqueid: str
    linkedid: str
    channel: str
    chanvariable: str
    prefix: str
    callerid: str
    context: str
    exten: str
    state: str

    @classmethod
    def of(cls, prefix: str) -> _Snap:
        p = prefix.lower()
        return cls(
            p + "uniqueid",
            p + "linkedid",
            p + "channel",
            p + "chanvariable",
            prefix,
            p + "calleridnum",
            p + "context",
            p + "exten",
            p + "channelstate",
        )


_SNAP = _Snap.of("")
_DEST = _Snap.of("Dest")
_TRANSFERER = _Snap.of("Transferer")
_TRANSFEREE = _Snap.of("Transferee")
_ORIG_TRANSFERER = _Snap.of("OrigTransferer")
_SECOND_TRANSFERER = _Snap.of("SecondTransferer")
_TRANSFER_TARGET = _Snap.of("TransferTarget")
_LOCAL_ONE = _Snap.of("LocalOne")
_LOCAL_TWO = _Snap.of("LocalTwo")


def default_agent_of(channel: str) -> str | None:
    """The device of a channel name (``PJSIP/2001-0000000e`` → ``PJSIP/2001``); ``None``
    for Local channels, which are plumbing, never a party. A deployment whose trunks can
    be dialled passes its own function that returns ``None`` for trunk devices too."""
    if channel.startswith("Local/"):
        return None
    dash = channel.rfind("-")
    return channel[:dash] if dash > 0 else channel or None


def _local_base(name: str) -> str | None:
    """``Local/2003@agents-00000000;1`` → ``Local/2003@agents-00000000``."""
    if len(name) > 2 and name[-2] == ";" and name[-1] in "12":
        return name[:-2]
    return None


def _local_exten(name: str) -> str | None:
    """``Local/2003@agents-00000000;1`` → ``2003``."""
    at = name.find("@")
    return name[6:at] if name.startswith("Local/") and at > 6 else None


def _by_connection(channel: Channel) -> int:
    return channel.connected_seq


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


class Channel:
    """One live channel (leg) as the model knows it."""

    __slots__ = (
        "agent",
        "answered",
        "bridge",
        "call",
        "call_id",
        "connected",
        "connected_seq",
        "is_local",
        "linkedid",
        "member_name",
        "name",
        "peer",
        "queue",
        "ring_silent",
        "ringing",
        "uniqueid",
    )

    def __init__(self, uniqueid: str, name: str, linkedid: str, call: Call) -> None:
        self.uniqueid = uniqueid
        self.name = name
        self.linkedid = linkedid
        self.call = call
        self.call_id: str | None = None  # CTI_CALL_ID as this channel last showed it
        self.is_local = name.startswith("Local/")
        self.agent: str | None = None  # who this leg is (None: Local, non-agent)
        self.member_name: str | None = None
        self.queue: str | None = None  # the queue that called this leg
        self.peer: Channel | None = None  # the other half of a Local pair
        self.bridge: str | None = None
        self.ringing = False  # dialled as an agent, not yet connected / given up
        self.ring_silent = False  # ringing on behalf of a Local ;1 (no own effects)
        self.answered = False
        self.connected = False  # AgentConnected was emitted for this leg in its call
        self.connected_seq = 0  # order of connection, for "the agent talking now"

    def __repr__(self) -> str:
        return f"<Channel {self.name} {self.uniqueid} call={self.call.linkedid}>"


@dataclass(slots=True, eq=False)
class Transfer:
    kind: TransferKind
    from_agent: str | None
    to: str | None
    at: float | None


@dataclass(slots=True, eq=False)
class Call:
    """One call: the caller's channel and every leg that shares its Linkedid."""

    linkedid: str
    origin: str  # Uniqueid of the first channel (the caller)
    origin_name: str
    started_at: float | None
    call_id: str | None = None
    linkedids: set[str] = field(default_factory=set)
    channels: dict[str, Channel] = field(default_factory=dict)
    queue: str | None = None
    position: int | None = None
    priority: int | None = None
    in_queue: bool = False
    agents: list[str] = field(default_factory=list)  # connected agents, in order
    talking: list[Channel] = field(default_factory=list)  # connected to the caller now
    transfers: list[Transfer] = field(default_factory=list)
    held: set[str] = field(default_factory=set)  # Uniqueids that put the call on hold
    blind_pending: bool = False
    consult: bool = False
    consult_legs: set[str] = field(default_factory=set)
    consult_calls: set[str] = field(default_factory=set)  # Linkedids of consult calls
    consult_for: Call | None = None  # for a consult call: the call it consults for
    progressed: bool = False  # was queued / rang / talked at least once
    ended: bool = False
    ended_at: float | None = None
    abandoned: bool = False
    restoring: bool = False  # rebuilt from a snapshot, CallRestored not yet emitted
    state: CallState = CallState.ROUTING
    state_agent: str | None = None

    @property
    def key(self) -> str:
        """The stable key: CTI_CALL_ID when known, else the Linkedid."""
        return self.call_id or self.linkedid

    @property
    def agent(self) -> str | None:
        return self.state_agent


@dataclass(slots=True)
class ModelStats:
    events: int = 0
    ignored: int = 0  # responses and other non-event messages
    non_call: int = 0  # events with no call in them (queue members, system)
    unknown: dict[str, int] = field(default_factory=dict)  # unhandled events with a channel
    late_channels: int = 0  # channels first seen on an event other than their creation
    late_events: int = 0  # events for a channel already hung up / a call already forgotten
    unattributed: int = 0  # call events the model could not tie to a call
    call_id_conflicts: int = 0  # a channel showed a CTI_CALL_ID other than its call's
    snapshot_misses: int = 0  # QueueEntry for a channel CoreShowChannels did not list


AgentOf = Callable[[str], str | None]


class CallModel:
    """Follows every call on one Asterisk from its AMI events (see module docstring).

    ``call_id_variable`` / ``priority_variable`` name the channel variables read from
    ``ChanVariable`` (manager.conf ``channelvars``): the route's call id and, when listed
    there too, its queue priority. ``agent_of`` maps a channel name to the agent (device)
    it reaches, or ``None`` for Local channels and devices that are not agents.
    """

    def __init__(
        self,
        *,
        call_id_variable: str = "CTI_CALL_ID",
        priority_variable: str = "CTI_PRIORITY",
        agent_of: AgentOf = default_agent_of,
        max_remembered: int = 4096,
        max_members: int = 4096,
    ) -> None:
        self._cid_var = call_id_variable
        self._cid_head = call_id_variable + "="
        self._cid_len = len(self._cid_head)
        self._prio_var = priority_variable
        self._agent_of = agent_of
        self._max_remembered = max_remembered
        self._max_members = max_members
        self.stats = ModelStats()
        self._handlers: dict[str, Callable[[Message], None]] = {
            "Newchannel": self._on_newchannel,
            "Hangup": self._on_hangup,
            "Rename": self._on_rename,
            "DialBegin": self._on_dial_begin,
            "DialEnd": self._on_dial_end,
            "AgentCalled": self._on_agent_called,
            "AgentRingNoAnswer": self._on_agent_ring_no_answer,
            "AgentConnect": self._on_agent_connect,
            "QueueCallerJoin": self._on_queue_caller_join,
            "QueueCallerLeave": self._on_queue_caller_leave,
            "QueueCallerAbandon": self._on_queue_caller_abandon,
            "BridgeEnter": self._on_bridge_enter,
            "BridgeLeave": self._on_bridge_leave,
            "BridgeMerge": self._on_bridge_merge,
            "BridgeDestroy": self._on_bridge_destroy,
            "LocalBridge": self._on_local_bridge,
            "Hold": self._on_hold,
            "Unhold": self._on_unhold,
            "BlindTransfer": self._on_blind_transfer,
            "AttendedTransfer": self._on_attended_transfer,
            "CoreShowChannel": self._on_core_show_channel,
            "CoreShowChannelsComplete": self._on_core_show_channels_complete,
            "QueueEntry": self._on_queue_entry,
            "QueueMember": self._on_queue_member,
            "QueueMemberStatus": self._on_queue_member_status,
            "QueueMemberAdded": self._on_queue_member_status,
        }
        self._init_state()

    def _init_state(self) -> None:
        self._channels: dict[str, Channel] = {}
        self._calls: dict[str, Call] = {}  # every Linkedid of a live call → the call
        self._by_call_id: dict[str, Call] = {}
        self._bridges: dict[str, set[Channel]] = {}
        self._local_halves: dict[str, Channel] = {}  # Local base name → a half
        # agent → its legs holding a call, oldest hold first (a dict as an ordered set)
        self._holding: dict[str, dict[Channel, None]] = {}
        self._members: dict[str, tuple[str | None, str | None]] = {}
        self._dead: dict[str, None] = {}  # recently hung-up Uniqueids (FIFO)
        self._ended: dict[str, None] = {}  # recently forgotten Linkedids (FIFO)
        self._restoring = False
        self._seq = 0
        self._out: list[Effect] = []
        self._dirty: list[Call] = []
        self._msg: Message | None = None
        self._at_cache: float | None = None
        self._at_done = False

    # -- public API ------------------------------------------------------------------
    def apply(self, msg: Message) -> list[Effect]:
        """Apply one AMI message; return the effects, in order."""
        if msg.kind is not _EVENT:
            self.stats.ignored += 1
            return []
        self.stats.events += 1
        self._msg = msg
        self._at_done = False
        out: list[Effect] = []
        self._out = out
        name = msg.name
        handler = self._handlers.get(name)
        if handler is not None:
            handler(msg)
        elif name in _TOUCH_ONLY:
            if self._touch(msg, _SNAP) is None:
                self._unattributed(msg)
        elif name in _NOT_CALLS:
            self.stats.non_call += 1
        elif "uniqueid" in msg.fields:
            self.stats.unknown[name] = self.stats.unknown.get(name, 0) + 1
            self._touch(msg, _SNAP)
        else:
            self.stats.non_call += 1
        if self._dirty:
            self._flush_states()
        return out

    def reset(self) -> None:
        """Forget every call (the AMI connection was lost; queue members are kept).

        Until the next ``CoreShowChannelsComplete`` the model is *restoring*: a call it
        learns from ``CoreShowChannel``, or from a live event about a channel it has not
        seen created, emits nothing until then, when it is reported once as
        :class:`CallRestored`. A call whose ``Newchannel`` arrives meanwhile is new and
        reported as usual. ``QueueEntry`` / ``QueueMember`` (QueueStatus) fill in queue,
        position, priority and member names whenever they arrive."""
        members = self._members  # queue members outlive a reconnect; QueueStatus refreshes
        self._init_state()
        self._members = members
        self._restoring = True

    @property
    def restoring(self) -> bool:
        return self._restoring

    def calls(self) -> Iterator[Call]:
        seen: set[int] = set()
        for call in self._calls.values():
            if id(call) not in seen:
                seen.add(id(call))
                yield call

    def call(self, key: str) -> Call | None:
        """A live call by CTI_CALL_ID, by any of its Linkedids, or by a channel's Uniqueid."""
        call = self._by_call_id.get(key) or self._calls.get(key)
        if call is None:
            channel = self._channels.get(key)
            call = channel.call if channel is not None else None
        return call

    def channel(self, uniqueid: str) -> Channel | None:
        return self._channels.get(uniqueid)

    @property
    def size(self) -> tuple[int, int, int]:
        """(calls, channels, bridges) held now: for memory-bound tests and metrics."""
        return len({id(c) for c in self._calls.values()}), len(self._channels), len(self._bridges)

    # -- effects -----------------------------------------------------------------------
    def _at(self) -> float | None:
        if not self._at_done:
            self._at_done = True
            raw = self._msg.fields.get("timestamp") if self._msg is not None else None
            try:
                self._at_cache = float(raw) if raw else None
            except ValueError:
                self._at_cache = None
        return self._at_cache

    def _emit(self, cls: type[Effect], call: Call, **kw: Any) -> None:
        if call.restoring:
            return
        self._out.append(cls(call_id=call.call_id, linkedid=call.linkedid, at=self._at(), **kw))

    def _mark(self, call: Call) -> None:
        if call not in self._dirty:
            self._dirty.append(call)

    def _flush_states(self) -> None:
        dirty, self._dirty = self._dirty, []
        for call in dirty:
            state, agent = self._state_of(call)
            if state is call.state and agent == call.state_agent:
                continue
            call.state = state
            call.state_agent = agent
            if state is not CallState.ROUTING:
                call.progressed = True
            self._emit(CallStateChanged, call, state=state, agent=agent)

    def _state_of(self, call: Call) -> tuple[CallState, str | None]:
        if call.ended:
            return CallState.ENDED, None
        if call.blind_pending or call.consult:
            return CallState.TRANSFERRING, None
        talking = call.talking
        if call.held:
            for channel in talking:
                if channel.uniqueid in call.held:
                    return CallState.ON_HOLD, channel.agent
            if call.origin in call.held:
                return CallState.ON_HOLD, talking[-1].agent if talking else None
        if talking:
            return CallState.TALKING, talking[-1].agent
        ringing = None
        for channel in call.channels.values():
            if channel.ringing and not channel.ring_silent and channel.agent is not None:
                ringing = channel
        if ringing is not None:
            return CallState.RINGING, ringing.agent
        if call.in_queue:
            return CallState.QUEUED, None
        if call.progressed:
            return call.state, call.state_agent  # idle between two steps: keep the last
        return CallState.ROUTING, None

    def _unattributed(self, msg: Message) -> None:
        # A call event whose channel we could not place. Events for channels that already
        # hung up are counted as late_events by _touch; this is anything else.
        if "uniqueid" in msg.fields and msg.fields["uniqueid"] not in self._dead:
            self.stats.unattributed += 1

    # -- channels and calls ------------------------------------------------------------
    def _touch(
        self, msg: Message, snap: _Snap, create: bool = False, relink: bool = True
    ) -> Channel | None:
        """The channel of one snapshot in ``msg``, created if new, updated otherwise.

        ``relink=False`` for snapshots that may be older than events already seen: a
        transfer event describes the parties as they were when the transfer started
        (observed, tests/fixtures/ami/attended_transfer_phone.txt: ``AttendedTransfer``
        comes after the target's ``BridgeEnter`` with the caller's Linkedid, yet shows
        the target's old Linkedid). Their Linkedid must not move a channel back."""
        fields = msg.fields
        uniqueid = fields.get(snap.uniqueid)
        if not uniqueid:
            return None
        channel = self._channels.get(uniqueid)
        if channel is None:
            if uniqueid in self._dead:
                self.stats.late_events += 1
                return None
            linkedid = fields.get(snap.linkedid) or uniqueid
            if not create and linkedid in self._ended and linkedid not in self._calls:
                self.stats.late_events += 1  # out of order, after its call was over
                return None
            if not create and not self._restoring:
                self.stats.late_channels += 1
            channel = self._new_channel(msg, snap, uniqueid, linkedid, create)
        elif relink:
            linkedid = fields.get(snap.linkedid)
            if linkedid and linkedid != channel.linkedid:
                self._relink(channel, linkedid)
        first = fields.get(snap.chanvariable)
        if first is not None:
            if first.startswith(self._cid_head):
                call_id = first[self._cid_len :]
            else:
                call_id = msg.variable(self._cid_var, snap.prefix)
            if call_id and call_id != channel.call_id:
                channel.call_id = call_id
                self._identify(channel, call_id)
        return channel

    def _new_channel(
        self, msg: Message, snap: _Snap, uniqueid: str, linkedid: str, live: bool
    ) -> Channel:
        fields = msg.fields
        name = fields.get(snap.channel) or uniqueid
        call = self._calls.get(linkedid)
        new_call = call is None
        if call is None:
            call = Call(linkedid=linkedid, origin=uniqueid, origin_name=name, started_at=self._at())
            call.linkedids.add(linkedid)
            call.restoring = self._restoring and not live
            self._calls[linkedid] = call
        elif call.restoring and uniqueid == linkedid:
            call.origin, call.origin_name = uniqueid, name  # the real originator, late
        channel = Channel(uniqueid, name, linkedid, call)
        self._channels[uniqueid] = channel
        call.channels[uniqueid] = channel
        if channel.is_local:
            base = _local_base(name)
            if base is not None:
                other = self._local_halves.pop(base, None)
                if other is not None and other.uniqueid in self._channels:
                    channel.peer, other.peer = other, channel
                else:
                    self._local_halves[base] = channel
        else:
            channel.agent = self._agent_of(name)
        if new_call:
            self._emit(
                CallStarted,
                call,
                channel=name,
                caller=fields.get(snap.callerid),
                context=fields.get(snap.context),
                exten=fields.get(snap.exten),
            )
            self._mark(call)
            if live and channel.agent is not None:
                self._maybe_phone_consult(channel, msg, snap)
        elif live and not call.restoring:
            self._maybe_consult_leg(channel, msg, snap)
        return channel

    def _maybe_consult_leg(self, channel: Channel, msg: Message, snap: _Snap) -> None:
        """A new leg in a call where an agent talks to (or holds) the caller, not dialled
        by a queue or a blind transfer: the consult leg of an AMI / DTMF Atxfer."""
        call = channel.call
        if call.consult:
            call.consult_legs.add(channel.uniqueid)
            return
        if call.ended or call.in_queue or call.blind_pending:
            return
        talking = call.talking
        if not talking and not call.held:
            return
        if channel.peer is not None and channel.peer.uniqueid in call.consult_legs:
            return
        call.consult = True
        call.consult_legs.add(channel.uniqueid)
        from_agent = talking[-1].agent if talking else self._held_agent(call)
        to = _local_exten(channel.name) if channel.is_local else msg.fields.get(snap.exten)
        self._emit(
            ConsultStarted,
            call,
            from_agent=from_agent,
            channel=channel.name,
            to=to,
            consult_linkedid=None,
        )
        self._mark(call)

    def _maybe_phone_consult(self, channel: Channel, msg: Message, snap: _Snap) -> None:
        """A new call from an agent's phone while that agent holds a caller: a consult.

        If the agent holds several calls, the consult is for the one held last (a phone
        puts the caller on hold, then dials; observed when two captures of agent 2001's
        attended transfers are interleaved)."""
        legs = self._holding.get(channel.agent or "")
        if not legs:
            return
        for leg in reversed(legs):
            parent = leg.call
            if leg is channel or parent is channel.call or parent.ended:
                continue
            if leg.connected:
                consult = channel.call
                consult.consult_for = parent
                parent.consult = True
                parent.consult_calls.add(consult.linkedid)
                self._emit(
                    ConsultStarted,
                    parent,
                    from_agent=channel.agent,
                    channel=channel.name,
                    to=msg.fields.get(snap.exten),
                    consult_linkedid=consult.linkedid,
                )
                self._mark(parent)
                return

    def _release_hold(self, channel: Channel) -> None:
        channel.call.held.discard(channel.uniqueid)
        legs = self._holding.get(channel.agent or "")
        if legs is not None:
            legs.pop(channel, None)
            if not legs:
                del self._holding[channel.agent or ""]

    def _held_agent(self, call: Call) -> str | None:
        for uniqueid in call.held:
            channel = call.channels.get(uniqueid)
            if channel is not None and channel.agent is not None:
                return channel.agent
        return None

    def _identify(self, channel: Channel, call_id: str) -> None:
        call = channel.call
        if call.call_id == call_id:
            return
        if call.call_id is not None:
            self.stats.call_id_conflicts += 1
            return
        owner = self._by_call_id.get(call_id)
        if owner is not None and owner is not call:
            self._merge(call, owner)
            return
        call.call_id = call_id
        self._by_call_id[call_id] = call
        self._emit(CallIdentified, call)

    def _relink(self, channel: Channel, linkedid: str) -> None:
        """The channel's Linkedid changed (it joined a bridge with an older call)."""
        channel.linkedid = linkedid
        old = channel.call
        target = self._calls.get(linkedid)
        if target is None:
            old.linkedids.add(linkedid)
            self._calls[linkedid] = old
            return
        if target is not old:
            self._move(channel, target)

    def _move(self, channel: Channel, target: Call) -> None:
        old = channel.call
        if channel.connected:
            self._emit(AgentLeft, old, agent=channel.agent or channel.name, channel=channel.name)
            channel.connected = False
        self._release_hold(channel)
        del old.channels[channel.uniqueid]
        old.consult_legs.discard(channel.uniqueid)
        channel.call = target
        target.channels[channel.uniqueid] = channel
        self._topology(target)
        self._mark(target)
        if not old.channels:
            self._emit(CallMerged, old, into_call_id=target.call_id, into_linkedid=target.linkedid)
            old.ended = True
            self._forget(old)
        else:
            if channel.uniqueid == old.origin and not old.ended:
                self._end(old, None, None)
            self._topology(old)
            self._mark(old)

    def _merge(self, call: Call, into: Call) -> None:
        """``call`` is part of ``into`` (same CTI_CALL_ID): move everything over."""
        for channel in list(call.channels.values()):
            if channel.connected:
                channel.connected = False
            channel.call = into
            into.channels[channel.uniqueid] = channel
        into.held |= call.held
        for linkedid in call.linkedids:
            self._calls[linkedid] = into
            into.linkedids.add(linkedid)
        self._emit(CallMerged, call, into_call_id=into.call_id, into_linkedid=into.linkedid)
        call.channels.clear()
        call.linkedids.clear()
        self._detach_consult(call)
        if call in self._dirty:
            self._dirty.remove(call)
        self._topology(into)
        self._mark(into)

    def _end(self, call: Call, cause: str | None, cause_txt: str | None) -> None:
        call.ended = True
        call.ended_at = self._at()
        call.consult = False
        call.blind_pending = False
        self._emit(
            CallEnded,
            call,
            cause=cause,
            cause_txt=cause_txt,
            abandoned=call.abandoned,
            agents=tuple(call.agents),
        )
        self._detach_consult(call)
        self._mark(call)

    def _detach_consult(self, call: Call) -> None:
        parent = call.consult_for
        if parent is not None:
            call.consult_for = None
            parent.consult_calls.discard(call.linkedid)
            if parent.consult and not parent.consult_calls and not parent.consult_legs:
                parent.consult = False
            self._mark(parent)

    def _forget(self, call: Call) -> None:
        for linkedid in call.linkedids:
            if self._calls.get(linkedid) is call:
                del self._calls[linkedid]
                self._remember(self._ended, linkedid)
        if call.call_id is not None and self._by_call_id.get(call.call_id) is call:
            del self._by_call_id[call.call_id]
        self._detach_consult(call)

    def _remember(self, fifo: dict[str, None], key: str) -> None:
        fifo[key] = None
        if len(fifo) > self._max_remembered:
            del fifo[next(iter(fifo))]

    # -- topology ----------------------------------------------------------------------
    def _topology(self, call: Call) -> None:
        """Recompute which agent legs the caller is connected to; emit AgentConnected for
        the new ones."""
        origin = call.channels.get(call.origin)
        if origin is None or call.ended:
            call.talking = []
            return
        bridges = self._bridges
        seen = {origin}
        stack: list[tuple[Channel, tuple[Channel, ...]]] = [(origin, ())]
        talking: list[Channel] = []
        while stack:
            channel, via = stack.pop()
            neighbours: list[Channel] = []
            if channel.bridge is not None:
                neighbours.extend(bridges.get(channel.bridge, ()))
            if channel.peer is not None:
                neighbours.append(channel.peer)
            for other in neighbours:
                if other in seen or other.call is not call:
                    continue  # a leg of another call in the bridge: it is relinked soon
                seen.add(other)
                if other.is_local:
                    stack.append((other, (*via, other)))
                elif other.agent is not None:
                    talking.append(other)
                    if not other.connected:
                        self._connected(call, other, via)
        talking.sort(key=_by_connection)
        call.talking = talking

    def _connected(self, call: Call, channel: Channel, via: tuple[Channel, ...]) -> None:
        channel.connected = True
        channel.ringing = False
        channel.ring_silent = False
        self._seq += 1
        channel.connected_seq = self._seq
        queue, member, agent = channel.queue, channel.member_name, channel.agent
        for local in via:
            local.ringing = False
            if queue is None and local.queue is not None:
                queue, member = local.queue, local.member_name
                agent = local.agent or agent
        if agent is None:
            return
        if not call.agents or call.agents[-1] != agent:
            call.agents.append(agent)
        call.blind_pending = False
        call.in_queue = False
        self._emit(
            AgentConnected,
            call,
            agent=agent,
            member_name=member,
            channel=channel.name,
            queue=queue,
            via=tuple(local.name for local in via),
        )
        self._mark(call)

    # -- handlers: channels ------------------------------------------------------------
    def _on_newchannel(self, msg: Message) -> None:
        self._touch(msg, _SNAP, create=True)

    def _on_rename(self, msg: Message) -> None:
        channel = self._channels.get(msg.fields.get("uniqueid", ""))
        if channel is None:
            self._unattributed(msg)
            return
        channel.name = msg.fields.get("newname") or channel.name

    def _on_hangup(self, msg: Message) -> None:
        channel = self._channel(msg)
        if channel is None:
            return
        call = channel.call
        uniqueid = channel.uniqueid
        del self._channels[uniqueid]
        self._remember(self._dead, uniqueid)
        if channel.bridge is not None:
            self._leave_bridge(channel)
        if channel.peer is not None:
            channel.peer.peer = None
            channel.peer = None
        if channel.is_local:
            base = _local_base(channel.name)
            if base is not None and self._local_halves.get(base) is channel:
                del self._local_halves[base]
        if call.held:
            self._release_hold(channel)
        del call.channels[uniqueid]
        if (
            channel.ringing
            and not channel.answered
            and not channel.ring_silent
            and channel.agent is not None
        ):
            self._emit(
                AgentRingCancelled, call, agent=channel.agent, channel=channel.name, reason="HANGUP"
            )
        if channel.connected:
            self._emit(AgentLeft, call, agent=channel.agent or channel.name, channel=channel.name)
        if call.consult_legs:
            call.consult_legs.discard(uniqueid)
            if call.consult and not call.consult_legs and not call.consult_calls:
                call.consult = False  # the consultation was abandoned
        fields = msg.fields
        if uniqueid == call.origin and not call.ended:
            self._end(call, fields.get("cause"), fields.get("cause-txt"))
        if not call.channels:
            if not call.ended:
                self._end(call, fields.get("cause"), fields.get("cause-txt"))
            self._forget(call)
        else:
            self._topology(call)
        self._mark(call)

    # -- handlers: dialling and queues -------------------------------------------------
    def _channel(self, msg: Message) -> Channel | None:
        """The channel an event is about; an unknown one is reported as unattributed."""
        channel = self._touch(msg, _SNAP)
        if channel is None:
            self._unattributed(msg)
        return channel

    def _legs(self, msg: Message) -> tuple[Channel | None, Channel | None]:
        """The caller and the dialled leg of a dial or queue event; both are touched.

        An event without a known dialled leg is reported as unattributed.
        """
        caller = self._touch(msg, _SNAP)
        dest = self._touch(msg, _DEST)
        if dest is None:
            self._unattributed(msg)
        return caller, dest

    def _on_dial_begin(self, msg: Message) -> None:
        caller, dest = self._legs(msg)
        if dest is None:
            return
        if dest.ringing or dest.answered or dest.connected or dest.agent is None:
            return
        call = dest.call
        if caller is not None and caller.is_local and caller.peer is not None:
            half = caller.peer
            if half.ringing and half.queue is not None:
                # A Local queue member's ;2 dials the real phone: the ring is the member's.
                dest.ringing = dest.ring_silent = True
                dest.queue, dest.member_name = half.queue, half.member_name
                if half.agent is None:  # the member's agent was not known: now it is
                    half.agent = dest.agent
                    self._emit(
                        AgentRinging,
                        call,
                        agent=dest.agent,
                        member_name=half.member_name,
                        channel=half.name,
                        queue=half.queue,
                    )
                    self._mark(call)
                return
        dest.ringing = True
        call.blind_pending = False
        self._emit(
            AgentRinging, call, agent=dest.agent, member_name=None, channel=dest.name, queue=None
        )
        self._mark(call)

    def _on_dial_end(self, msg: Message) -> None:
        _caller, dest = self._legs(msg)
        if dest is None:
            return
        status = msg.fields.get("dialstatus", "")
        if status == "ANSWER":
            dest.answered = True
            return
        if status in ("RINGING", "PROCEEDING", "PROGRESS", ""):
            return
        if not dest.ringing:
            return
        dest.ringing = False
        call = dest.call
        self._mark(call)
        if dest.ring_silent or dest.agent is None:
            return
        if status == "NOANSWER":
            self._emit(
                AgentRingNoAnswer,
                call,
                agent=dest.agent,
                member_name=dest.member_name,
                channel=dest.name,
                queue=dest.queue,
                ring_time_ms=None,
            )
        else:
            self._emit(AgentRingCancelled, call, agent=dest.agent, channel=dest.name, reason=status)

    def _member(self, msg: Message) -> tuple[str, str | None]:
        fields = msg.fields
        interface = fields.get("interface", "")
        member_name = fields.get("membername")
        known_name, state_interface = self._members.get(interface, (None, None))
        return state_interface or interface, member_name or known_name

    def _on_agent_called(self, msg: Message) -> None:
        _caller, dest = self._legs(msg)
        if dest is None:
            return
        agent, member_name = self._member(msg)
        queue = msg.fields.get("queue")
        if dest.is_local and agent and self._agent_of(agent) is None:
            # A Local member (Local/2006@agents/n) whose state interface is not known yet
            # (no QueueMemberStatus / QueueMember seen for it since start-up): the agent
            # is the phone its ;2 dials; AgentRinging waits for that (_on_dial_begin).
            agent = None
        dest.agent = agent or dest.agent
        dest.member_name = member_name
        dest.queue = queue
        dest.ringing = True
        dest.ring_silent = False
        call = dest.call
        self._mark(call)
        if dest.agent is None:
            return
        self._emit(
            AgentRinging,
            call,
            agent=dest.agent or "",
            member_name=member_name,
            channel=dest.name,
            queue=queue,
        )

    def _on_agent_ring_no_answer(self, msg: Message) -> None:
        _caller, dest = self._legs(msg)
        if dest is None:
            return
        if not dest.ringing:
            return
        dest.ringing = False
        call = dest.call
        agent, member_name = self._member(msg)
        self._emit(
            AgentRingNoAnswer,
            call,
            agent=dest.agent or agent,
            member_name=member_name,
            channel=dest.name,
            queue=msg.fields.get("queue"),
            ring_time_ms=_int(msg.fields.get("ringtime")),
        )
        self._mark(call)

    def _on_agent_connect(self, msg: Message) -> None:
        caller, dest = self._legs(msg)
        if dest is None:
            return
        dest.answered = True
        dest.queue = msg.fields.get("queue") or dest.queue
        if caller is not None:
            caller.call.in_queue = False

    def _on_queue_caller_join(self, msg: Message) -> None:
        channel = self._channel(msg)
        if channel is None:
            return
        call = channel.call
        fields = msg.fields
        call.queue = fields.get("queue")
        call.position = _int(fields.get("position"))
        call.in_queue = True
        call.blind_pending = False
        priority = _int(msg.variable(self._prio_var)) if self._prio_var else None
        if priority is not None:
            call.priority = priority
        self._emit(
            CallQueued, call, queue=call.queue or "", position=call.position, priority=call.priority
        )
        self._mark(call)

    def _on_queue_caller_leave(self, msg: Message) -> None:
        channel = self._channel(msg)
        if channel is None:
            return
        call = channel.call
        if call.queue == msg.fields.get("queue"):
            call.in_queue = False
            self._mark(call)

    def _on_queue_caller_abandon(self, msg: Message) -> None:
        channel = self._channel(msg)
        if channel is None:
            return
        call = channel.call
        fields = msg.fields
        call.abandoned = True
        self._emit(
            CallAbandoned,
            call,
            queue=fields.get("queue", ""),
            position=_int(fields.get("position")),
            original_position=_int(fields.get("originalposition")),
            hold_time_s=_int(fields.get("holdtime")),
        )

    # -- handlers: bridges and Local pairs ---------------------------------------------
    def _leave_bridge(self, channel: Channel) -> None:
        members = self._bridges.get(channel.bridge or "")
        if members is not None:
            members.discard(channel)
            if not members:
                del self._bridges[channel.bridge or ""]
        channel.bridge = None

    def _on_bridge_enter(self, msg: Message) -> None:
        channel = self._channel(msg)
        if channel is None:
            return
        bridge = msg.fields.get("bridgeuniqueid")
        if not bridge or channel.bridge == bridge:
            return
        if channel.bridge is not None:
            self._leave_bridge(channel)
        members = self._bridges.get(bridge)
        if members is None:
            members = self._bridges[bridge] = set()
        members.add(channel)
        channel.bridge = bridge
        self._topology(channel.call)
        for other in members:
            if other.call is not channel.call:
                self._topology(other.call)
        self._mark(channel.call)

    def _on_bridge_leave(self, msg: Message) -> None:
        channel = self._channel(msg)
        if channel is None:
            return
        if channel.bridge != msg.fields.get("bridgeuniqueid"):
            return
        self._leave_bridge(channel)
        self._topology(channel.call)
        self._mark(channel.call)

    def _on_bridge_merge(self, msg: Message) -> None:
        fields = msg.fields
        source = self._bridges.pop(fields.get("frombridgeuniqueid", ""), None)
        target_id = fields.get("tobridgeuniqueid", "")
        if not source or not target_id:
            return
        target = self._bridges.setdefault(target_id, set())
        calls = []
        for channel in source:
            channel.bridge = target_id
            target.add(channel)
            if channel.call not in calls:
                calls.append(channel.call)
        for call in calls:
            self._topology(call)
            self._mark(call)

    def _on_bridge_destroy(self, msg: Message) -> None:
        members = self._bridges.pop(msg.fields.get("bridgeuniqueid", ""), None)
        if members:
            for channel in members:
                channel.bridge = None
                self._topology(channel.call)
                self._mark(channel.call)

    def _on_local_bridge(self, msg: Message) -> None:
        one = self._touch(msg, _LOCAL_ONE)
        two = self._touch(msg, _LOCAL_TWO)
        if one is None or two is None:
            self._unattributed(msg)
            return
        if one.peer is not two:
            one.peer, two.peer = two, one
            base = _local_base(one.name)
            if base is not None and self._local_halves.get(base) in (one, two):
                del self._local_halves[base]
            self._topology(one.call)
            self._mark(one.call)

    # -- handlers: hold and transfers --------------------------------------------------
    def _on_hold(self, msg: Message) -> None:
        channel = self._channel(msg)
        if channel is None:
            return
        call = channel.call
        if channel.uniqueid not in call.held:
            call.held.add(channel.uniqueid)
            if channel.agent is not None:
                self._holding.setdefault(channel.agent, {})[channel] = None
            self._emit(CallHeld, call, by=channel.agent or channel.name, channel=channel.name)
            self._mark(call)

    def _on_unhold(self, msg: Message) -> None:
        channel = self._channel(msg)
        if channel is None:
            return
        call = channel.call
        if channel.uniqueid in call.held:
            self._release_hold(channel)
            self._emit(CallUnheld, call, by=channel.agent or channel.name, channel=channel.name)
            self._mark(call)

    def _on_blind_transfer(self, msg: Message) -> None:
        transferer = self._touch(msg, _TRANSFERER, relink=False)
        transferee = self._touch(msg, _TRANSFEREE, relink=False)
        party = transferee or transferer
        if party is None:
            self._unattributed(msg)
            return
        fields = msg.fields
        if fields.get("result") != "Success":
            return
        call = party.call
        from_agent = transferer.agent if transferer is not None else None
        to = fields.get("extension")
        call.blind_pending = True
        for uniqueid in list(call.held):
            held = call.channels.get(uniqueid)
            if held is not None:
                self._release_hold(held)
        call.held.clear()
        call.transfers.append(Transfer(TransferKind.BLIND, from_agent, to, self._at()))
        self._emit(
            CallTransferred,
            call,
            kind=TransferKind.BLIND,
            from_agent=from_agent,
            to=to,
            context=fields.get("context"),
        )
        self._mark(call)

    def _on_attended_transfer(self, msg: Message) -> None:
        orig = self._touch(msg, _ORIG_TRANSFERER, relink=False)
        second = self._touch(msg, _SECOND_TRANSFERER, relink=False)
        transferee = self._touch(msg, _TRANSFEREE, relink=False)
        target = self._touch(msg, _TRANSFER_TARGET, relink=False)
        self._touch(msg, _LOCAL_ONE, relink=False)
        self._touch(msg, _LOCAL_TWO, relink=False)
        party = transferee or orig
        if party is None:
            self._unattributed(msg)
            return
        if msg.fields.get("result") != "Success":
            return
        call = party.call
        if target is not None and target.call is not call:
            self._move(target, call)  # the target was a leg of the agent's consult call
        leg = self._party_behind(target) if target is not None else None
        if leg is None:
            # No TransferTarget* in the event (observed: an AMI Atxfer whose transferer
            # left the consult bridge before the merge, tests/fixtures/ami/
            # attended_transfer_ami_no_target.txt): the agent the caller talks to now.
            self._topology(call)
            for channel in reversed(call.talking):
                if channel is not orig and channel is not second and channel.agent:
                    leg = channel
                    break
        from_agent = orig.agent if orig is not None else None
        to = leg.agent if leg is not None else None
        for transferer in (orig, second):
            if transferer is not None:
                self._release_hold(transferer)  # the transferer leaves the call
        call.consult = False
        call.consult_legs.clear()
        for linkedid in list(call.consult_calls):
            consult = self._calls.get(linkedid)
            if consult is not None:
                consult.consult_for = None
        call.consult_calls.clear()
        call.blind_pending = False
        call.transfers.append(Transfer(TransferKind.ATTENDED, from_agent, to, self._at()))
        self._emit(
            CallTransferred,
            call,
            kind=TransferKind.ATTENDED,
            from_agent=from_agent,
            to=to,
            to_channel=leg.name if leg is not None else None,
        )
        self._topology(call)
        self._mark(call)

    def _party_behind(self, channel: Channel) -> Channel | None:
        """The agent leg a transfer target stands for: itself, or for a Local ;1 the
        first agent leg on the far side of its ;2 (bridges and further Local pairs)."""
        if not channel.is_local:
            return channel
        bridges = self._bridges
        seen = {channel}
        stack = [channel.peer] if channel.peer is not None else []
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            if not current.is_local:
                if current.agent is not None:
                    return current
                continue
            if current.peer is not None:
                stack.append(current.peer)
            if current.bridge is not None:
                stack.extend(bridges.get(current.bridge, ()))
        return None

    # -- handlers: snapshot (after reset) ----------------------------------------------
    def _on_core_show_channel(self, msg: Message) -> None:
        channel = self._touch(msg, _SNAP)
        if channel is None:
            return
        fields = msg.fields
        call = channel.call
        bridge = fields.get("bridgeid")
        if bridge and channel.bridge != bridge:
            if channel.bridge is not None:
                self._leave_bridge(channel)
            self._bridges.setdefault(bridge, set()).add(channel)
            channel.bridge = bridge
        state = fields.get("channelstate")
        if channel.uniqueid != call.origin and not channel.is_local:
            if state == "6":
                channel.answered = True
            elif state == "5":
                channel.ringing = True
        elif channel.uniqueid == call.origin and fields.get("application") == "Queue":
            call.in_queue = True
            call.queue = (fields.get("applicationdata") or "").split(",", 1)[0] or call.queue

    def _on_core_show_channels_complete(self, msg: Message) -> None:
        self._restoring = False
        restored = [call for call in self.calls() if call.restoring]
        for call in restored:
            self._topology(call)
            call.state, call.state_agent = self._state_of(call)
            call.progressed = call.state is not CallState.ROUTING
        for call in restored:
            call.restoring = False
            if call in self._dirty:
                self._dirty.remove(call)
            origin = call.channels.get(call.origin)
            self._emit(
                CallRestored,
                call,
                channel=origin.name if origin is not None else call.origin_name,
                state=call.state,
                agent=call.state_agent,
                agents=tuple(channel.agent or "" for channel in call.talking),
                queue=call.queue if call.in_queue else None,
            )

    def _on_queue_entry(self, msg: Message) -> None:
        fields = msg.fields
        channel = self._channels.get(fields.get("uniqueid", ""))
        if channel is None:
            self.stats.snapshot_misses += 1
            return
        call = channel.call
        call.queue = fields.get("queue")
        call.position = _int(fields.get("position"))
        priority = _int(fields.get("priority"))
        if priority is not None:
            call.priority = priority
        call.in_queue = True
        self._emit(
            CallQueued, call, queue=call.queue or "", position=call.position, priority=call.priority
        )
        self._mark(call)

    def _remember_member(self, interface: str, name: str | None, state: str | None) -> None:
        if not interface:
            return
        members = self._members
        if interface not in members and len(members) >= self._max_members:
            del members[next(iter(members))]
        members[interface] = (name or None, state or None)

    def _on_queue_member(self, msg: Message) -> None:
        self.stats.non_call += 1
        fields = msg.fields
        self._remember_member(
            fields.get("location", ""), fields.get("name"), fields.get("stateinterface")
        )

    def _on_queue_member_status(self, msg: Message) -> None:
        self.stats.non_call += 1
        fields = msg.fields
        self._remember_member(
            fields.get("interface", ""), fields.get("membername"), fields.get("stateinterface")
        )
