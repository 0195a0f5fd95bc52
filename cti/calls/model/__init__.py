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

Layout (one part per responsibility, combined by :mod:`.dispatch`):

* :mod:`.records`   channels, calls, transfers, counters (plain data);
* :mod:`.state`     the shared state and registries, effects, a call's derived state;
* :mod:`.channels`  placing channels in calls: create, relink, move, merge, hang up;
* :mod:`.bridges`   bridges and Local pairs: who the caller is connected to;
* :mod:`.queues`    dialling, queues and queue members;
* :mod:`.transfers` transfers, consultations and hold;
* :mod:`.snapshot`  reset and the resync's list events;
* :mod:`.dispatch`  the table of AMI events (:data:`AMI_EVENTS`), the filter built on it
  (:data:`CALL_CENTRE_EVENTS`) and :class:`CallModel`, whose ``apply`` dispatches by it.
"""

from cti.calls.model.dispatch import (
    AMI_EVENTS,
    CALL_CENTRE_EVENTS,
    AmiEvent,
    CallModel,
    Source,
)
from cti.calls.model.records import (
    AgentOf,
    Call,
    Channel,
    ModelStats,
    Transfer,
    default_agent_of,
)

__all__ = [
    "AMI_EVENTS",
    "CALL_CENTRE_EVENTS",
    "AgentOf",
    "AmiEvent",
    "Call",
    "CallModel",
    "Channel",
    "ModelStats",
    "Source",
    "Transfer",
    "default_agent_of",
]
