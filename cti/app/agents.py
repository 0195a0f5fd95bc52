"""Agent states and wrap-up (cti.agents), wired into the call following of ``cti serve``.

:func:`open_agents` builds the board, the service the tracker feeds, the wrap-up
service and the state log's writer. Its ``on_change`` listeners get every batch of
:class:`~cti.agents.state.AgentChanged` (on every instance; ``Agents.leading()`` says
whether this one leads): that is where the wallboard plugs in, here or later with
``Agents.service.listen``. The queues' ``wrapup_s`` come from the routing plan, which
``cti serve`` opens after the call following: :meth:`PlanLink.watch` connects it.

Several PBXes (:mod:`cti.pbx`): :func:`open_agents` is called once per PBX followed,
with that PBX (its board names its agents ``PJSIP/2001@b``), that PBX's leadership
(``handover``, ``leading``) and the ``pause`` of the composition, which sends each
QueuePause to the PBX it names. Each PBX's :class:`Agents` is led by that PBX's leader:
the wrap-up of an agent on ``b`` by whoever holds ``b``'s lease.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import asyncpg
import redis.asyncio as redis

from cti.agents.news import AGENT_EVENT, StateInterval, intervals_of
from cti.agents.service import AgentService, Listener
from cti.agents.state import AgentBoard
from cti.agents.store import AgentStore, state_log_batch_writer
from cti.agents.wrapup import Pause, WrapUpService
from cti.app.supervisor import Supervisor
from cti.batch_writer import BatchWriter, DeadLetterSink
from cti.calls.events import CallEvent
from cti.pbx import DEFAULT_PBX, Pbx
from cti.routing.plan_watcher import PlanWatcher
from cti.routing.table import RoutingTable


@dataclass(slots=True)
class PlanLink:
    """The routing plan as the agents see it: empty (no wrap-up) until linked."""

    watcher: PlanWatcher | None = None
    fixed: RoutingTable = field(default_factory=RoutingTable)

    def watch(self, watcher: PlanWatcher) -> None:
        self.watcher = watcher

    def wrapup_s(self, queue: str | None) -> int:
        table = self.watcher.table if self.watcher is not None else self.fixed
        return table.wrapup_s(queue)


@dataclass(frozen=True, slots=True)
class Agents:
    service: AgentService
    wrapup: WrapUpService
    store: AgentStore
    state_log: BatchWriter[StateInterval]
    plan: PlanLink

    def leading(self) -> bool:
        return self.service.leading()

    def record(self, event: CallEvent) -> bool:
        """The leader's record hook for an ``agent_state`` event: its closed intervals
        go to the state log. False for any other event (the timeline's)."""
        if event.kind != AGENT_EVENT:
            return False
        for interval in intervals_of(event):
            self.state_log.submit(interval)
        return True


def open_agents(
    supervisor: Supervisor,
    *,
    pool: asyncpg.Pool,
    redis_client: redis.Redis,
    handover: Callable[[Sequence[CallEvent]], None],
    leading: Callable[[], bool],
    pause: Pause,
    dead_letters: DeadLetterSink | None,
    on_change: Sequence[Listener] = (),
    clock: Callable[[], float] = time.time,
    pbx: Pbx | None = None,
) -> Agents:
    """``pbx``: the PBX these agents are on (default: the one PBX of a deployment
    without ``CTI_PBXES``). Its tasks are named after it when it is not that one."""
    plan = PlanLink()
    board = AgentBoard(wrapup_s=plan.wrapup_s, clock=clock, pbx=pbx)
    store = AgentStore(redis_client)
    suffix = "" if pbx is None or pbx.name == DEFAULT_PBX else f"-{pbx.name}"
    state_log: BatchWriter[StateInterval] = BatchWriter(  # one name per PBX: /metrics, /readyz
        "agent-state-log" + suffix, state_log_batch_writer(pool), dead_letters=dead_letters
    )
    service = AgentService(board, store, handover=handover, leading=leading, on_change=on_change)
    wrapup = WrapUpService(board, store, pause, is_leader=leading, emit=service.emit, clock=clock)
    service.listen(wrapup.changed)
    supervisor.writer("agent-state-log" + suffix, state_log.run)
    supervisor.background("agent-states" + suffix, service.run)
    supervisor.background("wrap-up" + suffix, wrapup.run)
    return Agents(service, wrapup, store, state_log, plan)
