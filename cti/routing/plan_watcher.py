"""Keeps the router's in-memory routing table in step with PostgreSQL.

A dedicated connection LISTENs on ``cti_routing_changed`` (sent by triggers on the
plan's tables); every notification, and every (re)connection, reloads the whole plan.
Bursts of notifications are coalesced into one reload. A plan that fails validation
is logged and the previous one is kept: routing on yesterday's rules beats routing on
half of today's. While the database is unreachable we keep routing on the last plan
and reconnect with backoff.

Each plan read is also saved to a local cache file, and read back at start-up: a
daemon restarted during a database outage still sends each number's calls to that
number's default queue rather than to the global default.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import asyncpg
import structlog

from cti.backoff import Backoff
from cti.db.connect import HostsConnect
from cti.routing.plan import PlanError, RoutingPlan, dumps, loads
from cti.routing.plan_store import read_plan
from cti.routing.table import RoutingTable

log = structlog.get_logger(__name__)
CHANNEL = "cti_routing_changed"


class PlanWatcher:
    def __init__(
        self,
        dsn: str,
        *,
        health_interval: float = 5.0,
        connect_timeout: float = 5.0,
        backoff: Backoff | None = None,
        on_reload: Callable[[RoutingTable], None] | None = None,
        cache_path: Path | None = None,
    ) -> None:
        self._dsn = dsn
        self._health_interval = health_interval
        self._connect_timeout = connect_timeout
        self._connect = HostsConnect()  # a multi-host URL: each host its share of the timeout
        self._backoff = backoff or Backoff(initial=0.5, cap=15.0)
        self._on_reload = on_reload
        self._cache_path = cache_path
        self.table = RoutingTable()
        self.loaded = asyncio.Event()  # set once a plan came from the database
        self.reloads = 0
        self._read_cache()

    def _read_cache(self) -> None:
        if self._cache_path is None or not self._cache_path.exists():
            return
        try:
            plan = loads(self._cache_path.read_text())
        except (OSError, PlanError) as exc:
            log.warning(
                "routing plan cache unreadable; ignoring it",
                path=str(self._cache_path),
                error=str(exc),
            )
            return
        self.table = RoutingTable.from_plan(plan)
        log.info(
            "routing plan read from cache until the database answers",
            path=str(self._cache_path),
            rules=len(plan.rules),
        )

    def _write_cache(self, plan: RoutingPlan) -> None:
        if self._cache_path is None:
            return
        try:
            self._cache_path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self._cache_path.with_suffix(".tmp")
            temporary.write_text(dumps(plan))
            os.replace(temporary, self._cache_path)
        except OSError as exc:
            log.warning(
                "could not save the routing plan cache", path=str(self._cache_path), error=str(exc)
            )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self._session(stop)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("routing plan watcher lost the database", error=repr(exc))
            if not stop.is_set():
                await self._backoff.wait(stop)

    async def _session(self, stop: asyncio.Event) -> None:
        conn = await self._connect(self._dsn, timeout=self._connect_timeout)
        dirty = asyncio.Event()
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _c: lost.set())
            await conn.add_listener(CHANNEL, lambda *_args: dirty.set())
            self._backoff.reset()
            dirty.set()  # we may have missed notifications while away
            while not stop.is_set() and not lost.is_set():
                if dirty.is_set():
                    dirty.clear()
                    await self._reload(conn)
                    continue
                waiters = [asyncio.ensure_future(e.wait()) for e in (dirty, lost, stop)]
                try:
                    await asyncio.wait(
                        waiters,
                        timeout=self._health_interval,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    for waiter in waiters:
                        waiter.cancel()
                if not (dirty.is_set() or lost.is_set() or stop.is_set()):
                    await conn.fetchval("SELECT 1", timeout=self._connect_timeout)
        finally:
            if lost.is_set():
                conn.terminate()
            else:
                await _close(conn)

    async def _reload(self, conn: asyncpg.Connection) -> None:
        try:
            plan = await read_plan(conn)
        except PlanError as exc:
            log.error("stored routing plan is invalid; keeping the previous one", error=str(exc))
            return
        self.table = RoutingTable.from_plan(plan)
        self.reloads += 1
        self.loaded.set()
        self._write_cache(plan)
        log.info(
            "routing plan loaded",
            rules=len(plan.rules),
            numbers=len(plan.numbers),
            queues=len(plan.queues),
        )
        if self._on_reload is not None:
            self._on_reload(self.table)


async def _close(conn: asyncpg.Connection) -> None:
    try:
        await asyncio.wait_for(conn.close(), 2)
    except (OSError, TimeoutError, asyncpg.InterfaceError):
        conn.terminate()
