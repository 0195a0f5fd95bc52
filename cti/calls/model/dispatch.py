"""The AMI events the call model takes, in ONE table, and the one dispatcher built on it.

:data:`AMI_EVENTS` names every event the model understands, what it does with it (the
handler of one part, or the two generic uses: refresh a channel's snapshot, count an
event that is about no call), and how the event reaches us:

* ``LIVE``: a live event Asterisk must send; :data:`CALL_CENTRE_EVENTS` (what the AMI
  connection asks for with ``Action: Filter``) is exactly these, in table order;
* ``REPLY``: sent only as the answer to a resync's list action (``CoreShowChannels``,
  ``QueueStatus``). Filters do not apply to action answers, so they are not asked for;
* ``UNASKED``: understood when it comes (no filter, or Asterisk refused it) but not
  needed, so not asked for.

The dispatcher and the filter are both built from the table, so they cannot drift:
adding a handler means adding a row, and a row with a handler that is neither ``LIVE``
nor ``REPLY`` fails tests/unit/test_ami_events.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Final

from cti.ami.protocol import Message, MessageKind
from cti.calls.effects import Effect
from cti.calls.model.channels import Channels
from cti.calls.model.queues import Queues
from cti.calls.model.records import SNAP
from cti.calls.model.snapshot import Snapshot
from cti.calls.model.state import ModelState
from cti.calls.model.transfers import Transfers

_EVENT = MessageKind.EVENT


class Source(Enum):
    """How an event of the table reaches the model (see the module docstring)."""

    LIVE = "live"
    REPLY = "reply"
    UNASKED = "unasked"


Handler = Callable[["CallModel", Message], None]


@dataclass(frozen=True, slots=True)
class AmiEvent:
    """One row: what the model does with the event, and how it reaches us."""

    handler: Handler
    source: Source

    @property
    def generic(self) -> bool:
        """Only refreshes a channel or counts the event: no handler of its own."""
        return self.handler in (Channels._touch_only, ModelState._not_call)


LIVE, REPLY, UNASKED = Source.LIVE, Source.REPLY, Source.UNASKED
_TOUCH = Channels._touch_only  # the channel exists / its snapshot is news, nothing else
_NOT_CALL = ModelState._not_call  # about the system, queue members or devices

AMI_EVENTS: Final[dict[str, AmiEvent]] = {
    # -- the system: asked for so that a trace of the stream shows restarts
    "FullyBooted": AmiEvent(_NOT_CALL, LIVE),
    "Shutdown": AmiEvent(_NOT_CALL, LIVE),
    "Reload": AmiEvent(_NOT_CALL, LIVE),
    # -- channels (channels.py)
    "Newchannel": AmiEvent(Channels._on_newchannel, LIVE),
    "Newstate": AmiEvent(_TOUCH, LIVE),
    "NewCallerid": AmiEvent(_TOUCH, LIVE),
    "NewConnectedLine": AmiEvent(_TOUCH, LIVE),
    "Rename": AmiEvent(Channels._on_rename, LIVE),
    "Hangup": AmiEvent(Channels._on_hangup, LIVE),
    "VarSet": AmiEvent(_TOUCH, LIVE),  # CTI_CALL_ID set after the leg's Newchannel
    # a leg asked to hang up: a queued caller who then "abandons" really did (queues.py)
    "HangupRequest": AmiEvent(Queues._on_hangup_request, LIVE),
    "SoftHangupRequest": AmiEvent(Queues._on_hangup_request, LIVE),
    # -- dialling and queues (queues.py)
    "DialBegin": AmiEvent(Queues._on_dial_begin, LIVE),
    "DialState": AmiEvent(_TOUCH, LIVE),
    "DialEnd": AmiEvent(Queues._on_dial_end, LIVE),
    "AgentCalled": AmiEvent(Queues._on_agent_called, LIVE),
    "AgentRingNoAnswer": AmiEvent(Queues._on_agent_ring_no_answer, LIVE),
    "AgentConnect": AmiEvent(Queues._on_agent_connect, LIVE),
    "AgentComplete": AmiEvent(_TOUCH, LIVE),
    "QueueCallerJoin": AmiEvent(Queues._on_queue_caller_join, LIVE),
    "QueueCallerLeave": AmiEvent(Queues._on_queue_caller_leave, LIVE),
    "QueueCallerAbandon": AmiEvent(Queues._on_queue_caller_abandon, LIVE),
    "QueueMemberStatus": AmiEvent(Queues._on_queue_member_status, LIVE),
    "QueueMemberAdded": AmiEvent(Queues._on_queue_member_status, LIVE),
    # member roster changes: asked for (the queue-member view), the model only counts them
    "QueueMemberRemoved": AmiEvent(_NOT_CALL, LIVE),
    "QueueMemberPause": AmiEvent(_NOT_CALL, LIVE),
    # devices: the agent states (cti/agents/state.py) see calls no queue sees
    "DeviceStateChange": AmiEvent(_NOT_CALL, LIVE),
    # -- bridges and Local pairs (bridges.py)
    "BridgeEnter": AmiEvent(Snapshot._on_bridge_enter, LIVE),
    "BridgeLeave": AmiEvent(Snapshot._on_bridge_leave, LIVE),
    "BridgeMerge": AmiEvent(Snapshot._on_bridge_merge, LIVE),
    "BridgeDestroy": AmiEvent(Snapshot._on_bridge_destroy, LIVE),
    "LocalBridge": AmiEvent(Snapshot._on_local_bridge, LIVE),
    # -- hold and transfers (transfers.py)
    "Hold": AmiEvent(Transfers._on_hold, LIVE),
    "Unhold": AmiEvent(Transfers._on_unhold, LIVE),
    "MusicOnHoldStart": AmiEvent(_TOUCH, LIVE),
    "MusicOnHoldStop": AmiEvent(_TOUCH, LIVE),
    "BlindTransfer": AmiEvent(Transfers._on_blind_transfer, LIVE),
    "AttendedTransfer": AmiEvent(Transfers._on_attended_transfer, LIVE),
    # -- answers to the resync's list actions (snapshot.py, queues.py)
    "CoreShowChannel": AmiEvent(Snapshot._on_core_show_channel, REPLY),
    "CoreShowChannelsComplete": AmiEvent(Snapshot._on_core_show_channels_complete, REPLY),
    "QueueEntry": AmiEvent(Snapshot._on_queue_entry, REPLY),
    "QueueMember": AmiEvent(Queues._on_queue_member, REPLY),
    "QueueParams": AmiEvent(_NOT_CALL, REPLY),
    "QueueStatusComplete": AmiEvent(_NOT_CALL, REPLY),
    # -- about a channel, understood when they come, not asked for
    "NewAccountCode": AmiEvent(_TOUCH, UNASKED),
    "Newexten": AmiEvent(_TOUCH, UNASKED),
    "AGIExecStart": AmiEvent(_TOUCH, UNASKED),
    "AGIExecEnd": AmiEvent(_TOUCH, UNASKED),
    "AsyncAGIStart": AmiEvent(_TOUCH, UNASKED),
    "AsyncAGIExec": AmiEvent(_TOUCH, UNASKED),
    "AsyncAGIEnd": AmiEvent(_TOUCH, UNASKED),
    "DTMFBegin": AmiEvent(_TOUCH, UNASKED),
    "DTMFEnd": AmiEvent(_TOUCH, UNASKED),
    "AgentDump": AmiEvent(_TOUCH, UNASKED),
    "ChannelTalkingStart": AmiEvent(_TOUCH, UNASKED),
    "ChannelTalkingStop": AmiEvent(_TOUCH, UNASKED),
    "MixMonitorStart": AmiEvent(_TOUCH, UNASKED),
    "MixMonitorStop": AmiEvent(_TOUCH, UNASKED),
    "MixMonitorMute": AmiEvent(_TOUCH, UNASKED),
    "LocalOptimizationBegin": AmiEvent(_TOUCH, UNASKED),
    "LocalOptimizationEnd": AmiEvent(_TOUCH, UNASKED),
    "UserEvent": AmiEvent(_TOUCH, UNASKED),
    "ChanSpyStart": AmiEvent(_TOUCH, UNASKED),
    "ChanSpyStop": AmiEvent(_TOUCH, UNASKED),
    "Pickup": AmiEvent(_TOUCH, UNASKED),
    "Flash": AmiEvent(_TOUCH, UNASKED),
    "Wink": AmiEvent(_TOUCH, UNASKED),
    # -- about no call, understood when they come, not asked for
    "QueueMemberPenalty": AmiEvent(_NOT_CALL, UNASKED),
    "QueueMemberRinginuse": AmiEvent(_NOT_CALL, UNASKED),
    "QueueSummary": AmiEvent(_NOT_CALL, UNASKED),
    "QueueSummaryComplete": AmiEvent(_NOT_CALL, UNASKED),
    "ExtensionStatus": AmiEvent(_NOT_CALL, UNASKED),
    "PresenceStateChange": AmiEvent(_NOT_CALL, UNASKED),
    "PeerStatus": AmiEvent(_NOT_CALL, UNASKED),
    "ContactStatus": AmiEvent(_NOT_CALL, UNASKED),
    "Registry": AmiEvent(_NOT_CALL, UNASKED),
    "SuccessfulAuth": AmiEvent(_NOT_CALL, UNASKED),
    "ChallengeSent": AmiEvent(_NOT_CALL, UNASKED),
    "RTCPSent": AmiEvent(_NOT_CALL, UNASKED),
    "RTCPReceived": AmiEvent(_NOT_CALL, UNASKED),
    "BridgeCreate": AmiEvent(_NOT_CALL, UNASKED),
    "BridgeInfoComplete": AmiEvent(_NOT_CALL, UNASKED),
    "BridgeListComplete": AmiEvent(_NOT_CALL, UNASKED),
    "BridgeVideoSourceUpdate": AmiEvent(_NOT_CALL, UNASKED),
    "Cdr": AmiEvent(_NOT_CALL, UNASKED),
    "LoadAverageLimit": AmiEvent(_NOT_CALL, UNASKED),
    "ModuleLoadReport": AmiEvent(_NOT_CALL, UNASKED),
}

#: The live events the call model needs: what the AMI connection asks Asterisk for
#: (``cti.ami.filters.event_filter(CALL_CENTRE_EVENTS)``, wired in cti/app/following.py).
CALL_CENTRE_EVENTS: Final[tuple[str, ...]] = tuple(
    name for name, row in AMI_EVENTS.items() if row.source is LIVE
)

_DISPATCH: Final[dict[str, Handler]] = {name: row.handler for name, row in AMI_EVENTS.items()}


class CallModel(Snapshot, Transfers, Queues):
    """Follows every call on one Asterisk from its AMI events (see the package docstring).

    ``call_id_variable`` / ``priority_variable`` / ``tier_variable`` / ``rule_variable``
    name the channel variables read from ``ChanVariable`` (manager.conf ``channelvars``):
    the route's call id and, when listed there too, its queue priority, customer tier
    and rule (the wallboard's per-tier and per-rule figures). ``agent_of`` maps a channel
    name to the agent (device) it reaches, or ``None`` for Local channels and devices
    that are not agents. ``device_of`` names a queue member's device (its state
    interface, ``PJSIP/2001``) as ``agent_of`` names a channel's: on a PBX other than
    the home one both give ``PJSIP/2001@b`` (:mod:`cti.pbx`,
    :func:`cti.calls.tracker.model_for`); None keeps the interface as Asterisk says it.
    """

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
        handler = _DISPATCH.get(name)
        if handler is not None:
            handler(self, msg)
        elif "uniqueid" in msg.fields:
            self.stats.unknown[name] = self.stats.unknown.get(name, 0) + 1
            self._touch(msg, SNAP)
        else:
            self.stats.non_call += 1
        if self._dirty:
            self._flush_states()
        return out
