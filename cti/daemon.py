"""``cti serve``: the composition root of the daemon.

Builds every client from the configuration, wires them together, runs the service
tasks until SIGTERM/SIGINT, then shuts down in order: stop the sidebar's HTTP API (its
clients reconnect elsewhere), stop accepting AGI, let calls in flight finish, flush the
record writers, close the pools. Neither PostgreSQL nor Redis needs to be up for the
daemon to start: calls route on the fail-open path until they are, and the records
wait in the writers' queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import redis.asyncio as redis
import structlog
from aiohttp import web

from cti.agi.route import route_script
from cti.agi.server import AgiLimits, AgiServer
from cti.ami.client import AmiClient, EventSink
from cti.ami.filters import event_filter
from cti.batch_writer import BatchWriter
from cti.calldata.history import history_batch_writer
from cti.calldata.service import CallDataService
from cti.calldata.store import CallDataStore
from cti.calls.control import CallControl
from cti.calls.lease import Lease, instance_id
from cti.calls.model import CALL_CENTRE_EVENTS, CallModel
from cti.calls.publisher import EventPublisher, Outbox
from cti.calls.tracker import CallTracker
from cti.config import Config
from cti.db.customers import find_customer
from cti.db.dead_letters import PgDeadLetters
from cti.interactions import interaction_batch_writer
from cti.router import Router
from cti.routing.plan_watcher import PlanWatcher
from cti.screenpop.app import HttpServer, build_app
from cti.screenpop.auth import Sessions
from cti.screenpop.metrics import AmiSource, Metrics
from cti.timeline.store import timeline_batch_writer

log = structlog.get_logger(__name__)

#: Share of the route budget the customer lookup may use; the rest covers our own
#: work and the AGI round trips that set the variables.
LOOKUP_SHARE = 0.75
POOL_SIZE = 10


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Pool reset hook: nothing to undo (asyncpg still rolls back an open transaction).

    The default reset (``RESET ALL; UNLISTEN *; ...``) costs a database round trip on
    every release, inside the caller's time budget; our pooled connections keep no
    session state, so we skip it.
    """


def create_pool(config: Config) -> asyncpg.Pool:
    """A pool that does not connect until used, so start-up never waits on PostgreSQL."""
    return asyncpg.create_pool(
        config.database_url,
        min_size=0,
        max_size=POOL_SIZE,
        max_inactive_connection_lifetime=0,  # keep warm connections; no reconnect on the call path
        timeout=5,  # connect timeout; calls are cut off sooner by the route budget
        command_timeout=10,
        reset=_keep_session,
    )


def create_redis(config: Config) -> redis.Redis:
    """Short connect timeout: a Redis that is away must not hold up a call or a page."""
    return redis.from_url(
        config.redis_url,
        socket_connect_timeout=0.5,
        socket_timeout=2,
        health_check_interval=15,
    )


def create_ami_client(config: Config, sink: EventSink, id_prefix: str) -> AmiClient:
    """The AMI connection as configured; ``sink`` gets its events in arrival order."""
    return AmiClient(
        config.ami_host,
        config.ami_port,
        config.ami_username,
        config.ami_secret,
        events_sink=sink,
        filters=(event_filter(CALL_CENTRE_EVENTS),),  # the call model's table
        ping_interval=config.ami_ping_s,
        ping_timeout=config.ami_ping_s,
        id_prefix=id_prefix,
    )


async def warm_pool(pool: asyncpg.Pool, stop: asyncio.Event, size: int = POOL_SIZE) -> None:
    """Open the pool's connections ahead of the first call, retrying until it works.

    Each warming query holds its connection only for its own round trip, so calls
    arriving meanwhile are never starved of a connection.
    """
    while not stop.is_set():
        results = await asyncio.gather(
            *(pool.fetchval("SELECT 1", timeout=5) for _ in range(size)), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if not errors:
            log.info("database pool warm", connections=size)
            return
        log.warning("database not reachable yet; routing fails open", error=repr(errors[0]))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 2)


async def close_pool(pool: asyncpg.Pool, grace_s: float = 5) -> None:
    """Close gracefully, or terminate: a hung database must not hang our shutdown."""
    try:
        await asyncio.wait_for(pool.close(), grace_s)
    except (TimeoutError, OSError, asyncpg.InterfaceError) as exc:
        log.warning("database pool did not close in time; terminating", error=repr(exc))
        pool.terminate()


class Daemon:
    def __init__(self, config: Config, agi_limits: AgiLimits | None = None) -> None:
        self.config = config
        self.stop = asyncio.Event()
        self.pool = create_pool(config)
        self.redis = create_redis(config)
        self.plan = PlanWatcher(
            config.database_url,
            cache_path=Path(config.plan_cache) if config.plan_cache else None,
        )
        self.instance_id = config.instance_id or instance_id()
        self.dead_letters = PgDeadLetters(self.pool)  # what the database refuses, set aside
        dead = self.dead_letters
        self.interactions = BatchWriter(
            "interactions", interaction_batch_writer(self.pool), dead_letters=dead
        )
        self.history = BatchWriter(
            "call-data-history", history_batch_writer(self.pool), dead_letters=dead
        )
        self.call_store = CallDataStore(
            self.redis, config.call_data_ttl_s, pool=self.pool, history=self.history
        )
        self.call_data = BatchWriter("call-data", self.call_store.create_many, dead_letters=dead)
        self.events = EventPublisher(self.redis, ttl_s=config.call_data_ttl_s)
        self.call_data_service = CallDataService(self.call_store, self.events)
        self.metrics = Metrics()
        self.router = Router(
            table=lambda: self.plan.table,
            find_customer=lambda e164, account: find_customer(self.pool, e164, account),
            default_queue=config.default_queue,
            region=config.default_region,
            lookup_budget_s=config.route_budget_s * LOOKUP_SHARE,
            interactions=self.interactions,
            call_data=self.call_data,
            history=self.history,
            on_routed=self.metrics.observe_route,
        )
        self.agi = AgiServer(
            {"route": route_script(self.router)},
            dataclasses.replace(
                agi_limits or AgiLimits(),  # tests shorten the timeouts; admission is config's
                allow=config.agi_allow,
                max_per_address=config.agi_max_per_address,
                max_connections=config.agi_max_connections,
            ),
        )
        self.metrics.watch_agi(lambda: self.agi.admission.refused)
        self.calls = CallFollowing(self) if config.ami_enabled else None
        if self.calls is not None:
            calls = self.calls
            self.metrics.watch_ami(
                AmiSource(
                    connected=lambda: calls.ami.is_connected,
                    events=lambda: calls.ami.stats.events,
                    leader=lambda: calls.tracker.leader,
                )
            )
        self.metrics.watch_writers([writer.stats for writer in self.record_writers()])
        self.http = HttpServer(self._http_app()) if config.http_enabled else None
        self._background: list[asyncio.Task[None]] = []
        self._writers: list[asyncio.Task[None]] = []

    def record_writers(self) -> list[BatchWriter[Any]]:
        """Every writer of records, for their figures (``/metrics``, ``/readyz``)."""
        writers: list[BatchWriter[Any]] = [self.interactions, self.call_data, self.history]
        if self.calls is not None:
            writers += [self.calls.timeline, self.calls.expiry]
        return writers

    def _http_app(self) -> web.Application:
        """The sidebar's API (cti.screenpop) on the daemon's own clients. Without AMI
        following there is no call control: those routes answer 503 ami_unavailable."""
        return build_app(
            pool=self.pool,
            redis_client=self.redis,
            call_data=self.call_data_service,
            sessions=Sessions(self.config.session_secret.encode(), self.config.session_ttl_s),
            metrics=self.metrics,
            control=self.calls.control if self.calls is not None else None,
            ami=self.calls.ami if self.calls is not None else None,
        )

    async def start(self) -> None:
        """Listen for FastAGI (and HTTP) and start the background tasks; return at once."""
        await self.pool  # with min_size=0 this opens nothing
        await self.agi.start(self.config.agi_bind.host, self.config.agi_bind.port)
        log.info("cti serving", agi=f"{self.config.agi_bind.host}:{self.agi.port}")
        if self.http is not None:
            await self.http.start(self.config.http_bind.host, self.config.http_bind.port)
        self._background = [
            asyncio.create_task(self.plan.run(self.stop), name="plan-watcher"),
            asyncio.create_task(warm_pool(self.pool, self.stop), name="pool-warmer"),
        ]
        self._writers = [
            asyncio.create_task(self.interactions.run(self.stop), name="interactions-writer"),
            asyncio.create_task(self.call_data.run(self.stop), name="call-data-writer"),
            asyncio.create_task(self.history.run(self.stop), name="call-data-history-writer"),
        ]
        if self.calls is not None:
            background, writers = self.calls.start(self.stop)
            self._background += background
            self._writers += writers

    async def shutdown(self, writer_grace_s: float = 10) -> None:
        """Stop accepting calls, finish those in flight, flush the writers, close the pools."""
        log.info("cti stopping")
        if self.http is not None:  # first: sidebars reconnect to another instance
            await self.http.stop()
        await self.agi.close()
        self.stop.set()
        _done, pending = await asyncio.wait(self._writers, timeout=writer_grace_s)
        # Background tasks end by themselves on ``stop`` (the AMI Logoff, the lease's
        # release); give them a moment before cutting them off.
        _done, lingering = await asyncio.wait(self._background, timeout=2)
        for task in [*pending, *lingering]:
            task.cancel()
        await asyncio.gather(*self._background, *pending, return_exceptions=True)
        await close_pool(self.pool)
        await self.redis.aclose()
        unwritten = self.interactions.backlog + self.call_data.backlog + self.history.backlog
        if self.calls is not None:
            unwritten += self.calls.backlog
        log.info("cti stopped", routed=self.router.routed, unwritten=unwritten)

    async def run(self) -> None:
        await self.start()
        try:
            await self.stop.wait()
        finally:
            await self.shutdown()


Task = asyncio.Task[None]


class CallFollowing:
    """Following calls over AMI (issue 4): the AMI client feeding the call model, the
    lease that makes one instance the publisher, and the writers of what it publishes
    (Redis Streams, the PostgreSQL timeline, the expiry of ended calls' data)."""

    def __init__(self, daemon: Daemon) -> None:
        config = daemon.config
        owner = daemon.instance_id
        store = daemon.call_store
        after_end_s = config.call_data_after_end_s
        self.model = CallModel()
        self.timeline = BatchWriter(
            "timeline", timeline_batch_writer(daemon.pool), dead_letters=daemon.dead_letters
        )

        async def expire_batch(call_ids: Sequence[str]) -> None:
            for call_id in call_ids:
                await store.expire_after_end(call_id, after_end_s)

        self.expiry = BatchWriter(
            "call-data-expiry", expire_batch, dead_letters=daemon.dead_letters
        )
        self.publisher = daemon.events
        self.tracker = CallTracker(
            self.model,
            publish=lambda events: self.outbox.submit(events),
            record=self.timeline.submit,
            call_ended=self.expiry.submit,
        )
        self.outbox = Outbox(self.publisher, owner, on_not_leader=self.tracker.keep_unpublished)
        self.lease = Lease(
            daemon.redis,
            owner,
            ttl_s=config.ami_lease_ttl_s,
            renew_s=config.ami_lease_ttl_s / 5,
            on_change=self.tracker.set_leader,
            eligible=lambda: self.tracker.ami_up,
        )
        self.ami = create_ami_client(config, self.tracker, id_prefix=f"cti.{owner}")
        self.control = CallControl(self.ami, self.model)

    def start(self, stop: asyncio.Event) -> tuple[list[Task], list[Task]]:
        """(background tasks, writer tasks): writers get a grace period to flush."""
        background = [
            asyncio.create_task(self.ami.run(stop), name="ami"),
            asyncio.create_task(self.lease.run(stop), name="ami-lease"),
        ]
        writers = [
            asyncio.create_task(self.outbox.run(stop), name="call-events-outbox"),
            asyncio.create_task(self.timeline.run(stop), name="timeline-writer"),
            asyncio.create_task(self.expiry.run(stop), name="call-data-expiry"),
        ]
        return background, writers

    @property
    def backlog(self) -> int:
        return self.outbox.backlog + self.timeline.backlog + self.expiry.backlog


class Service(Protocol):
    stop: asyncio.Event

    async def run(self) -> None: ...


async def run_until_signalled(service: Service) -> None:
    """Run until SIGTERM or SIGINT, which set ``service.stop`` (a clean shutdown)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.stop.set)
    await service.run()


async def serve(config: Config) -> None:
    await run_until_signalled(Daemon(config))
