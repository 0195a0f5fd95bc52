"""``cti serve``: the composition root of the daemon.

Builds every client from the configuration, wires them together, runs the service
tasks until SIGTERM/SIGINT, then shuts down in order: stop accepting AGI, let calls in
flight finish, flush the record writers, close the pools. Neither PostgreSQL nor Redis
needs to be up for the daemon to start: calls route on the fail-open path until they
are, and the records wait in the writers' queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import asyncpg
import redis.asyncio as redis
import structlog

from cti.agi.route import route_script
from cti.agi.server import AgiLimits, AgiServer
from cti.batch_writer import BatchWriter
from cti.calldata.store import CallDataStore
from cti.config import Config
from cti.db.customers import find_customer
from cti.db.plan_watcher import PlanWatcher
from cti.interactions import interaction_batch_writer
from cti.router import Router

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
        self.redis = redis.from_url(
            config.redis_url,
            socket_connect_timeout=0.5,
            socket_timeout=2,
            health_check_interval=15,
        )
        self.plan = PlanWatcher(
            config.database_url,
            cache_path=Path(config.plan_cache) if config.plan_cache else None,
        )
        self.interactions = BatchWriter("interactions", interaction_batch_writer(self.pool))
        self.call_data = BatchWriter(
            "call-data", CallDataStore(self.redis, config.call_data_ttl_s).create_many
        )
        self.router = Router(
            table=lambda: self.plan.table,
            find_customer=lambda e164, account: find_customer(self.pool, e164, account),
            default_queue=config.default_queue,
            region=config.default_region,
            lookup_budget_s=config.route_budget_s * LOOKUP_SHARE,
            interactions=self.interactions,
            call_data=self.call_data,
        )
        self.agi = AgiServer({"route": route_script(self.router)}, agi_limits)
        self._background: list[asyncio.Task[None]] = []
        self._writers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Listen for FastAGI and start the background tasks; return at once."""
        await self.pool  # with min_size=0 this opens nothing
        await self.agi.start(self.config.agi_bind.host, self.config.agi_bind.port)
        log.info("cti serving", agi=f"{self.config.agi_bind.host}:{self.agi.port}")
        self._background = [
            asyncio.create_task(self.plan.run(self.stop), name="plan-watcher"),
            asyncio.create_task(warm_pool(self.pool, self.stop), name="pool-warmer"),
        ]
        self._writers = [
            asyncio.create_task(self.interactions.run(self.stop), name="interactions-writer"),
            asyncio.create_task(self.call_data.run(self.stop), name="call-data-writer"),
        ]

    async def shutdown(self, writer_grace_s: float = 10) -> None:
        """Stop accepting calls, finish those in flight, flush the writers, close the pools."""
        log.info("cti stopping")
        await self.agi.close()
        self.stop.set()
        _done, pending = await asyncio.wait(self._writers, timeout=writer_grace_s)
        for task in [*pending, *self._background]:
            task.cancel()
        await asyncio.gather(*self._background, *pending, return_exceptions=True)
        await close_pool(self.pool)
        await self.redis.aclose()
        log.info(
            "cti stopped",
            routed=self.router.routed,
            unwritten=self.interactions.backlog + self.call_data.backlog,
        )

    async def run(self) -> None:
        await self.start()
        try:
            await self.stop.wait()
        finally:
            await self.shutdown()


async def serve(config: Config) -> None:
    daemon = Daemon(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.stop.set)
    await daemon.run()
