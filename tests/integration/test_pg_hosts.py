"""A multi-host ``CTI_DATABASE_URL`` whose first host is bad, the real PostgreSQL second.

What must hold: the daemon's own pool (:func:`cti.app.resources.create_pool`, 5 s
connect timeout) connects and queries when the first host swallows the connection
(accepts and never answers, or never accepts at all): each host has its own share of
the time (2.5 s of 5 with two hosts), where asyncpg alone spent all 5 on the first host
and failed. A standby first host is skipped for ``target_session_attrs=read-write``.
After the first connection, new ones go straight to the host that worked. The bad hosts
are local fakes (tests/fakes/pg_hosts.py) that count the connections they get.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import asyncpg
import pytest

from cti.app.resources import close_pool, create_pool
from cti.config import load_config
from cti.db.connect import HostsConnect
from cti.routing.plan_watcher import PlanWatcher
from tests.conftest import PG_SERVER
from tests.fakes.pg_hosts import FullBacklog, SilentHost, StandbyHost

POOL_CONNECT_TIMEOUT_S = 5.0
SHARE_S = POOL_CONNECT_TIMEOUT_S / 2


def _url(first_port: int) -> str:
    server = urlsplit(PG_SERVER)
    user = f"{server.username}@" if server.username else ""
    return (
        f"postgresql://{user}127.0.0.1:{first_port},{server.hostname}:{server.port or 5432}"
        "/postgres?target_session_attrs=read-write"
    )


@pytest.fixture
async def silent() -> AsyncIterator[SilentHost]:
    host = SilentHost()
    await host.start()
    yield host
    await host.close()


@pytest.fixture
def full_backlog() -> Iterator[FullBacklog]:
    host = FullBacklog().fill()
    yield host
    host.close()


async def _pool_on_the_live_host(url: str) -> tuple[asyncpg.Pool, float]:
    """The daemon's pool on ``url``, its first query done; and how long that took."""
    pool = create_pool(load_config({"CTI_DATABASE_URL": url}))
    await pool
    started = time.monotonic()
    try:
        assert await pool.fetchval("SELECT inet_server_port()") == (
            urlsplit(PG_SERVER).port or 5432
        )
        assert await pool.fetchval("SHOW transaction_read_only") == "off"
    except BaseException:
        await close_pool(pool)
        raise
    return pool, time.monotonic() - started


async def _another_connection(pool: asyncpg.Pool) -> None:
    """Hold the pool's one connection and make it open a second."""
    async with pool.acquire() as first, pool.acquire() as second:
        assert await first.fetchval("SELECT 1") == await second.fetchval("SELECT 1") == 1


async def test_a_first_host_that_accepts_and_never_answers_costs_only_its_share(
    silent: SilentHost,
) -> None:
    pool, took = await _pool_on_the_live_host(_url(silent.port))
    try:
        assert silent.connections == 1
        assert SHARE_S * 0.9 <= took < POOL_CONNECT_TIMEOUT_S, took
        await _another_connection(pool)
        assert silent.connections == 1  # the silent host was remembered: not tried again
    finally:
        await close_pool(pool)


async def test_a_first_host_that_never_accepts_costs_only_its_share(
    full_backlog: FullBacklog,
) -> None:
    pool, took = await _pool_on_the_live_host(_url(full_backlog.port))
    try:
        assert SHARE_S * 0.9 <= took < POOL_CONNECT_TIMEOUT_S, took
        started = time.monotonic()
        await _another_connection(pool)
        assert time.monotonic() - started < SHARE_S  # straight to the live host
    finally:
        await close_pool(pool)


async def test_a_standby_first_host_is_skipped_for_read_write() -> None:
    standby = StandbyHost()
    await standby.start()
    try:
        pool, _ = await _pool_on_the_live_host(_url(standby.port))
        try:
            assert standby.connections == 1  # it answered, was seen a standby, left
            await _another_connection(pool)
            assert standby.connections == 1
        finally:
            await close_pool(pool)
        # Without target_session_attrs, asyncpg takes the first host that answers.
        any_url = _url(standby.port).replace("?target_session_attrs=read-write", "")
        conn = await HostsConnect()(any_url, timeout=POOL_CONNECT_TIMEOUT_S)
        try:
            assert conn.get_settings().in_hot_standby == "on"
        finally:
            conn.terminate()
    finally:
        await standby.close()


async def test_when_every_host_is_dead_the_attempt_still_ends_within_the_timeout(
    silent: SilentHost, full_backlog: FullBacklog
) -> None:
    url = f"postgresql://127.0.0.1:{silent.port},127.0.0.1:{full_backlog.port}/postgres"
    connect = HostsConnect()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await connect(url, timeout=2.0)
    assert 1.8 <= time.monotonic() - started < 2.0 + 2.0  # the two 1 s shares, and margin
    assert silent.connections == 1


async def test_the_routing_plan_watcher_reaches_the_live_host_behind_a_silent_one(
    silent: SilentHost, database_url: str
) -> None:
    """The plan's LISTEN connection is made the same way as the pool's."""
    server = urlsplit(database_url)
    url = _url(silent.port).replace("/postgres?", f"{server.path}?")
    watcher = PlanWatcher(url, connect_timeout=POOL_CONNECT_TIMEOUT_S)
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    try:
        await asyncio.wait_for(watcher.loaded.wait(), 30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert silent.connections == 1
