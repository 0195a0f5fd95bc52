"""A call's segments, derived from its timeline: the facts every report counts.

Per call, one :class:`QueueVisit` per time the caller joined a queue, one
:class:`AgentLeg` per agent leg that rang or answered, and one :class:`Journey`: the
call as the caller lived it (first queue joined to first answer), which the reports by
tier, rule, dialled number and service count, so that a call that visits two queues is
offered once to each queue and counted once as a call.

**A queue visit** starts at ``queued`` and ends at the first of:

* ``connected`` of a leg offered by this queue: **answered**;
* ``abandoned`` of this queue (or the call's end saying it was abandoned): **abandoned**;
* ``transferred`` while the caller waits (a redirect out of the queue): **transferred_out**;
* ``queued`` (another queue, or this one again) or ``connected`` of a leg this queue did
  not offer (a direct dial): **sent_elsewhere**, the call moved on unanswered while the
  caller was still in the queue;
* ``queue_left`` (Asterisk's ``QueueCallerLeave``) not followed by this queue's answer
  or abandon: **timed_out**, the queue let the caller go (``Queue()`` returned with
  ``QUEUESTATUS=TIMEOUT``) whatever the dialplan did next (another queue, voicemail, a
  message); the visit ends, and its wait stops, when the caller left the queue;
* the call's ``ended`` otherwise: **timed_out** too (a timeline recorded before
  ``queue_left`` existed: the wait then runs to the call's end).

**An agent leg** is one channel of an agent: rang at its ``ringing``, answered at its
``connected``, ended at its ``left``, at a transfer it made (the transferer's talk stops
at the transfer: a transferred call's talk is split there), at ``ring_stopped`` if never
answered, or at the call's end. While a leg is connected the time counts as **hold** when
the call is on hold, else **talk** (holds are released as in
:mod:`cti.timeline.summary`). ``how``: ``hangup``, ``blind`` or ``attended`` (the leg's
agent transferred the call; ``to`` says to whom), or ``not_answered``.

**Several PBXes** (:mod:`cti.pbx`): a call that crosses servers has one part per PBX
(:func:`cti.timeline.summary.end_of`). Legs and visits carry their PBX (``pbx``: the
name the events gave, None for rows written before events named one: the home PBX) and
are matched within their PBX only (two servers' channel and queue names may be alike).
A part's ``ended`` ends that part's legs and its open queue visit; the call ends with
the last part.

Duplicates and order are handled by :func:`cti.timeline.summary.ordered`. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from cti.calls.events import CallEvent, namespace_of
from cti.timeline.summary import Leg, end_of, leg_of, ordered

OUTCOMES = ("answered", "abandoned", "timed_out", "transferred_out", "sent_elsewhere")
HOWS = ("hangup", "blind", "attended", "not_answered")


@dataclass(frozen=True, slots=True)
class QueueVisit:
    queue: str
    entered: float
    left: float
    outcome: str  # one of OUTCOMES
    position: int | None = None
    agent: str | None = None  # who answered
    pbx: str | None = None  # the queue's PBX (None: the home PBX, an older row)
    #: Of the leg that answered this visit: its talk, hold, wrap-up and whether it
    #: ended in a transfer (what the queue's handle time and transfers count).
    talk_s: float = 0.0
    hold_s: float = 0.0
    wrapup_s: float = 0.0
    transferred: bool = False

    @property
    def wait_s(self) -> float:
        return max(0.0, self.left - self.entered)


@dataclass(frozen=True, slots=True)
class AgentLeg:
    agent: str
    channel: str
    queue: str | None  # the queue that offered it; None for a direct dial or a transfer
    rang: float | None
    answered: float | None
    ended: float
    talk_s: float = 0.0
    hold_s: float = 0.0
    wrapup_s: float = 0.0  # from agent states (issue 11) when known
    how: str = "not_answered"  # one of HOWS
    to: str | None = None
    pbx: str | None = None  # the channel's PBX (None: the home PBX, an older row)


@dataclass(frozen=True, slots=True)
class Journey:
    """The call as one offer: from the first queue joined to the first answer, with the
    outcome of its last queue visit (answered if any visit was)."""

    queue: str  # the first queue: whose thresholds apply
    entered: float
    left: float
    outcome: str
    talk_s: float
    hold_s: float
    wrapup_s: float
    transfers: int
    pbx: str | None = None  # the first queue's

    @property
    def wait_s(self) -> float:
        return max(0.0, self.left - self.entered)


@dataclass(frozen=True, slots=True)
class CallSegments:
    started: float
    ended: float | None
    visits: tuple[QueueVisit, ...]
    legs: tuple[AgentLeg, ...]
    journey: Journey | None  # None for a call that never joined a queue


@dataclass(slots=True)
class _Leg:
    agent: str
    channel: str
    queue: str | None
    part: str | None = None  # its PBX's namespace (cti.calls.events.namespace_of)
    pbx: str | None = None
    rang: float | None = None
    answered: float | None = None
    ended: float | None = None
    talk: float = 0.0
    hold: float = 0.0
    how: str = "not_answered"
    to: str | None = None
    visit: int | None = None  # index of the visit it answered

    @property
    def up(self) -> bool:
        return self.answered is not None and self.ended is None


@dataclass(slots=True)
class _Visit:
    queue: str
    entered: float
    position: int | None
    part: str | None = None
    pbx: str | None = None
    left: float | None = None
    outcome: str = ""
    agent: str | None = None
    gone: float | None = None  # the caller left the queue (``queue_left``), unanswered


@dataclass(slots=True)
class _State:
    legs: list[_Leg] = field(default_factory=list)
    visits: list[_Visit] = field(default_factory=list)
    held: dict[Leg, str] = field(default_factory=dict)  # holding leg → who holds

    def open_visit(self) -> _Visit | None:
        last = self.visits[-1] if self.visits else None
        return last if last is not None and last.left is None else None

    def open_visit_of(self, event: CallEvent) -> _Visit | None:
        """The open visit, if it is in a queue of the event's PBX."""
        visit = self.open_visit()
        return (
            visit if visit is not None and visit.part == namespace_of(event.fingerprint) else None
        )

    def close_visit(self, at: float, outcome: str, agent: str | None = None) -> None:
        visit = self.open_visit()
        if visit is not None:
            visit.left, visit.outcome, visit.agent = at, outcome, agent

    def move_on(self, at: float, outcome: str) -> None:
        """Close the open visit as the call moves on unanswered: ``timed_out`` when the
        queue had let the caller go (then at that moment), else ``outcome`` at ``at``."""
        visit = self.open_visit()
        if visit is not None and visit.gone is not None:
            self.close_visit(visit.gone, "timed_out" if outcome != "transferred_out" else outcome)
        else:
            self.close_visit(at, outcome)

    def find(self, event: CallEvent) -> _Leg | None:
        """The latest leg on the event's channel (else, with no channel to match by,
        the agent's leg that is up), on the event's PBX."""
        channel = str(event.data.get("channel") or "")
        part = namespace_of(event.fingerprint)
        for leg in reversed(self.legs):
            if leg.part != part:
                continue
            if channel and leg.channel == channel:
                return leg
            if not channel and leg.agent == event.agent and leg.ended is None:
                return leg
        return None

    def leg(self, event: CallEvent, *, answering: bool = False) -> _Leg:
        part, channel = leg_of(event)
        agent = event.agent or channel
        for leg in reversed(self.legs):
            if leg.part == part and leg.channel == channel and leg.ended is None:
                return leg
        if answering:  # a Local member rings on one channel and answers on another
            for leg in reversed(self.legs):
                if (
                    leg.part == part
                    and leg.agent == agent
                    and leg.answered is None
                    and leg.ended is None
                ):
                    leg.channel = channel
                    return leg
        queue = event.data.get("queue")
        leg = _Leg(
            agent=agent,
            channel=channel,
            queue=str(queue) if queue else None,
            part=part,
            pbx=event.pbx,
        )
        self.legs.append(leg)
        return leg

    def end_part(self, ended: CallEvent) -> None:
        """One PBX's part of the call ended: its legs end, and its open queue visit."""
        if self.open_visit_of(ended) is not None:
            abandoned = bool(ended.data.get("abandoned"))
            self.move_on(ended.at, "abandoned" if abandoned else "timed_out")
        part = namespace_of(ended.fingerprint)
        for leg in self.legs:
            if leg.part == part and leg.ended is None:
                leg.ended = ended.at
                if leg.answered is not None and leg.how == "not_answered":
                    leg.how = "hangup"
        self.held = {leg: by for leg, by in self.held.items() if leg[0] != part}


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def derive(events: Sequence[CallEvent]) -> CallSegments:
    """The segments of one call's events (any order, duplicates included)."""
    timeline = ordered(events)
    if not timeline:
        return CallSegments(started=0.0, ended=None, visits=(), legs=(), journey=None)
    end_event, _ends = end_of(timeline)
    end = end_event.at if end_event is not None else timeline[-1].at
    state = _State()
    previous: float | None = None
    for event in timeline:
        if event.at > end and event.kind != "ended":
            break  # nothing counts after the end
        if previous is not None:
            span = event.at - previous
            for leg in state.legs:
                if leg.up:
                    if state.held:
                        leg.hold += span
                    else:
                        leg.talk += span
        previous = event.at
        _apply(state, event)
    if state.open_visit() is not None:
        abandoned = end_event is not None and bool(end_event.data.get("abandoned"))
        state.move_on(end, "abandoned" if abandoned else "timed_out")
    for leg in state.legs:
        if leg.ended is None:
            leg.ended = end
            if leg.answered is not None and leg.how == "not_answered":
                leg.how = "hangup"
    visits = tuple(_visit(state, i) for i in range(len(state.visits)))
    legs = tuple(
        AgentLeg(
            agent=leg.agent,
            channel=leg.channel,
            queue=leg.queue,
            rang=leg.rang,
            answered=leg.answered,
            ended=leg.ended if leg.ended is not None else end,
            talk_s=leg.talk,
            hold_s=leg.hold,
            how=leg.how,
            to=leg.to,
            pbx=leg.pbx,
        )
        for leg in state.legs
    )
    return CallSegments(
        started=timeline[0].at,
        ended=end_event.at if end_event is not None else None,
        visits=visits,
        legs=legs,
        journey=_journey(visits, legs),
    )


def _apply(state: _State, event: CallEvent) -> None:
    data = event.data
    match event.kind:
        case "queued":
            state.move_on(event.at, "sent_elsewhere")
            state.visits.append(
                _Visit(
                    queue=str(data.get("queue") or ""),
                    entered=event.at,
                    position=_int(data.get("position")),
                    part=namespace_of(event.fingerprint),
                    pbx=event.pbx,
                )
            )
        case "ringing":
            leg = state.leg(event)
            if leg.rang is None:
                leg.rang = event.at
        case "ring_stopped":
            found = state.find(event)
            if found is not None and found.answered is None and found.ended is None:
                found.ended = event.at
        case "connected":
            leg = state.leg(event, answering=True)
            if leg.answered is None:
                leg.answered = event.at
            visit = state.open_visit()
            if visit is not None:
                queue = data.get("queue")
                if queue and queue == visit.queue and visit.part == leg.part:
                    leg.queue = visit.queue
                    leg.visit = len(state.visits) - 1
                    state.close_visit(event.at, "answered", leg.agent)
                else:
                    state.move_on(event.at, "sent_elsewhere")
        case "left":
            found = state.find(event)
            if found is not None and found.ended is None:
                found.ended = event.at
                if found.answered is not None:
                    found.how = "hangup"
            part = namespace_of(event.fingerprint)
            state.held.pop((part, str(data.get("channel") or "")), None)
            if found is not None:
                state.held.pop((part, found.channel), None)
        case "held":
            state.held[leg_of(event)] = str(data.get("by") or event.agent or "")
        case "unheld":
            state.held.pop(leg_of(event), None)
        case "transferred":
            _transferred(state, event)
        case "queue_left":
            visit = state.open_visit_of(event)
            # answered: the connected that follows closes the visit
            if (
                visit is not None
                and visit.queue == data.get("queue")
                and visit.gone is None
                and data.get("reason") != "answered"
            ):
                visit.gone = event.at
        case "abandoned":
            visit = state.open_visit_of(event)
            if visit is not None and visit.queue == data.get("queue"):
                state.close_visit(visit.gone or event.at, "abandoned")
        case "ended":
            state.end_part(event)


def _transferred(state: _State, event: CallEvent) -> None:
    kind = "attended" if event.data.get("kind") == "attended" else "blind"
    transferer = event.data.get("from") or event.agent
    if kind == "attended" and transferer:
        state.held = {leg: by for leg, by in state.held.items() if by != transferer}
    else:
        state.held.clear()
    if state.open_visit() is not None and not any(leg.up for leg in state.legs):
        state.move_on(event.at, "transferred_out")
    for leg in reversed(state.legs):
        if leg.up and leg.agent == transferer:
            leg.ended, leg.how = event.at, kind
            to = event.data.get("to")
            leg.to = str(to) if to else None
            break


def _visit(state: _State, index: int) -> QueueVisit:
    visit = state.visits[index]
    leg = next((leg for leg in state.legs if leg.visit == index), None)
    return QueueVisit(
        queue=visit.queue,
        entered=visit.entered,
        left=visit.left if visit.left is not None else visit.entered,
        outcome=visit.outcome,
        position=visit.position,
        agent=visit.agent,
        pbx=visit.pbx,
        talk_s=leg.talk if leg else 0.0,
        hold_s=leg.hold if leg else 0.0,
        transferred=leg is not None and leg.how in ("blind", "attended"),
    )


def _journey(visits: Sequence[QueueVisit], legs: Sequence[AgentLeg]) -> Journey | None:
    if not visits:
        return None
    first = visits[0]
    answered = next((v for v in visits if v.outcome == "answered"), None)
    last = answered or visits[-1]
    handled = [leg for leg in legs if leg.answered is not None and leg.answered >= first.entered]
    return Journey(
        queue=first.queue,
        entered=first.entered,
        left=last.left,
        outcome=last.outcome,
        talk_s=sum(leg.talk_s for leg in handled),
        hold_s=sum(leg.hold_s for leg in handled),
        wrapup_s=sum(leg.wrapup_s for leg in handled),
        transfers=sum(1 for leg in handled if leg.how in ("blind", "attended")),
        pbx=first.pbx,
    )


def with_wrapup(segments: CallSegments, wrapup: dict[str, float]) -> CallSegments:
    """The segments with each answered leg's wrap-up (by channel) from agent states."""
    legs = tuple(
        replace(leg, wrapup_s=wrapup.get(leg.channel, leg.wrapup_s)) for leg in segments.legs
    )
    return replace(segments, legs=legs, journey=_journey(segments.visits, legs))
