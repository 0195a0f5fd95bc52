"""Following calls over AMI, in one of two ways, on every PBX (:mod:`cti.pbx`).

* :func:`follow_calls` (``cti serve``): each PBX's AMI client feeds that PBX's call
  model through its tracker; that PBX's :class:`~cti.calls.leadership.Leadership`
  publishes its events while it holds that PBX's lease (Redis Streams), records them
  (the PostgreSQL timeline) and shortens the expiry of ended calls' data.
* :func:`observe_calls` (``cti screenpop``): a call model per PBX of its own, because
  call control acts on the agent's own leg and must find it; it publishes nothing (the
  daemons' lease holders do, and the sidebar reads what they published).

Why one of everything per PBX: one PBX's AMI going down, restarting or resyncing must
not disturb the others. Each PBX has its own AMI task, its own lease
(:func:`cti.calls.lease.lease_key`) held only while that PBX's AMI is up, its own
standby window and outbox; an instance may lead PBX ``a`` and stand by for ``b`` (with
several PBXes the leases spread over the instances: :mod:`cti.calls.spreading`). What
they share is what is not about one PBX: the timeline and call-data writers, and one
:class:`~cti.calls.control.CallControl` that sends each action to the PBX of the
agent's device. Without ``CTI_PBXES`` there is one PBX, ``default``, with the lease key,
task names and AMI action ids it always had.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import redis.asyncio as redis

from cti.agents.service import Listener
from cti.ami.client import AmiClient, EventSink
from cti.ami.filters import event_filter
from cti.app.agents import Agents, open_agents
from cti.app.calldata import CallData
from cti.app.resources import ami_client
from cti.app.supervisor import Supervisor
from cti.batch_writer import BatchWriter, DeadLetterSink
from cti.calls.control import CallControl, PbxLine, check_pause_reason, check_queue
from cti.calls.events import CallEvent
from cti.calls.leadership import Leadership
from cti.calls.lease import lease_key
from cti.calls.model import CALL_CENTRE_EVENTS, CallModel
from cti.calls.presence import Presence
from cti.calls.publisher import call_sets_after_end
from cti.calls.sink import CallModelSink
from cti.calls.spreading import Spreading
from cti.calls.tracker import CallTracker, model_for
from cti.config import Config
from cti.pbx import DEFAULT_PBX, Pbx
from cti.screenpop.metrics import AmiSource
from cti.timeline.store import timeline_batch_writer

#: What both ways ask Asterisk for: the events the call model uses (its table).
CALL_MODEL_FILTERS = (event_filter(CALL_CENTRE_EVENTS),)


@dataclass(frozen=True, slots=True)
class PbxFollowing:
    """One PBX followed: its AMI connection and call model; when this process
    publishes, its leadership (lease, standby window, outbox) and its agents' states."""

    pbx: Pbx
    ami: AmiClient
    model: CallModel
    #: None when this process only observes (it never publishes).
    leadership: Leadership | None = None
    agents: Agents | None = None

    def ami_source(self) -> AmiSource:
        """This PBX's AMI figures for /metrics (labelled with its name there)."""
        ami, leadership = self.ami, self.leadership
        return AmiSource(
            connected=lambda: ami.is_connected,
            events=lambda: ami.stats.events,
            leader=lambda: leadership is not None and leadership.leader,
            standby_window=lambda: leadership.standby_backlog if leadership else 0,
            standby_overflow=lambda: leadership.standby_overflow if leadership else 0,
            lease_changes=lambda: leadership.lease.changes if leadership else 0,
        )


@dataclass(frozen=True, slots=True)
class CallFollowing:
    """Every PBX followed (the home PBX first), call control over all of them, and the
    record writers they share."""

    pbxes: tuple[PbxFollowing, ...]
    control: CallControl
    writers: tuple[BatchWriter[Any], ...] = ()

    @property
    def home(self) -> PbxFollowing:
        return self.pbxes[0]

    def pbx(self, name: str) -> PbxFollowing:
        """The PBX of that name (KeyError if it is not followed)."""
        for followed in self.pbxes:
            if followed.pbx.name == name:
                return followed
        raise KeyError(name)

    # The home PBX's parts: all there is without CTI_PBXES (tests; the wallboard has a
    # lease of its own, cti.app.wallboard).
    @property
    def ami(self) -> AmiClient:
        return self.home.ami

    @property
    def leadership(self) -> Leadership | None:
        return self.home.leadership

    @property
    def agents(self) -> Agents | None:
        return self.home.agents

    @property
    def amis(self) -> dict[str, AmiClient]:
        """Each PBX's AMI connection by name (for /readyz)."""
        return {followed.pbx.name: followed.ami for followed in self.pbxes}

    def ami_sources(self) -> dict[str, AmiSource]:
        """Each PBX's AMI figures by name (for /metrics)."""
        return {followed.pbx.name: followed.ami_source() for followed in self.pbxes}

    @property
    def backlog(self) -> int:
        """Call events waiting in the outboxes (every PBX this instance leads)."""
        return sum(f.leadership.backlog for f in self.pbxes if f.leadership is not None)


def _named(base: str, pbx: Pbx) -> str:
    """A task's name or an AMI action-id prefix for this PBX: ``base`` itself for the
    one PBX of a deployment without ``CTI_PBXES`` (as it always was)."""
    return base if pbx.name == DEFAULT_PBX else f"{base}@{pbx.name}"


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
    """Follow every PBX, and publish each one's events while leading it (see the module
    docstring); follow the agents' states too (cti.agents: ``on_agent_change``
    listeners, :mod:`cti.app.agents`)."""
    timeline: BatchWriter[Any] = BatchWriter(
        "timeline", timeline_batch_writer(pool), dead_letters=dead_letters
    )
    store, after_end_s = call_data.store, config.call_data_after_end_s

    async def expire_batch(call_ids: Sequence[str]) -> None:
        for call_id in call_ids:
            await store.expire_after_end(call_id, after_end_s)
            await call_sets_after_end(redis_client, call_id, after_end_s)

    expiry: BatchWriter[str] = BatchWriter(
        "call-data-expiry", expire_batch, dead_letters=dead_letters
    )
    controls: list[CallControl] = []
    models: dict[str, CallModel] = {}

    def call_ended(pbx: str) -> Callable[[str], None]:
        def ended(call_id: str) -> None:
            # A call on several PBXes ends with its last part: while another PBX still
            # carries it (a transfer that left its first leg up, an overflow), its data
            # keeps its full lifetime, or CTI_CALL_DATA_AFTER_END_S=0 would delete it
            # under the agent who has the call now.
            for name, model in models.items():
                live = model.call(call_id) if name != pbx else None
                if live is not None and not live.ended:
                    return
            expiry.submit(call_id)

        return ended

    async def pause(
        pbx: str, interface: str, paused: bool, reason: str | None, queue: str | None
    ) -> None:  # cti.agents.wrapup.Pause: the interface as that PBX names it
        fields = {"Interface": interface, "Paused": "true" if paused else "false"}
        if reason is not None:
            fields["Reason"] = check_pause_reason(reason) or ""
        if queue is not None:
            fields["Queue"] = check_queue(queue)
        await controls[0].send("QueuePause", pbx=pbx, **fields)

    # Several PBXes: their leases spread over the instances (cti.calls.spread); one PBX
    # keeps the plain lease, taken whenever possible.
    spreading = (
        Spreading(
            Presence(redis_client),
            owner,
            ttl_s=config.ami_lease_ttl_s,
            renew_s=config.ami_lease_ttl_s / 5,  # the Leadership's renewal interval
        )
        if len(config.pbx_list()) > 1
        else None
    )

    async def follow(pbx: Pbx) -> PbxFollowing:
        model = models[pbx.name] = model_for(pbx)
        agents: Agents | None = None

        def record(event: CallEvent) -> None:
            if agents is None or not agents.record(event):
                timeline.submit(event)

        leadership = Leadership(
            redis_client,
            call_data.events,
            owner,
            lease_ttl_s=config.ami_lease_ttl_s,
            lease_key=lease_key(pbx.name),
            record=record,
            call_ended=call_ended(pbx.name),
            spread=None if spreading is None else spreading.seat(pbx.name),
        )
        agents = open_agents(
            supervisor,
            pool=pool,
            redis_client=redis_client,
            handover=leadership.take,
            leading=lambda: leadership.leader,
            pause=pause,
            dead_letters=dead_letters,
            on_change=on_agent_change,
            pbx=pbx,
        )
        tracker = CallTracker(
            model,
            handover=leadership.take,
            on_connected=leadership.ami_connected,
            followers=[agents.service],
            pbx=pbx,
        )
        supervisor.writer(_named("call-events", pbx), leadership.run)
        ami = await _connect(supervisor, config, pbx, tracker, f"cti.{owner}")
        return PbxFollowing(pbx, ami, model, leadership, agents)

    supervisor.writer("timeline-writer", timeline.run)
    supervisor.writer("call-data-expiry", expiry.run)
    followed = [await follow(pbx) for pbx in config.pbx_list()]
    controls.append(CallControl.over([PbxLine(f.pbx.name, f.ami, f.model) for f in followed]))
    state_logs = tuple(f.agents.state_log for f in followed if f.agents is not None)
    return CallFollowing(tuple(followed), controls[0], (timeline, expiry, *state_logs))


async def _connect(
    supervisor: Supervisor, config: Config, pbx: Pbx, sink: EventSink, id_prefix: str
) -> AmiClient:
    """``pbx``'s AMI client, asking for the call model's events, connected (and
    reconnecting) for as long as the supervisor runs."""
    return await supervisor.resource(
        ami_client(
            config, sink, id_prefix=_named(id_prefix, pbx), filters=CALL_MODEL_FILTERS, pbx=pbx
        )
    )


async def observe_calls(supervisor: Supervisor, config: Config, *, owner: str) -> CallFollowing:
    """Follow every PBX for call control only (see the module docstring)."""
    followed: list[PbxFollowing] = []
    for pbx in config.pbx_list():
        model = model_for(pbx)
        sink = CallModelSink(model, on_effects=lambda _effects: None)
        ami = await _connect(supervisor, config, pbx, sink, f"cti-screenpop.{owner}")
        followed.append(PbxFollowing(pbx, ami, model))
    control = CallControl.over([PbxLine(f.pbx.name, f.ami, f.model) for f in followed])
    return CallFollowing(tuple(followed), control)
