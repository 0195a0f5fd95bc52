r"""Every agent's state, from AMI and the call model's effects: plain Python, no I/O.

An agent is its device as Asterisk names it (``PJSIP/2001``): the queue member's state
interface, the name the call model's effects use. :class:`AgentBoard` takes

* AMI messages (:meth:`AgentBoard.apply`): the queue roster and pauses
  (``QueueMemberAdded`` / ``Removed`` / ``Status`` / ``Pause`` with ``PausedReason``,
  and ``QueueMember``, the answer to the ``QueueStatus`` of every resync) and
  ``DeviceStateChange`` (calls the queues do not see: an agent's own outbound call);
* the call model's effects (:meth:`AgentBoard.apply_effects`), which already read
  ``AgentCalled`` / ``AgentConnect`` / ``AgentRingNoAnswer``, hang-ups, holds and
  transfers: ringing, talking, on hold, and a leg that ends;

and answers each with the list of :class:`AgentChanged` it caused.

**States.** Per queue membership and overall: ``logged_out``, ``available``,
``ringing``, ``on_call``, ``on_hold``, ``wrap_up``, ``paused`` (with its reason). The
overall state is the strongest over the agent's memberships and its calls, in this
order: ``on_call`` beats ``on_hold`` beats ``ringing`` (an agent on a call is on it for
every queue), these beat ``wrap_up``, which beats ``paused``, which beats
``available``, which beats ``logged_out``. A membership is ``logged_out`` while its
device is unreachable (member status 4/5, or ``UNAVAILABLE``/``INVALID``); an agent with
no membership and no call is ``logged_out``.

**Wrap-up.** When an agent's connected leg of a call ends (hang-up, or transfer away)
and the call's queue has ``wrapup_s`` > 0 (``wrapup_s`` is handed in: the routing
plan's), the agent enters ``wrap_up`` until ``at + wrapup_s``. The board never ends a
wrap-up on its own: the wrap-up service (:mod:`cti.agents.wrapup`) does, on the
disposition or at the deadline (:meth:`AgentBoard.end_wrap_up`), and restores one from
Redis after a takeover (:meth:`AgentBoard.restore_wrap_up`). A member paused in
Asterisk with the reason ``wrap-up`` is in ``wrap_up`` too.

``since`` is when the state (with its reason) last changed; times are the events'
``Timestamp`` when they carry one, else the injected clock.

**Several PBXes** (:mod:`cti.pbx`). A board follows one PBX and names its agents as
cti does (``PJSIP/2001@b`` off the home PBX: :meth:`AgentBoard.device`), from AMI
(member interfaces, ``DeviceStateChange``) and from effects alike (a name already
qualified stays), so two boards never mix their ``PJSIP/2001``\ s. A member's
``interface`` stays as its PBX names it: what ``QueuePause`` there wants (and
``Local/x@ctx`` is no device of a PBX ``ctx``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cti.ami.protocol import Message, MessageKind
from cti.calls.effects import (
    AgentConnected,
    AgentLeft,
    AgentRingCancelled,
    AgentRinging,
    AgentRingNoAnswer,
    CallEnded,
    CallHeld,
    CallMerged,
    CallQueued,
    CallRestored,
    CallState,
    CallUnheld,
    Effect,
)
from cti.pbx import DEFAULT_PBX, Pbx, split_device

#: The pause reason cti gives Asterisk while it holds an agent in wrap-up (the routing
#: plan refuses it as a reason of its own).
WRAPUP_REASON = "wrap-up"
#: At most this many devices' states are remembered (DeviceStateChange names trunks too).
MAX_DEVICES = 20_000


class AgentState(enum.StrEnum):
    LOGGED_OUT = "logged_out"
    AVAILABLE = "available"
    RINGING = "ringing"
    ON_CALL = "on_call"
    ON_HOLD = "on_hold"
    WRAP_UP = "wrap_up"
    PAUSED = "paused"


#: Which state wins, per agent over its memberships and calls (module docstring).
RANK: Mapping[AgentState, int] = {
    AgentState.LOGGED_OUT: 0,
    AgentState.AVAILABLE: 1,
    AgentState.PAUSED: 2,
    AgentState.WRAP_UP: 3,
    AgentState.RINGING: 4,
    AgentState.ON_HOLD: 5,
    AgentState.ON_CALL: 6,
}
_BUSY = frozenset({AgentState.RINGING, AgentState.ON_CALL, AgentState.ON_HOLD})


@dataclass(frozen=True, slots=True)
class Membership:
    """The agent in one queue. ``reason``: Asterisk's pause reason while ``paused`` (the
    member is paused in Asterisk; ``wrap-up`` while cti holds it in wrap-up)."""

    queue: str
    state: AgentState
    reason: str | None
    since: float
    paused: bool = False


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """One agent now. ``call_id``/``queue``: of the current call, else of the wrap-up;
    ``reason``: the pause reason when ``paused``, ``wrap-up`` when ``wrap_up``;
    ``wrapup_until``: when cti ends a pending wrap-up (epoch seconds)."""

    agent: str
    state: AgentState
    reason: str | None
    since: float
    call_id: str | None
    queue: str | None
    memberships: tuple[Membership, ...]
    wrapup_until: float | None
    #: The name of the PBX the agent's device is on (:mod:`cti.pbx`).
    pbx: str = DEFAULT_PBX

    def membership(self, queue: str) -> Membership | None:
        return next((m for m in self.memberships if m.queue == queue), None)


@dataclass(frozen=True, slots=True)
class AgentChanged:
    """``status`` is the agent's new status; ``previous`` its overall state before
    (None for an agent seen for the first time) and ``before`` its whole status then."""

    status: AgentStatus
    previous: AgentState | None
    at: float
    before: AgentStatus | None = None


def status_to_json(status: AgentStatus) -> dict[str, Any]:
    """The status as events, Redis and the API carry it."""
    return {
        "agent": status.agent,
        "pbx": status.pbx,
        "state": status.state.value,
        "reason": status.reason,
        "since": status.since,
        "call_id": status.call_id,
        "queue": status.queue,
        "wrapup_until": status.wrapup_until,
        "memberships": [
            {
                "queue": m.queue,
                "state": m.state.value,
                "reason": m.reason,
                "since": m.since,
                "paused": m.paused,
            }
            for m in status.memberships
        ],
    }


# --- the board's own records ----------------------------------------------------------


@dataclass(slots=True)
class _Member:
    interface: str
    paused: bool = False
    reason: str | None = None
    reachable: bool = True
    state: AgentState = AgentState.AVAILABLE
    shown: str | None = None  # the reason of the state shown since ``since``
    since: float = 0.0


@dataclass(slots=True)
class _Leg:
    state: AgentState
    call_id: str | None
    queue: str | None
    channel: str


@dataclass(frozen=True, slots=True)
class WrapUp:
    """A pending wrap-up: until when, after which call of which queue."""

    until: float
    call_id: str | None
    queue: str | None


@dataclass(slots=True)
class _Agent:
    name: str
    members: dict[str, _Member] = field(default_factory=dict)
    legs: dict[str, _Leg] = field(default_factory=dict)  # by the call's linkedid
    wrap: WrapUp | None = None
    status: AgentStatus | None = None


_DEVICE_BUSY = {
    "INUSE": AgentState.ON_CALL,
    "BUSY": AgentState.ON_CALL,
    "ONHOLD": AgentState.ON_HOLD,
    "RINGING": AgentState.RINGING,
    "RINGINUSE": AgentState.ON_CALL,
}
_DEVICE_GONE = frozenset({"UNAVAILABLE", "INVALID"})
#: Queue member ``Status`` values of an unreachable device (AST_DEVICE_INVALID,
#: AST_DEVICE_UNAVAILABLE).
_MEMBER_GONE = frozenset({"4", "5"})
_CALL_STATES = {
    CallState.RINGING: AgentState.RINGING,
    CallState.TALKING: AgentState.ON_CALL,
    CallState.ON_HOLD: AgentState.ON_HOLD,
    CallState.TRANSFERRING: AgentState.ON_CALL,
}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


class AgentBoard:
    """Every agent's state on one PBX (see the module docstring). ``wrapup_s(queue)``:
    the queue's wrap-up in seconds (0: none); ``clock``: for messages without a
    timestamp; ``pbx``: the PBX followed (default: the one PBX of a deployment without
    ``CTI_PBXES``, whose devices keep their names)."""

    def __init__(
        self,
        *,
        wrapup_s: Callable[[str | None], int] = lambda _queue: 0,
        clock: Callable[[], float] = lambda: 0.0,
        pbx: Pbx | None = None,
    ) -> None:
        self._wrapup_s = wrapup_s
        self._clock = clock
        self.pbx_name = pbx.name if pbx is not None else DEFAULT_PBX
        #: None on the home PBX: its devices keep their plain names.
        self._suffix = None if pbx is None or pbx.home else pbx.name
        self._agents: dict[str, _Agent] = {}
        self._devices: dict[str, str] = {}
        self._call_queue: dict[str, str] = {}  # linkedid -> queue
        self._resync_seen: set[tuple[str, str]] | None = None

    # -- names ---------------------------------------------------------------------------
    def device(self, name: str) -> str:
        """A device of this PBX as cti names it; a name already qualified with this
        PBX stays as it is (the module docstring)."""
        if self._suffix is None or split_device(name)[1] == self._suffix:
            return name
        return f"{name}@{self._suffix}"

    def owns(self, agent: str) -> bool:
        """Whether an agent (as cti names it) is on this board's PBX: one this PBX's
        leader may write or end in the stores all PBXes share."""
        return split_device(agent)[1] == self._suffix

    # -- reading ---------------------------------------------------------------------------
    def snapshot(self) -> dict[str, AgentStatus]:
        return {name: a.status for name, a in self._agents.items() if a.status is not None}

    def status(self, agent: str) -> AgentStatus | None:
        found = self._agents.get(agent)
        return found.status if found is not None else None

    def wrap_up(self, agent: str) -> WrapUp | None:
        found = self._agents.get(agent)
        return found.wrap if found is not None else None

    def interfaces(self, agent: str) -> dict[str, str]:
        """queue -> the member's interface (what QueuePause names), for each membership."""
        found = self._agents.get(agent)
        return {q: m.interface for q, m in found.members.items()} if found else {}

    # -- resync ----------------------------------------------------------------------------
    def reset(self) -> None:
        """A resync starts: the roster is read again (``QueueMember``); calls and
        wrap-ups are kept (the call model's catch-up reports what ended meanwhile)."""
        self._resync_seen = set()

    def resynced(self) -> list[AgentChanged]:
        """The resync's snapshot is complete: memberships it did not list are gone."""
        seen, self._resync_seen = self._resync_seen, None
        if seen is None:
            return []
        at = self._clock()
        touched = []
        for agent in self._agents.values():
            gone = [q for q in agent.members if (agent.name, q) not in seen]
            for queue in gone:
                del agent.members[queue]
            touched.append(agent)
        return self._changes(touched, at)

    # -- AMI -------------------------------------------------------------------------------
    def apply(self, msg: Message) -> list[AgentChanged]:
        if msg.kind is not MessageKind.EVENT:
            return []
        handler = _HANDLERS.get(msg.name)
        if handler is None:
            return []
        at = self._at(msg)
        agent = handler(self, msg, at)
        return self._changes([agent] if agent is not None else [], at)

    def _at(self, msg: Message) -> float:
        raw = msg.fields.get("timestamp")
        if raw:
            try:
                return float(raw)
            except ValueError:
                pass
        return self._clock()

    def _member_fields(self, msg: Message) -> tuple[str, str, str] | None:
        fields = msg.fields
        queue = fields.get("queue") or ""
        interface = fields.get("interface") or fields.get("location") or ""
        device = fields.get("stateinterface") or interface
        if not queue or not device:
            return None
        return queue, self.device(device), interface or device

    def _on_member(self, msg: Message, at: float) -> _Agent | None:
        """QueueMember (resync), QueueMemberAdded, QueueMemberStatus."""
        found = self._member_fields(msg)
        if found is None:
            return None
        queue, device, interface = found
        agent = self._agent(device)
        member = agent.members.get(queue)
        if member is None:
            member = agent.members[queue] = _Member(interface, since=at)
        member.interface = interface
        fields = msg.fields
        if "paused" in fields:
            member.paused = _truthy(fields.get("paused"))
            member.reason = (fields.get("pausedreason") or None) if member.paused else None
        if "status" in fields:
            member.reachable = fields.get("status") not in _MEMBER_GONE
        if self._resync_seen is not None:
            self._resync_seen.add((device, queue))
        return agent

    def _on_member_removed(self, msg: Message, at: float) -> _Agent | None:
        found = self._member_fields(msg)
        if found is None:
            return None
        queue, device, _interface = found
        agent = self._agents.get(device)
        if agent is None:
            return None
        agent.members.pop(queue, None)
        return agent

    def _on_member_pause(self, msg: Message, at: float) -> _Agent | None:
        found = self._member_fields(msg)
        if found is None:
            return None
        queue, device, interface = found
        agent = self._agent(device)
        member = agent.members.setdefault(queue, _Member(interface, since=at))
        member.paused = _truthy(msg.fields.get("paused"))
        reason = msg.fields.get("pausedreason") or msg.fields.get("reason") or None
        member.reason = reason if member.paused else None
        return agent

    def _on_device_state(self, msg: Message, at: float) -> _Agent | None:
        device = msg.fields.get("device") or ""
        state = (msg.fields.get("state") or "").upper()
        if not device:
            return None
        device = self.device(device)
        if state == "NOT_INUSE" or not state:
            self._devices.pop(device, None)
        elif device in self._devices or len(self._devices) < MAX_DEVICES:
            self._devices[device] = state
        return self._agents.get(device)

    # -- the call model's effects ------------------------------------------------------------
    def apply_effects(self, effects: Iterable[Effect]) -> list[AgentChanged]:
        touched: list[_Agent] = []
        at = self._clock()
        for effect in effects:
            at = effect.at if effect.at is not None else self._clock()
            touched += self._effect(effect, at)
        return self._changes(touched, at)

    def _effect(self, effect: Effect, at: float) -> list[_Agent]:
        key = effect.linkedid
        match effect:
            case CallQueued(queue=queue):
                self._call_queue[key] = queue
                return []
            case AgentRinging(agent=name, channel=channel, queue=queue):
                agent = self._agent(name)
                leg = agent.legs.get(key)
                if leg is None or leg.state is AgentState.RINGING:
                    agent.legs[key] = _Leg(AgentState.RINGING, effect.call_id, queue, channel)
                return [agent]
            case AgentRingNoAnswer(agent=name) | AgentRingCancelled(agent=name):
                agent = self._agent(name)
                leg = agent.legs.get(key)
                if leg is not None and leg.state is AgentState.RINGING:
                    del agent.legs[key]
                return [agent]
            case AgentConnected(agent=name, channel=channel, queue=queue):
                agent = self._agent(name)
                before = agent.legs.get(key)
                queue = queue or (before.queue if before else None)
                agent.legs[key] = _Leg(AgentState.ON_CALL, effect.call_id, queue, channel)
                return [agent]
            case AgentLeft(agent=name):
                agent = self._agent(name)
                self._leg_ended(agent, key, at)
                return [agent]
            case CallHeld(by=by) | CallUnheld(by=by):
                held = isinstance(effect, CallHeld)
                agent_or_none = self._agents.get(self.device(by)) if by else None
                if agent_or_none is None or key not in agent_or_none.legs:
                    return []
                leg = agent_or_none.legs[key]
                if leg.state is not AgentState.RINGING:
                    leg.state = AgentState.ON_HOLD if held else AgentState.ON_CALL
                return [agent_or_none]
            case CallMerged(into_linkedid=into):
                touched = []
                for agent in self._agents.values():
                    leg = agent.legs.pop(key, None)
                    if leg is not None:
                        agent.legs.setdefault(into, replace(leg, call_id=effect.into_call_id))
                        touched.append(agent)
                if key in self._call_queue:
                    self._call_queue.setdefault(into, self._call_queue.pop(key))
                return touched
            case CallEnded():
                touched = []
                for agent in self._agents.values():
                    if key in agent.legs:
                        self._leg_ended(agent, key, at)
                        touched.append(agent)
                self._call_queue.pop(key, None)
                return touched
            case CallRestored(agents=agents, queue=queue, state=state):
                if queue:
                    self._call_queue[key] = queue
                touched = []
                for name in agents:
                    agent = self._agent(name)
                    if key not in agent.legs:
                        busy = _CALL_STATES.get(state, AgentState.ON_CALL)
                        agent.legs[key] = _Leg(busy, effect.call_id, queue, effect.channel)
                    touched.append(agent)
                return touched
        return []

    def _leg_ended(self, agent: _Agent, key: str, at: float) -> None:
        leg = agent.legs.pop(key, None)
        if leg is None or leg.state is AgentState.RINGING:
            return
        queue = leg.queue or self._call_queue.get(key)
        seconds = self._wrapup_s(queue) if queue else 0
        if seconds > 0:
            agent.wrap = WrapUp(at + seconds, leg.call_id, queue)

    # -- wrap-up, driven by the wrap-up service ---------------------------------------------
    def end_wrap_up(self, agent: str, at: float | None = None) -> list[AgentChanged]:
        found = self._agents.get(agent)
        if found is None or found.wrap is None:
            return []
        found.wrap = None
        when = at if at is not None else self._clock()
        return self._changes([found], when)

    def restore_wrap_up(self, agent: str, wrap: WrapUp | None) -> list[AgentChanged]:
        """Set (or clear, with None) the agent's wrap-up as Redis holds it."""
        found = self._agent(agent)
        if found.wrap == wrap:
            return []
        found.wrap = wrap
        return self._changes([found], self._clock())

    def due(self, now: float) -> list[str]:
        """The agents whose wrap-up should have ended by ``now``."""
        return [a.name for a in self._agents.values() if a.wrap and a.wrap.until <= now]

    # -- computing states ------------------------------------------------------------------
    def _agent(self, name: str) -> _Agent:
        agent = self._agents.get(name) or self._agents.get(name := self.device(name))
        if agent is None:
            agent = self._agents[name] = _Agent(name)
        return agent

    def _activity(self, agent: _Agent) -> tuple[AgentState | None, _Leg | None]:
        best: _Leg | None = None
        for leg in agent.legs.values():
            if best is None or RANK[leg.state] > RANK[best.state]:
                best = leg
        if best is not None:
            return best.state, best
        return _DEVICE_BUSY.get(self._devices.get(agent.name, "")), None

    def _changes(self, agents: Iterable[_Agent], at: float) -> list[AgentChanged]:
        out: list[AgentChanged] = []
        done: set[str] = set()
        for agent in agents:
            if agent.name in done:
                continue
            done.add(agent.name)
            change = self._recompute(agent, at)
            if change is not None:
                out.append(change)
        return out

    def _recompute(self, agent: _Agent, at: float) -> AgentChanged | None:
        activity, leg = self._activity(agent)
        device_gone = self._devices.get(agent.name) in _DEVICE_GONE
        memberships = []
        for queue in sorted(agent.members):
            member = agent.members[queue]
            state = self._member_state(agent, member, activity, device_gone)
            reason = member.reason if member.paused else None
            if (state, reason) != (member.state, member.shown):
                member.state, member.shown, member.since = state, reason, at
            memberships.append(Membership(queue, state, reason, member.since, member.paused))
        state = max(
            [activity or AgentState.LOGGED_OUT, *(m.state for m in memberships)],
            key=RANK.__getitem__,
        )
        if agent.wrap is not None and RANK[state] < RANK[AgentState.WRAP_UP]:
            state = AgentState.WRAP_UP
        why = _reason(state, memberships)
        call_id, on_queue = (leg.call_id, leg.queue) if leg is not None else (None, None)
        old = agent.status
        if leg is None and state is AgentState.WRAP_UP:
            if agent.wrap is not None:
                call_id, on_queue = agent.wrap.call_id, agent.wrap.queue
            elif old is not None and old.state is AgentState.WRAP_UP:  # until Asterisk unpauses
                call_id, on_queue = old.call_id, old.queue
        since = old.since if old and (old.state, old.reason) == (state, why) else at
        status = AgentStatus(
            agent.name,
            state,
            why,
            since,
            call_id,
            on_queue,
            tuple(memberships),
            agent.wrap.until if agent.wrap is not None else None,
            self.pbx_name,
        )
        if old == status:
            return None
        agent.status = status
        return AgentChanged(status, old.state if old is not None else None, at, old)

    def _member_state(
        self, agent: _Agent, member: _Member, activity: AgentState | None, device_gone: bool
    ) -> AgentState:
        if activity is not None:
            return activity
        if agent.wrap is not None or (member.paused and member.reason == WRAPUP_REASON):
            return AgentState.WRAP_UP
        if member.paused:
            return AgentState.PAUSED
        if device_gone or not member.reachable:
            return AgentState.LOGGED_OUT
        return AgentState.AVAILABLE


def _reason(state: AgentState, memberships: list[Membership]) -> str | None:
    if state is AgentState.WRAP_UP:
        return WRAPUP_REASON
    if state is AgentState.PAUSED:
        return next((m.reason for m in memberships if m.state is AgentState.PAUSED), None)
    return None


_Handler = Callable[[AgentBoard, Message, float], "_Agent | None"]
#: The AMI events the board reads itself (the rest reach it as the call model's effects).
_HANDLERS: Mapping[str, _Handler] = {
    "QueueMember": AgentBoard._on_member,
    "QueueMemberAdded": AgentBoard._on_member,
    "QueueMemberStatus": AgentBoard._on_member,
    "QueueMemberRemoved": AgentBoard._on_member_removed,
    "QueueMemberPause": AgentBoard._on_member_pause,
    "DeviceStateChange": AgentBoard._on_device_state,
}
#: The AMI event names :meth:`AgentBoard.apply` reads (each must be in the call model's
#: AMI_EVENTS, asked for or answering the resync: tests/unit/test_agent_state.py).
AGENT_EVENTS = frozenset(_HANDLERS)
