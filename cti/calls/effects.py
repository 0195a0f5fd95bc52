"""What :meth:`cti.calls.model.CallModel.apply` tells the rest of the system.

Plain frozen dataclasses. Every effect names its call by ``call_id`` (the route's
``CTI_CALL_ID``; ``None`` until the call has one, and forever for calls that never went
through the route, such as an agent's own consult call) and ``linkedid`` (the Linkedid
the call was first seen with, stable for the life of the call), and carries ``at``, the
event's ``Timestamp`` (seconds since the epoch, ``None`` if the event had none).

An agent is named by its device/interface as Asterisk writes it (``PJSIP/2001``); for a
queue member that is the member's state interface when known (so a ``Local/...``
member is still ``PJSIP/2001``), with ``member_name`` from queues.conf when known.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class CallState(enum.StrEnum):
    ROUTING = "routing"  # created, not (yet) queued or ringing anyone
    QUEUED = "queued"
    RINGING = "ringing"  # ringing an agent (``agent``)
    TALKING = "talking"  # the caller is bridged with an agent (``agent``)
    ON_HOLD = "on_hold"  # an agent (or the caller) put the other side on hold
    TRANSFERRING = "transferring"  # blind transfer under way, or a consult call
    ENDED = "ended"


class TransferKind(enum.StrEnum):
    BLIND = "blind"
    ATTENDED = "attended"


@dataclass(frozen=True, slots=True, kw_only=True)
class Effect:
    call_id: str | None
    linkedid: str
    at: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CallStarted(Effect):
    """A channel that belongs to no known call appeared: a new call."""

    channel: str
    caller: str | None  # CallerIDNum
    context: str | None
    exten: str | None  # the dialled number for an inbound call


@dataclass(frozen=True, slots=True, kw_only=True)
class CallIdentified(Effect):
    """The call's ``CTI_CALL_ID`` became known (it is empty on a leg's first event)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallQueued(Effect):
    queue: str
    position: int | None
    priority: int | None  # the route's priority when the model can see it (see model)
    tier: str | None = None  # the route's customer tier and rule, likewise
    rule: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentRinging(Effect):
    agent: str
    member_name: str | None
    channel: str  # the leg that rings (a Local ;1 for a Local member)
    queue: str | None  # None for a direct dial (transfer to an agent, consult)


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentRingNoAnswer(Effect):
    agent: str
    member_name: str | None
    channel: str
    queue: str | None
    ring_time_ms: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentRingCancelled(Effect):
    """The ring stopped without an answer for another reason (``DialStatus``):
    CANCEL (the caller left or another agent answered), BUSY, CHANUNAVAIL, ..."""

    agent: str
    channel: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConnected(Effect):
    """The caller can now talk to this agent: they share a bridge, directly or through
    Local channel pairs (``via``, in order from the caller's side)."""

    agent: str
    member_name: str | None
    channel: str  # the agent's own leg
    queue: str | None
    via: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentLeft(Effect):
    """A leg that was connected to the caller hung up or moved to another call."""

    agent: str
    channel: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CallHeld(Effect):
    by: str  # the agent (or channel) that put the other side on hold
    channel: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CallUnheld(Effect):
    by: str
    channel: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsultStarted(Effect):
    """An agent on this call started a second call while the caller waits: the first
    half of an attended transfer (or a consultation that may be abandoned)."""

    from_agent: str | None
    channel: str  # the consult leg (Local ;1, or the agent phone's new leg)
    to: str | None  # the number dialled, when known (``2003`` of Local/2003@agents)
    consult_linkedid: str | None  # the consult call's own Linkedid, when it has one


@dataclass(frozen=True, slots=True, kw_only=True)
class CallTransferred(Effect):
    kind: TransferKind
    from_agent: str | None
    to: str | None  # blind: the extension; attended: the agent now connected, if known
    context: str | None = None
    to_channel: str | None = None  # attended: the leg that replaced the transferer


@dataclass(frozen=True, slots=True, kw_only=True)
class CallAbandoned(Effect):
    queue: str
    position: int | None
    original_position: int | None
    hold_time_s: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CallLeftQueue(Effect):
    """The caller left the queue (``QueueCallerLeave``), and why: ``answered`` (a
    member's ``AgentConnect`` follows), ``abandoned`` (the caller hung up while queued),
    ``timeout`` (the queue let the caller go and the dialplan goes on: Asterisk reports
    that with a ``QueueCallerAbandon`` on a channel nobody asked to hang up), or
    ``exited`` (any other way out of ``Queue()``)."""

    queue: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CallMerged(Effect):
    """This call (a consult call, say) now belongs to call ``into_*``; it is forgotten."""

    into_call_id: str | None
    into_linkedid: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEnded(Effect):
    """The call's first channel (the caller) hung up. Legs still up stay attributed to
    the call until they hang up; the call is forgotten when its last channel is gone."""

    cause: str | None
    cause_txt: str | None
    abandoned: bool
    agents: tuple[str, ...]  # every agent the caller talked to, in order


@dataclass(frozen=True, slots=True, kw_only=True)
class CallStateChanged(Effect):
    state: CallState
    agent: str | None  # the agent for RINGING / TALKING / ON_HOLD


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRestored(Effect):
    """A call rebuilt from a snapshot (CoreShowChannels) after :meth:`reset`."""

    channel: str
    state: CallState
    agent: str | None
    agents: tuple[str, ...]  # the agents the caller is connected to now
    queue: str | None
