"""What the call model holds: channels, calls, transfers, counters, and the snapshot
header names it reads them from. Plain data, no behaviour beyond naming.

Kept apart from the parts that change them so that every part (channels, bridges,
queues, transfers, snapshot) and the call tracker share one definition of a call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cti.calls.effects import CallState, TransferKind


@dataclass(frozen=True, slots=True)
class Snap:
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
    def of(cls, prefix: str) -> Snap:
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


SNAP = Snap.of("")
DEST = Snap.of("Dest")
TRANSFERER = Snap.of("Transferer")
TRANSFEREE = Snap.of("Transferee")
ORIG_TRANSFERER = Snap.of("OrigTransferer")
SECOND_TRANSFERER = Snap.of("SecondTransferer")
TRANSFER_TARGET = Snap.of("TransferTarget")
LOCAL_ONE = Snap.of("LocalOne")
LOCAL_TWO = Snap.of("LocalTwo")


def default_agent_of(channel: str) -> str | None:
    """The device of a channel name (``PJSIP/2001-0000000e`` → ``PJSIP/2001``); ``None``
    for Local channels, which are plumbing, never a party. A deployment whose trunks can
    be dialled passes its own function that returns ``None`` for trunk devices too."""
    if channel.startswith("Local/"):
        return None
    dash = channel.rfind("-")
    return channel[:dash] if dash > 0 else channel or None


def local_base(name: str) -> str | None:
    """``Local/2003@agents-00000000;1`` → ``Local/2003@agents-00000000``."""
    if len(name) > 2 and name[-2] == ";" and name[-1] in "12":
        return name[:-2]
    return None


def local_exten(name: str) -> str | None:
    """``Local/2003@agents-00000000;1`` → ``2003``."""
    at = name.find("@")
    return name[6:at] if name.startswith("Local/") and at > 6 else None


def by_connection(channel: Channel) -> int:
    return channel.connected_seq


def int_or_none(value: str | None) -> int | None:
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
        "hangup_requested",
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
        self.hangup_requested = False  # (Soft)HangupRequest seen: this leg is going

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
    tier: str | None = None  # the route's CTI_TIER / CTI_RULE, when channelvars list them
    rule: str | None = None
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
    #: Why the caller is leaving the queue, once Asterisk said (QueueCallerAbandon),
    #: for the QueueCallerLeave that follows: ``abandoned`` or ``timeout``.
    leaving: str | None = None
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
