"""Following calls over AMI, in one of two ways.

* :func:`follow_calls` (``cti serve``): the AMI client feeds the call model through the
  tracker; the instance's :class:`~cti.calls.leadership.Leadership` publishes the
  events while it holds the lease (Redis Streams), records them (the PostgreSQL
  timeline) and shortens the expiry of ended calls' data.
* :func:`observe_calls` (``cti screenpop``): a call model of its own, because call
  control acts on the agent's own leg and must find it; it publishes nothing (the
  daemons' lease holder does, and the sidebar reads what it published).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import redis.asyncio as redis

from cti.agents.service import Listener
from cti.ami.client import AmiClient
from cti.ami.filters import event_filter
from cti.app.agents import Agents, open_agents
from cti.app.calldata import CallData
from cti.app.resources import ami_client
from cti.app.supervisor import Supervisor
from cti.batch_writer import BatchWriter, DeadLetterSink
from cti.calls.control import CallControl
from cti.calls.events import CallEvent
from cti.calls.leadership import Leadership
from cti.calls.model import CALL_CENTRE_EVENTS, CallModel
from cti.calls.sink import CallModelSink
from cti.calls.tracker import CallTracker
from cti.config import Config
from cti.screenpop.metrics import AmiSource
from cti.timeline.store import timeline_batch_writer

#: What both ways ask Asterisk for: the events the call model uses (its table).
CALL_MODEL_FILTERS = (event_filter(CALL_CENTRE_EVENTS),)


@dataclass(frozen=True, slots=True)
class CallFollowing:
    ami: AmiClient
    control: CallControl
    #: None when this process only observes (it never publishes).
    leadership: Leadership | None = None
    writers: tuple[BatchWriter[Any], ...] = ()
    #: Agent states and wrap-up (None when this process only observes).
    agents: Agents | None = None

    def ami_source(self) -> AmiSource:
        """The AMI figures for /metrics."""
        ami, leadership = self.ami, self.leadership
        return AmiSource(
            connected=lambda: ami.is_connected,
            events=lambda: ami.stats.events,
            leader=lambda: leadership is not None and leadership.leader,
            standby_window=lambda: leadership.standby_backlog if leadership else 0,
            standby_overflow=lambda: leadership.standby_overflow if leadership else 0,
        )


async def follow_calls(
    supervisor: Supervisor,
    config: Config,
    *,
    owner: str,
    pool: asyncpg.Pool,
    redis_client: redis.Redis,
    call_data: CallData,
    dead_letters: DeadLetterSink | None,
    on_agent_change: Sequence[Listener] = (),
) -> CallFollowing:
    """Follow, and publish while leading (see the module docstring); follow the agents'
    states too (cti.agents: ``on_agent_change`` listeners, :mod:`cti.app.agents`)."""
    model = CallModel()
    timeline: BatchWriter[Any] = BatchWriter(
        "timeline", timeline_batch_writer(pool), dead_letters=dead_letters
    )
    store, after_end_s = call_data.store, config.call_data_after_end_s

    async def expire_batch(call_ids: Sequence[str]) -> None:
        for call_id in call_ids:
            await store.expire_after_end(call_id, after_end_s)

    expiry: BatchWriter[str] = BatchWriter(
        "call-data-expiry", expire_batch, dead_letters=dead_letters
    )
    agents: Agents | None = None

    def record(event: CallEvent) -> None:
        if agents is None or not agents.record(event):
            timeline.submit(event)

    leadership = Leadership(
        redis_client,
        call_data.events,
        owner,
        lease_ttl_s=config.ami_lease_ttl_s,
        record=record,
        call_ended=expiry.submit,
    )
    controls: list[CallControl] = []

    async def pause(
        _pbx: str, interface: str, paused: bool, reason: str | None, queue: str | None
    ) -> None:  # one PBX here: its own (cti.agents.wrapup.Pause)
        await controls[0].pause(interface, paused, reason, queue)

    agents = open_agents(
        supervisor,
        pool=pool,
        redis_client=redis_client,
        handover=leadership.take,
        leading=lambda: leadership.leader,
        pause=pause,
        dead_letters=dead_letters,
        on_change=on_agent_change,
        pbx=config.pbx_list()[0],
    )
    tracker = CallTracker(
        model,
        handover=leadership.take,
        on_connected=leadership.ami_connected,
        followers=[agents.service],
    )
    supervisor.writer("call-events", leadership.run)
    supervisor.writer("timeline-writer", timeline.run)
    supervisor.writer("call-data-expiry", expiry.run)
    ami = await supervisor.resource(
        ami_client(config, tracker, id_prefix=f"cti.{owner}", filters=CALL_MODEL_FILTERS)
    )
    controls.append(CallControl(ami, model))
    return CallFollowing(ami, controls[0], leadership, (timeline, expiry, agents.state_log), agents)


async def observe_calls(supervisor: Supervisor, config: Config, *, owner: str) -> CallFollowing:
    """Follow for call control only (see the module docstring)."""
    model = CallModel()
    sink = CallModelSink(model, on_effects=lambda _effects: None)
    ami = await supervisor.resource(
        ami_client(config, sink, id_prefix=f"cti-screenpop.{owner}", filters=CALL_MODEL_FILTERS)
    )
    return CallFollowing(ami, CallControl(ami, model))
