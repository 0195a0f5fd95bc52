"""Call events: what the rest of the system hears about a call, made from model effects.

:class:`~cti.calls.model.CallModel` says what changed (:mod:`cti.calls.effects`); this
module decides what of that is news for agents, supervisors and reports, and names each
piece of news with a **fingerprint** that is the same on every daemon instance that sees
the same AMI traffic. The publisher (:mod:`cti.calls.publisher`) and the timeline writer
store an event at most once per fingerprint, so an event published again after a
handover between instances (or a retried write) is dropped, never doubled.

Fingerprints use what is stable across instances: channel names (Asterisk numbers every
leg), the event's own ``Timestamp`` (identical on every AMI connection), the queue. An
event with no AMI timestamp (rebuilt from a snapshot) is stamped with ``now`` but its
fingerprint does not use it.

Several PBXes (:mod:`cti.pbx`): channel names, Uniqueids and Linkedids are unique only
within one Asterisk, so an event carries the name of the PBX whose AMI feed made it
(``pbx``), and what must not collide across PBXes is namespaced by it: the fingerprint of
an event of a non-home PBX starts with ``@<pbx>|``, and a call without ``CTI_CALL_ID``
on a non-home PBX is keyed ``L:<linkedid>@<pbx>``. A call that crosses PBXes keeps its
``CTI_CALL_ID`` as its one key on both, so its published sets (agents, fingerprints) are
shared. The home PBX's events keep exactly the keys and fingerprints of a single-PBX
deployment. One thing differs once PBXes are named (``CTI_PBXES``): a PBX's ``ended`` is
the end of that PBX's part of the call only (a consultation on b that b's agent hangs
up, while the caller still talks to a's agent), so it goes to the agents of that part
(its ``recipients``, from the PBX's call model), not to every agent the call ever had;
the call ends when its last part does (:mod:`cti.timeline.summary`).

Pure: no I/O, no clock (``now`` is passed in).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cti.calls.effects import (
    AgentConnected,
    AgentLeft,
    AgentRingCancelled,
    AgentRinging,
    AgentRingNoAnswer,
    CallAbandoned,
    CallEnded,
    CallHeld,
    CallLeftQueue,
    CallQueued,
    CallTransferred,
    CallUnheld,
    ConsultStarted,
    Effect,
)
from cti.pbx import DEFAULT_PBX, Pbx

#: ``call_key`` prefix of a call that has no ``CTI_CALL_ID`` (it never went through the
#: route): its Linkedid, namespaced so that it can never equal a call id.
LINKEDID_PREFIX = "L:"


def call_key(call_id: str | None, linkedid: str, pbx: Pbx | None = None) -> str:
    """The key a call's events are published and recorded under: its call id, else its
    Linkedid (namespaced by a non-home PBX, whose Linkedids may repeat the home's)."""
    if call_id:
        return call_id
    if pbx is None or pbx.home:
        return LINKEDID_PREFIX + linkedid
    return f"{LINKEDID_PREFIX}{linkedid}@{pbx.name}"


def fingerprint_prefix(pbx: Pbx | None) -> str:
    """What starts the fingerprints of a PBX's events: nothing for the home PBX (a
    single PBX's fingerprints stay as they were), ``@<pbx>|`` for any other."""
    return "" if pbx is None or pbx.home else f"@{pbx.name}|"


def namespace_of(fingerprint: str) -> str | None:
    """The non-home PBX whose namespace a fingerprint is in (``@b|ringing|…`` → ``b``);
    None for the home PBX's. It tells two PBXes' parts of one call apart even in rows
    written before events named their PBX (those all came from the home PBX)."""
    if fingerprint.startswith("@"):
        name, bar, _rest = fingerprint[1:].partition("|")
        if bar and name:
            return name
    return None


@dataclass(frozen=True, slots=True)
class CallEvent:
    """One piece of news about a call.

    ``recipients`` are the agents (devices, ``PJSIP/2001``) whose streams get it, on top of
    the supervisors' stream that gets every event. ``to_call_agents``: also every agent who
    ever rang or talked on this call (the publisher keeps that set per call), for news that
    concerns all of them (a transfer, the end, a data change). ``agent`` is the agent the
    event is about, if any. ``pbx`` is the PBX whose AMI feed made the event (None for
    news not made by a PBX, e.g. ``data_changed``)."""

    kind: str
    call_key: str
    call_id: str | None
    linkedid: str
    fingerprint: str
    at: float
    agent: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    recipients: tuple[str, ...] = ()
    to_call_agents: bool = False
    pbx: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The wire form (stream entries, the sidebar's WebSocket, the timeline's detail)."""
        return {
            "event": self.kind,
            "call_key": self.call_key,
            "call_id": self.call_id,
            "linkedid": self.linkedid,
            "at": self.at,
            "agent": self.agent,
            "pbx": self.pbx,
            **self.data,
        }


def _agents(*names: str | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(n for n in names if n))


def to_events(effect: Effect, now: float, pbx: Pbx | None = None) -> list[CallEvent]:
    """The events one effect makes (most make one; bookkeeping effects make none).

    ``pbx`` is the PBX whose call model made the effect (None: the one PBX of a
    deployment that does not name its PBXes, keyed like the home PBX)."""
    at = effect.at if effect.at is not None else now
    stamp = f"{effect.at:.6f}" if effect.at is not None else "snapshot"
    prefix = fingerprint_prefix(pbx)
    key = call_key(effect.call_id, effect.linkedid, pbx)
    pbx_name = pbx.name if pbx is not None else None
    # Deployments that name their PBXes (CTI_PBXES); the single PBX is ``default``.
    named = pbx_name is not None and pbx_name != DEFAULT_PBX

    def event(kind: str, fingerprint: str, **kw: Any) -> list[CallEvent]:
        return [
            CallEvent(
                kind=kind,
                call_key=key,
                call_id=effect.call_id,
                linkedid=effect.linkedid,
                fingerprint=prefix + fingerprint,
                at=at,
                pbx=pbx_name,
                **kw,
            )
        ]

    match effect:
        case CallQueued():
            return event(
                "queued",
                f"queued|{effect.queue}|{stamp}",
                data={
                    "queue": effect.queue,
                    "position": effect.position,
                    "priority": effect.priority,
                    "tier": effect.tier,
                    "rule": effect.rule,
                },
            )
        case AgentRinging():
            return event(
                "ringing",
                f"ringing|{effect.channel}",
                agent=effect.agent,
                data={
                    "queue": effect.queue,
                    "member_name": effect.member_name,
                    "channel": effect.channel,
                },
                recipients=(effect.agent,),
            )
        case AgentRingNoAnswer():
            return event(
                "ring_stopped",
                f"ring_stopped|{effect.channel}",
                agent=effect.agent,
                data={
                    "reason": "NOANSWER",
                    "queue": effect.queue,
                    "ring_time_ms": effect.ring_time_ms,
                    "channel": effect.channel,
                },
                recipients=(effect.agent,),
            )
        case AgentRingCancelled():
            return event(
                "ring_stopped",
                f"ring_stopped|{effect.channel}",
                agent=effect.agent,
                data={"reason": effect.reason, "channel": effect.channel},
                recipients=(effect.agent,),
            )
        case AgentConnected():
            return event(
                "connected",
                f"connected|{effect.channel}",
                agent=effect.agent,
                data={
                    "queue": effect.queue,
                    "member_name": effect.member_name,
                    "channel": effect.channel,
                    "via": list(effect.via),
                },
                recipients=(effect.agent,),
            )
        case AgentLeft():
            return event(
                "left",
                f"left|{effect.channel}",
                agent=effect.agent,
                data={"channel": effect.channel},
                recipients=(effect.agent,),
            )
        case CallHeld():
            return event(
                "held",
                f"held|{effect.channel}|{stamp}",
                agent=effect.by,
                data={"by": effect.by, "channel": effect.channel},
                to_call_agents=True,
            )
        case CallUnheld():
            return event(
                "unheld",
                f"unheld|{effect.channel}|{stamp}",
                agent=effect.by,
                data={"by": effect.by, "channel": effect.channel},
                to_call_agents=True,
            )
        case ConsultStarted():
            return event(
                "consult",
                f"consult|{effect.channel}",
                agent=effect.from_agent,
                data={"channel": effect.channel, "to": effect.to},
                recipients=_agents(effect.from_agent),
            )
        case CallTransferred():
            return event(
                "transferred",
                f"transferred|{effect.kind.value}|{effect.from_agent}|{stamp}",
                agent=effect.from_agent,
                data={
                    "kind": effect.kind.value,
                    "from": effect.from_agent,
                    "to": effect.to,
                    "context": effect.context,
                    "to_channel": effect.to_channel,
                },
                to_call_agents=True,
            )
        case CallAbandoned():
            return event(
                "abandoned",
                f"abandoned|{effect.queue}",
                data={
                    "queue": effect.queue,
                    "position": effect.position,
                    "original_position": effect.original_position,
                    "hold_time_s": effect.hold_time_s,
                },
            )
        case CallLeftQueue():
            return event(
                "queue_left",
                f"queue_left|{effect.queue}|{stamp}",
                data={"queue": effect.queue, "reason": effect.reason},
            )
        case CallEnded():
            return event(
                "ended",
                "ended",
                data={
                    "cause": effect.cause,
                    "cause_txt": effect.cause_txt,
                    "abandoned": effect.abandoned,
                    "agents": list(effect.agents),
                },
                # The end of this PBX's part: for its own agents (the tracker names them
                # from its model), not every agent the call ever had on other PBXes.
                to_call_agents=not named,
            )
    # CallStarted, CallIdentified, CallMerged, CallStateChanged, CallRestored: model
    # bookkeeping; the state they carry reaches agents through the events above.
    return []


def data_changed(call_id: str, linkedid: str, version: int, by: str, at: float) -> CallEvent:
    """The event an accepted edit of the call's data makes (cti.calldata)."""
    return CallEvent(
        kind="data_changed",
        call_key=call_id,
        call_id=call_id,
        linkedid=linkedid,
        fingerprint=f"data|{version}",
        at=at,
        agent=by,
        data={"version": version, "by": by},
        to_call_agents=True,
    )
