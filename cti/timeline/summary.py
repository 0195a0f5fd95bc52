"""A call's summary from its timeline: when it queued, was answered and ended, and how
long the caller waited, talked and was on hold.

The interaction record (``interactions``) gets these figures once the call has ended
(:mod:`cti.timeline.store`), recomputed from every stored event of the call each time a
later event arrives, so the summary is a pure function of the set of events:

* **Duplicates count once** (same fingerprint): several daemon instances may publish the
  same event after a handover. The earliest copy is kept, because a copy rebuilt from a
  snapshot is stamped with the time it was rebuilt, later than the real event.
* **Order is by** ``at``, and events with the same ``at`` by their place in a call's life
  (:func:`order_key`): events arrive out of order, and the database returns ties in any
  order, yet every instance must compute the same summary.
* **Holds end silently** where the model releases them without a
  :class:`~cti.calls.effects.CallUnheld`: when the holding leg leaves, at a blind
  transfer (every hold), at an attended transfer (the transferer's holds).
* **Nothing counts after the end**: a leg that hangs up after the caller (a late
  ``left``) adds no talk or hold time. A call that has not ended is summarised up to its
  last event.
* **A call on several PBXes** (one ``CTI_CALL_ID``, :mod:`cti.pbx`) has one part per
  PBX, told apart by the fingerprints' namespace (:func:`~cti.calls.events.namespace_of`),
  each with its own ``ended``. The call has ended when **every** part it has events
  from has ended, at the last of those ends (:func:`end_of`): the caller is still on the
  line while any server still carries the call. A part's ``ended`` only ends that part's
  legs and holds (its channel names may repeat the other PBX's, so legs are told apart
  by PBX and channel). Until the last part ends the call is summarised as not ended.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cti.calls.events import CallEvent, namespace_of

# Where an event sits in a call's life, to order events stamped with the same instant.
_LIFECYCLE = (
    "queued",
    "ringing",
    "ring_stopped",
    "queue_left",
    "connected",
    "held",
    "unheld",
    "consult",
    "transferred",
    "attached",
    "data_changed",
    "left",
    "abandoned",
    "ended",
)
_RANK = {kind: rank for rank, kind in enumerate(_LIFECYCLE)}


#: Events cti makes itself, not a PBX's AMI feed: an edit (``data_changed``), the
#: ``attach`` script's record of a crossing (``attached``: the PBX that asked may be
#: unknown). They belong to no PBX's part, so none waits for an ``ended`` of theirs.
NOT_A_PART = frozenset({"data_changed", "attached"})


def order_key(at: float, kind: str) -> tuple[float, int]:
    """The timeline's sort key: time, then place in a call's life (unknown kinds last)."""
    return at, _RANK.get(kind, len(_LIFECYCLE))


@dataclass(frozen=True, slots=True)
class CallSummary:
    """What the interaction record keeps of a call's timeline (times in UTC)."""

    queued_at: datetime | None  # the first ``queued``
    answered_at: datetime | None  # the first ``connected``
    ended_at: datetime | None
    wait_s: float | None  # queued → answered (or → ended if never answered); None if never queued
    talk_s: float  # at least one agent connected and the call not on hold
    hold_s: float
    transfers: int
    agents: tuple[str, ...]  # agents that connected, in order, each once
    abandoned: bool
    end_cause: str | None  # the hang-up cause's text, else its code


def ordered(events: Sequence[CallEvent]) -> list[CallEvent]:
    """The events in timeline order, each fingerprint once (its earliest copy)."""
    seen: set[str] = set()
    result = []
    for event in sorted(events, key=lambda e: order_key(e.at, e.kind)):
        if event.fingerprint not in seen:
            seen.add(event.fingerprint)
            result.append(event)
    return result


def _utc(at: float | None) -> datetime | None:
    return datetime.fromtimestamp(at, tz=UTC) if at is not None else None


#: A leg as the summary and the segments tell it apart: (its PBX's namespace, channel).
Leg = tuple[str | None, str]


def leg_of(event: CallEvent) -> Leg:
    """The leg an event is about: its PBX and channel, else (older or odd events) its
    agent."""
    return namespace_of(event.fingerprint), str(event.data.get("channel") or event.agent or "")


def end_of(timeline: Sequence[CallEvent]) -> tuple[CallEvent | None, list[CallEvent]]:
    """The call's end in an :func:`ordered` timeline: the last part's ``ended`` once
    every PBX part with events has ended, else None; and every part's ``ended`` so far,
    in order (see the module docstring). With one PBX: its ``ended``, if any."""
    parts: set[str | None] = set()
    ends: dict[str | None, CallEvent] = {}
    for event in timeline:
        if event.kind in NOT_A_PART:
            continue
        part = namespace_of(event.fingerprint)
        parts.add(part)
        if event.kind == "ended":
            ends.setdefault(part, event)
    ended = sorted(ends.values(), key=lambda e: order_key(e.at, e.kind))
    if not ended or parts - ends.keys():
        return None, ended
    return ended[-1], ended


def summarize(events: Sequence[CallEvent]) -> CallSummary:
    """The summary of one call's events, in any order, duplicates included."""
    timeline = ordered(events)
    ended, part_ends = end_of(timeline)
    end = ended.at if ended is not None else (timeline[-1].at if timeline else 0.0)
    connected: dict[Leg, str | None] = {}  # agent leg → agent
    held: dict[Leg, str] = {}  # holding leg → who holds
    talk = hold = 0.0
    previous: float | None = None
    queued_at: float | None = None
    answered_at: float | None = None
    answered_after_queue: float | None = None
    agents: dict[str, None] = {}
    transfers = 0
    abandoned = False
    for event in timeline:
        if previous is not None:
            span = min(event.at, end) - min(previous, end)
            if held:
                hold += span
            elif connected:
                talk += span
        previous = event.at
        match event.kind:
            case "queued":
                if queued_at is None:
                    queued_at = event.at
            case "connected":
                connected[leg_of(event)] = event.agent
                if answered_at is None:
                    answered_at = event.at
                if queued_at is not None and answered_after_queue is None:
                    answered_after_queue = event.at
                if event.agent:
                    agents.setdefault(event.agent)
            case "left":
                leg = leg_of(event)
                if leg not in connected:  # no channel to match by: the agent's own leg
                    leg = next((k for k, a in connected.items() if a == event.agent), leg)
                connected.pop(leg, None)
                held.pop(leg, None)
            case "held":
                held[leg_of(event)] = str(event.data.get("by") or event.agent or "")
            case "unheld":
                held.pop(leg_of(event), None)
            case "transferred":
                transfers += 1
                transferer = event.data.get("from") or event.agent
                if event.data.get("kind") == "attended" and transferer:
                    held = {leg: by for leg, by in held.items() if by != transferer}
                else:
                    held.clear()
            case "abandoned":
                abandoned = True
            case "ended":  # this PBX's part is over: its legs and holds with it
                part = namespace_of(event.fingerprint)
                connected = {leg: a for leg, a in connected.items() if leg[0] != part}
                held = {leg: by for leg, by in held.items() if leg[0] != part}
    if ended is not None:
        for part_end in part_ends:
            abandoned = abandoned or bool(part_end.data.get("abandoned"))
            for agent in part_end.data.get("agents") or ():  # the model's own list
                agents.setdefault(str(agent))
    if queued_at is None:
        wait_s = None
    elif answered_after_queue is not None:
        wait_s = answered_after_queue - queued_at
    elif ended is not None:
        wait_s = max(0.0, ended.at - queued_at)
    else:
        wait_s = None
    return CallSummary(
        queued_at=_utc(queued_at),
        answered_at=_utc(answered_at),
        ended_at=_utc(ended.at if ended is not None else None),
        wait_s=wait_s,
        talk_s=talk,
        hold_s=hold,
        transfers=transfers,
        agents=tuple(agents),
        abandoned=abandoned,
        end_cause=_end_cause(ended),
    )


def _end_cause(ended: CallEvent | None) -> str | None:
    if ended is None:
        return None
    cause = ended.data.get("cause_txt") or ended.data.get("cause")
    return str(cause) if cause else None
