"""The wallboard's figures: what each queue, tier, rule and agent looks like now and today.

Fed the leader's call events (their wire form, :meth:`cti.calls.events.CallEvent.as_json`,
in stream order) and, for the agents, the agent board's statuses; it keeps counts, not
history, so one event costs the same however many wallboards are open.

Definitions (the page states them too, from :data:`FORMULA`):

* **offered**: calls that joined the queue (``queued``);
* **answered**: a queued call's first agent connected from that queue; its **wait** is
  the answer's time minus the queueing time (the events' AMI timestamps);
* **abandoned**: the caller hung up in the queue (``abandoned``); a **short abandon**
  waited at most ``short_abandon_s`` (default 5 s);
* **service level** = answered with wait ≤ ``sl_threshold_s`` (default 20 s)
  ÷ (answered + abandoned after ``short_abandon_s``); none while that is zero;
* **average speed of answer** (ASA) = total wait of the answered ÷ answered;
* **abandon rate** = abandoned after ``short_abandon_s`` ÷ (answered + abandoned after
  ``short_abandon_s``);
* **today** is the centre's day in its own time zone: counts reset when an event (or
  the clock of a snapshot) is on a later local date; **rolling 30 minutes** sums
  one-minute buckets (the current minute and the 29 before it), so it never resets;
* a call is counted on the day (and in the minute) its outcome happened; per tier and
  per rule: calls waiting now, and the average wait of calls that stopped waiting today
  (answered or abandoned).

A call that leaves the queue without an answer or an abandon (a queue timeout) is
offered but neither answered nor abandoned; it stops waiting when it ends.

**Several PBXes** (:mod:`cti.pbx`): a queue is counted **by its name, across PBXes**
(``support`` on PBX ``a`` and on ``b`` is one service, one service level: the plan's
queues are the services; name them apart to see them apart). A call crossing PBXes
keeps its ``call_key``, so joining ``b``'s queue ends its wait in ``a``'s, as between
two queues of one PBX. Agents are their devices as cti names them (``PJSIP/2001@b``),
each with its ``pbx``.

Pure: no I/O, no clock (times are passed in); the state round-trips through JSON
(:meth:`Figures.to_state`, :meth:`Figures.from_state`) for a standby's takeover.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from cti.wallboard.agent_view import MAX_GROUPS, AgentView, agent_view, number, text

ROLLING_MINUTES = 30
DEFAULT_SL_THRESHOLD_S = 20.0
DEFAULT_SHORT_ABANDON_S = 5.0
#: Bounds on what one instance remembers (a runaway feed must not grow it forever).
MAX_CALLS = 100_000

FORMULA = (
    "Service level = calls answered within the queue's threshold "
    "÷ (calls answered + calls abandoned after the short-abandon threshold). "
    "Abandon rate = calls abandoned after the short-abandon threshold "
    "÷ (calls answered + calls abandoned after the short-abandon threshold). "
    "ASA = total wait of answered calls ÷ calls answered. "
    "Today = the centre's day in its time zone; rolling = the last 30 one-minute buckets."
)

AGENT_STATES = ("logged_out", "available", "ringing", "on_call", "on_hold", "wrap_up", "paused")


@dataclass(frozen=True, slots=True)
class QueueTargets:
    """A queue's thresholds from the routing plan."""

    sl_threshold_s: float = DEFAULT_SL_THRESHOLD_S
    short_abandon_s: float = DEFAULT_SHORT_ABANDON_S


@dataclass(slots=True)
class Tally:
    """Outcomes over one period (a day, a minute)."""

    offered: int = 0
    answered: int = 0
    answered_within: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    answer_wait_s: float = 0.0

    def add(self, other: Tally) -> None:
        self.offered += other.offered
        self.answered += other.answered
        self.answered_within += other.answered_within
        self.abandoned += other.abandoned
        self.short_abandoned += other.short_abandoned
        self.answer_wait_s += other.answer_wait_s

    def view(self) -> dict[str, Any]:
        counted = self.answered + self.abandoned - self.short_abandoned
        return {
            "offered": self.offered,
            "answered": self.answered,
            "answered_within": self.answered_within,
            "abandoned": self.abandoned,
            "short_abandoned": self.short_abandoned,
            "service_level": self.answered_within / counted if counted else None,
            "asa_s": self.answer_wait_s / self.answered if self.answered else None,
            "abandon_rate": (self.abandoned - self.short_abandoned) / counted if counted else None,
        }


@dataclass(slots=True)
class Waits:
    """Calls that stopped waiting (answered or abandoned) and their total wait."""

    count: int = 0
    total_s: float = 0.0


@dataclass(slots=True)
class Waiter:
    call_key: str
    since: float
    tier: str
    rule: str
    #: The PBX whose queue the caller waits in (None: one PBX, or saved before).
    pbx: str | None = None


@dataclass(slots=True)
class QueueFigures:
    waiting: dict[str, Waiter] = field(default_factory=dict)
    today: Tally = field(default_factory=Tally)
    minutes: dict[int, Tally] = field(default_factory=dict)
    tiers: dict[str, Waits] = field(default_factory=dict)
    rules: dict[str, Waits] = field(default_factory=dict)


@dataclass(slots=True)
class CurrentCall:
    call_key: str
    queue: str | None
    tier: str | None
    talk_since: float
    #: The PBX of the agent's leg (None: one PBX, or saved before).
    pbx: str | None = None


@dataclass(slots=True)
class AgentFigures:
    handled_today: int = 0
    call: CurrentCall | None = None


@dataclass(slots=True)
class Changed:
    """What one event changed: the queues and agents whose view to send again."""

    queues: set[str] = field(default_factory=set)
    agents: set[str] = field(default_factory=set)

    def update(self, other: Changed) -> None:
        self.queues |= other.queues
        self.agents |= other.agents

    def __bool__(self) -> bool:
        return bool(self.queues or self.agents)


class Figures:
    """The counts behind the wallboard (see the module docstring for what they mean)."""

    def __init__(
        self,
        timezone: ZoneInfo,
        targets: Callable[[str], QueueTargets] = lambda _queue: QueueTargets(),
        pause_max: Callable[[str], float | None] = lambda _reason: None,
    ) -> None:
        self.timezone = timezone
        self.targets = targets
        self.pause_max = pause_max
        #: Every agent's latest status (``agent_state`` events), by device.
        self.statuses: dict[str, AgentView] = {}
        self.day = ""  # the local date the "today" counts are for (ISO), "" before any
        self.queues: dict[str, QueueFigures] = {}
        self.agents: dict[str, AgentFigures] = {}
        #: call_key → (queue, tier, rule) of the call's last queueing, until it ends.
        self.calls: dict[str, tuple[str, str, str]] = {}

    # -- time ---------------------------------------------------------------------------------
    def local_day(self, at: float) -> str:
        return datetime.fromtimestamp(at, self.timezone).date().isoformat()

    def roll(self, at: float) -> bool:
        """Start a new day if ``at`` is on a later local date. True if one started."""
        day = self.local_day(at)
        if day <= self.day:
            return False
        self.day = day
        for queue in self.queues.values():
            queue.today = Tally()
            queue.tiers.clear()
            queue.rules.clear()
        for agent in self.agents.values():
            agent.handled_today = 0
        return True

    def _queue(self, name: str) -> QueueFigures:
        queue = self.queues.get(name)
        if queue is None:
            queue = self.queues[name] = QueueFigures()
        return queue

    def _agent(self, name: str) -> AgentFigures:
        agent = self.agents.get(name)
        if agent is None:
            agent = self.agents[name] = AgentFigures()
        return agent

    def _count(self, queue: QueueFigures, at: float, change: Callable[[Tally], None]) -> None:
        change(queue.today)
        minute = int(at // 60)
        bucket = queue.minutes.get(minute)
        if bucket is None:
            bucket = queue.minutes[minute] = Tally()
            for old in [m for m in queue.minutes if m <= minute - ROLLING_MINUTES]:
                del queue.minutes[old]
        change(bucket)

    # -- events ---------------------------------------------------------------------------------
    def apply(self, event: Mapping[str, Any]) -> Changed:
        """One call event (its wire form). Returns what it changed."""
        changed = Changed()
        kind = event.get("event")
        at = number(event.get("at"))
        key = event.get("call_key")
        if at is None or not isinstance(key, str):
            return changed
        if self.roll(at):
            changed.queues |= set(self.queues)
            changed.agents |= set(self.agents)
        if kind == "queued":
            self._queued(key, at, event, changed)
        elif kind == "connected":
            self._connected(key, at, event, changed)
        elif kind == "abandoned":
            self._abandoned(key, at, event, changed)
        elif kind == "queue_left" and event.get("reason") == "timeout":
            self._stop_waiting(key, changed)  # the queue let the caller go: not waiting
        elif kind == "left":
            agent = text(event.get("agent"))
            figures = self.agents.get(agent)
            if figures is not None and figures.call is not None and figures.call.call_key == key:
                figures.call = None
                changed.agents.add(agent)
        elif kind == "ended":
            self._ended(key, text(event.get("pbx")) or None, changed)
        elif kind == "agent_state":
            self._agent_state(event, changed)
        return changed

    def _agent_state(self, event: Mapping[str, Any], changed: Changed) -> None:
        status = agent_view(event)
        if status is None:
            return
        before = self.statuses.get(status.agent)
        if before is None and len(self.statuses) >= MAX_CALLS:
            return
        self.statuses[status.agent] = status
        changed.agents.add(status.agent)
        changed.queues.update(status.queues)
        if before is not None:
            changed.queues.update(before.queues)

    def _queued(self, key: str, at: float, event: Mapping[str, Any], changed: Changed) -> None:
        name = text(event.get("queue"))
        if not name:
            return
        tier, rule = text(event.get("tier"), "unknown"), text(event.get("rule"), "none")
        self._stop_waiting(key, changed)
        queue = self._queue(name)
        queue.waiting[key] = Waiter(key, at, tier, rule, text(event.get("pbx")) or None)
        if key not in self.calls and len(self.calls) >= MAX_CALLS:
            del self.calls[next(iter(self.calls))]
        self.calls[key] = (name, tier, rule)
        self._count(queue, at, _offered)
        changed.queues.add(name)

    def _waiter(self, key: str) -> tuple[str, QueueFigures, Waiter] | None:
        known = self.calls.get(key)
        if known is None:
            return None
        queue = self.queues.get(known[0])
        waiter = queue.waiting.get(key) if queue is not None else None
        if queue is None or waiter is None:
            return None
        return known[0], queue, waiter

    def _stop_waiting(self, key: str, changed: Changed) -> None:
        found = self._waiter(key)
        if found is not None:
            del found[1].waiting[key]
            changed.queues.add(found[0])

    def _waited(self, queue: QueueFigures, waiter: Waiter, wait_s: float) -> None:
        for groups, name in ((queue.tiers, waiter.tier), (queue.rules, waiter.rule)):
            waits = groups.get(name)
            if waits is None:
                if len(groups) >= MAX_GROUPS:
                    continue
                waits = groups[name] = Waits()
            waits.count += 1
            waits.total_s += wait_s

    def _connected(self, key: str, at: float, event: Mapping[str, Any], changed: Changed) -> None:
        agent = text(event.get("agent"))
        found = self._waiter(key)
        if found is not None:
            name, queue, waiter = found
            wait = max(0.0, at - waiter.since)
            within = wait <= self.targets(name).sl_threshold_s

            def answered(tally: Tally) -> None:
                tally.answered += 1
                tally.answered_within += within
                tally.answer_wait_s += wait

            del queue.waiting[key]
            self._count(queue, at, answered)
            self._waited(queue, waiter, wait)
            changed.queues.add(name)
        if not agent:
            return
        known = self.calls.get(key)
        figures = self._agent(agent)
        figures.handled_today += 1
        figures.call = CurrentCall(
            key,
            text(event.get("queue")) or (known[0] if known else None),
            known[1] if known else None,
            at,
            text(event.get("pbx")) or None,
        )
        changed.agents.add(agent)

    def _abandoned(self, key: str, at: float, event: Mapping[str, Any], changed: Changed) -> None:
        found = self._waiter(key)
        if found is not None:
            name, queue, waiter = found
            wait = max(0.0, at - waiter.since)
            del queue.waiting[key]
            self._waited(queue, waiter, wait)
        else:
            name = text(event.get("queue"))
            if not name:
                return
            queue = self._queue(name)
            wait = number(event.get("hold_time_s")) or 0.0
        short = wait <= self.targets(name).short_abandon_s

        def abandoned(tally: Tally) -> None:
            tally.abandoned += 1
            tally.short_abandoned += short

        self._count(queue, at, abandoned)
        changed.queues.add(name)

    def _ended(self, key: str, pbx: str | None, changed: Changed) -> None:
        """The call's part on ``pbx`` ended (a call that crossed PBXes ends once per
        PBX): only what happened on that PBX is over; the same call waiting or talking
        on another PBX goes on. ``pbx`` None (or figures saved without one): all of it."""

        def here(where: str | None) -> bool:
            return pbx is None or where is None or where == pbx

        found = self._waiter(key)
        if found is None or here(found[2].pbx):
            self._stop_waiting(key, changed)
            self.calls.pop(key, None)
        for name, figures in self.agents.items():
            if figures.call is not None and figures.call.call_key == key and here(figures.call.pbx):
                figures.call = None
                changed.agents.add(name)

    # -- views ----------------------------------------------------------------------------------
    def rolling(self, name: str, now: float) -> Tally:
        total = Tally()
        queue = self.queues.get(name)
        if queue is not None:
            first = int(now // 60) - ROLLING_MINUTES + 1
            for minute, tally in queue.minutes.items():
                if minute >= first:
                    total.add(tally)
        return total

    def queue_view(
        self, name: str, now: float, agents: Iterable[AgentView] | None = None
    ) -> dict[str, Any]:
        """One queue's figures as of ``now`` (``agents``: default, the known statuses)."""
        queue = self.queues.get(name) or QueueFigures()
        targets = self.targets(name)
        stale = self.local_day(now) > self.day  # no event yet today: nothing counted today
        today = Tally() if stale else queue.today
        counts = dict.fromkeys(AGENT_STATES, 0)
        paused: dict[str, int] = {}
        for agent in self.statuses.values() if agents is None else agents:
            if name not in agent.queues:
                continue
            state, why = agent.in_queue(name)
            counts[state] = counts.get(state, 0) + 1
            if state == "paused":
                reason = why or "none"
                paused[reason] = paused.get(reason, 0) + 1
        tiers: dict[str, dict[str, Any]] = {}
        rules: dict[str, dict[str, Any]] = {}
        for groups, out, attr in ((queue.tiers, tiers, "tier"), (queue.rules, rules, "rule")):
            for group, waits in ({} if stale else groups).items():
                out[group] = _group(0, waits)
            for waiter in queue.waiting.values():
                group = getattr(waiter, attr)
                if group not in out:
                    out[group] = _group(0, Waits())
                out[group]["waiting"] += 1
        return {
            "waiting": len(queue.waiting),
            "oldest_wait_since": min((w.since for w in queue.waiting.values()), default=None),
            "agents": counts,
            "paused_by_reason": paused,
            "today": today.view(),
            "rolling_30m": self.rolling(name, now).view(),
            "sl_threshold_s": targets.sl_threshold_s,
            "short_abandon_s": targets.short_abandon_s,
            "tiers": tiers,
            "rules": rules,
        }

    def agent_view(self, name: str, now: float, status: AgentView | None = None) -> dict[str, Any]:
        """One agent: its state (``status``, default the known one; its pause's maximum
        from the plan), current call and calls handled today."""
        status = status or self.statuses.get(name)
        if status is not None and status.state == "paused" and status.max_minutes is None:
            status = replace(status, max_minutes=self.pause_max(status.reason or ""))
        figures = self.agents.get(name) or AgentFigures()
        handled = 0 if self.local_day(now) > self.day else figures.handled_today
        call = figures.call
        over = (
            status is not None
            and status.state == "paused"
            and status.max_minutes is not None
            and now - status.since > status.max_minutes * 60
        )
        return {
            "pbx": status.pbx if status else None,
            "state": status.state if status else None,
            "reason": status.reason if status else None,
            "since": status.since if status else None,
            "max_minutes": status.max_minutes if status else None,
            "pause_over_max": over,
            "queues": list(status.queues) if status else [],
            "call": (
                {"queue": call.queue, "tier": call.tier, "talk_since": call.talk_since}
                if call is not None
                else None
            ),
            "handled_today": handled,
        }

    def snapshot(self, now: float, agents: Iterable[AgentView] | None = None) -> dict[str, Any]:
        """Every queue and agent (queues named by an agent's membership included);
        ``agents``: default, the statuses of the ``agent_state`` events seen."""
        statuses = self.statuses if agents is None else {a.agent: a for a in agents}
        names = set(self.queues)
        for status in statuses.values():
            names.update(status.queues)
        return {
            "day": self.local_day(now),
            "timezone": self.timezone.key,
            "formula": FORMULA,
            "queues": {
                name: self.queue_view(name, now, statuses.values()) for name in sorted(names)
            },
            "agents": {
                name: self.agent_view(name, now, statuses.get(name))
                for name in sorted(set(self.agents) | set(statuses))
            },
        }

    # -- state ------------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """Everything counted, as JSON-able data (:meth:`from_state` reads it back)."""
        return {
            "day": self.day,
            "queues": {
                name: {
                    "waiting": [asdict(w) for w in q.waiting.values()],
                    "today": asdict(q.today),
                    "minutes": {str(m): asdict(t) for m, t in q.minutes.items()},
                    "tiers": {k: asdict(v) for k, v in q.tiers.items()},
                    "rules": {k: asdict(v) for k, v in q.rules.items()},
                }
                for name, q in self.queues.items()
            },
            "agents": {
                name: {
                    "handled_today": a.handled_today,
                    "call": asdict(a.call) if a.call is not None else None,
                }
                for name, a in self.agents.items()
            },
            "calls": {key: list(value) for key, value in self.calls.items()},
            "statuses": [asdict(status) for status in self.statuses.values()],
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Replace the counts with ``state`` (as :meth:`to_state` made it)."""
        self.day = str(state.get("day", ""))
        self.queues = {
            name: QueueFigures(
                waiting={w["call_key"]: Waiter(**w) for w in q["waiting"]},
                today=Tally(**q["today"]),
                minutes={int(m): Tally(**t) for m, t in q["minutes"].items()},
                tiers={k: Waits(**v) for k, v in q["tiers"].items()},
                rules={k: Waits(**v) for k, v in q["rules"].items()},
            )
            for name, q in state.get("queues", {}).items()
        }
        self.agents = {
            name: AgentFigures(a["handled_today"], CurrentCall(**a["call"]) if a["call"] else None)
            for name, a in state.get("agents", {}).items()
        }
        self.calls = {
            key: (str(v[0]), str(v[1]), str(v[2])) for key, v in state.get("calls", {}).items()
        }
        self.statuses = {}
        for raw in state.get("statuses", ()):
            status = AgentView(
                **{
                    **raw,
                    "queues": tuple(raw["queues"]),
                    "members": tuple(tuple(m) for m in raw["members"]),
                }
            )
            self.statuses[status.agent] = status


def _offered(tally: Tally) -> None:
    tally.offered += 1


def _group(waiting: int, waits: Waits) -> dict[str, Any]:
    return {
        "waiting": waiting,
        "waited_today": waits.count,
        "avg_wait_s": waits.total_s / waits.count if waits.count else None,
    }
