"""Routing over FastAGI: the plan watcher, the router and the attach service, their record
writers, the server (scripts ``route`` and ``attach``)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from cti.agi.attach import attach_script
from cti.agi.route import route_script
from cti.agi.server import AgiLimits, AgiServer
from cti.app.calldata import CallData
from cti.app.resources import listening_agi, warm_pool
from cti.app.supervisor import Supervisor
from cti.attach import Attacher
from cti.batch_writer import BatchWriter, DeadLetterSink
from cti.breaker import CircuitBreaker
from cti.calldata.history import latest_version
from cti.config import Config
from cti.customers import PgLookup
from cti.interactions import interaction_batch_writer
from cti.lookup import BreakerProbe, log_transitions
from cti.reports.store import fill_routes
from cti.router import Router
from cti.routing.plan_watcher import PlanWatcher
from cti.screenpop.metrics import Metrics
from cti.timeline.store import timeline_batch_writer

#: Share of the route budget the customer lookup may use; the rest covers our own
#: work and the AGI round trips that set the variables.
LOOKUP_SHARE = 0.75


@dataclass(frozen=True, slots=True)
class Routing:
    plan: PlanWatcher
    router: Router
    agi: AgiServer
    interactions: BatchWriter[Any]
    #: Creates each routed call's data (version 1) in Redis.
    call_data: BatchWriter[Any]
    #: Re-attaches calls that crossed from another of our PBXes (the ``attach`` script).
    attacher: Attacher
    #: The ``attached`` events of those calls, on their timeline.
    crossings: BatchWriter[Any]

    @property
    def writers(self) -> tuple[BatchWriter[Any], ...]:
        return (self.interactions, self.call_data, self.crossings)


def watch_plan(supervisor: Supervisor, config: Config) -> PlanWatcher:
    """The routing plan, kept in step with PostgreSQL: for the router, and for the
    sidebar (its pause reasons and queues)."""
    plan = PlanWatcher(
        config.database_url,
        cache_path=Path(config.plan_cache) if config.plan_cache else None,
    )
    supervisor.background("plan-watcher", plan.run)
    return plan


async def open_routing(
    supervisor: Supervisor,
    config: Config,
    *,
    pool: asyncpg.Pool,
    plan: PlanWatcher,
    call_data: CallData,
    metrics: Metrics,
    dead_letters: DeadLetterSink | None,
    agi_limits: AgiLimits | None = None,
) -> Routing:
    """Wire the router to ``plan`` and start accepting calls (last: everything it hands
    records to is running by then)."""
    write_interactions = interaction_batch_writer(pool)

    async def write_routes(outcomes: Sequence[Any]) -> None:
        await write_interactions(outcomes)
        # A call whose route record comes after its end: its report offers get the
        # route's tier, rule, number and service now (idempotent, so a retry is harmless).
        await fill_routes(pool, [o.call_id for o in outcomes])

    interactions: BatchWriter[Any] = BatchWriter(
        "interactions", write_routes, dead_letters=dead_letters
    )
    created: BatchWriter[Any] = BatchWriter(
        "call-data", call_data.store.create_many, dead_letters=dead_letters
    )

    lookup = PgLookup(pool)
    breaker = CircuitBreaker()  # N lookups failed in a row: fail open at once
    log_transitions(breaker)
    metrics.watch_breaker(lambda: breaker.state)
    probe = BreakerProbe(breaker, lookup.ping)

    async def warm(stop: asyncio.Event) -> None:
        await warm_pool(pool, stop)

    router = Router(
        table=lambda: plan.table,
        find_customer=lookup.find_customer,
        default_queue=config.default_queue,
        region=config.default_region,
        lookup_budget_s=config.route_budget_s * LOOKUP_SHARE,
        interactions=interactions,
        call_data=created,
        history=call_data.history,
        on_routed=metrics.observe_route,
        breaker=breaker,
    )

    crossings: BatchWriter[Any] = BatchWriter(
        "crossings", timeline_batch_writer(pool), dead_letters=dead_letters
    )

    async def read_history(call_id: str) -> Any:
        return await latest_version(pool, call_id)

    pbxes = config.pbx_list()
    attacher = Attacher(
        router=router,
        table=lambda: plan.table,
        read_document=call_data.store.current,
        read_history=read_history,
        pbxes=pbxes,
        default_queue=config.default_queue,
        region=config.default_region,
        budget_s=config.route_budget_s,
        timeline=crossings,
        on_attach=metrics.observe_attach,
    )

    async def probe_until_stopped(stop: asyncio.Event) -> None:
        try:
            await probe.run(stop)
        finally:  # before the pool closes: lookups and reads cut off at their deadline
            await router.lookup.aclose()
            await attacher.aclose()

    supervisor.background("pool-warmer", warm)
    supervisor.background("lookup-breaker-probe", probe_until_stopped)
    supervisor.writer("interactions-writer", interactions.run)
    supervisor.writer("call-data-writer", created.run)
    supervisor.writer("crossings-writer", crossings.run)
    limits = dataclasses.replace(
        agi_limits or AgiLimits(),  # tests shorten the timeouts; admission is config's
        allow=config.agi_allow,
        max_per_address=config.agi_max_per_address,
        max_connections=config.agi_max_connections,
    )
    scripts = {"route": route_script(router), "attach": attach_script(attacher, pbxes)}
    server = AgiServer(scripts, limits)
    metrics.watch_agi(lambda: server.admission.refused)
    agi = await supervisor.entrance(listening_agi(server, config.agi_bind))
    return Routing(plan, router, agi, interactions, created, attacher, crossings)
