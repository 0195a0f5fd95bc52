"""The connections a service opens, each an async context manager that closes it.

Neither PostgreSQL nor Redis nor Asterisk needs to be up for a service to start: the
pool connects on first use, the Redis client on its first command and the AMI client
keeps reconnecting in the background; what depends on them fails open or waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import asyncpg
import redis.asyncio as redis
import structlog
from redis.asyncio.sentinel import Sentinel

from cti.agi.server import AgiServer
from cti.ami.client import AmiClient, EventSink
from cti.ami.filters import AmiFilter
from cti.app.supervisor import finish
from cti.config import Config, HostPort
from cti.db.connect import HostsConnect
from cti.pbx import DEFAULT_PBX, Pbx
from cti.screenpop.app import HttpServer

log = structlog.get_logger(__name__)

POOL_SIZE = 10
#: How long the AMI client has to log off before it is cut off.
AMI_LOGOFF_GRACE_S = 2.0


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Pool reset hook: nothing to undo (asyncpg still rolls back an open transaction).

    The default reset (``RESET ALL; UNLISTEN *; ...``) costs a database round trip on
    every release, inside the caller's time budget; our pooled connections keep no
    session state, so we skip it.
    """


def create_pool(config: Config) -> asyncpg.Pool:
    """A pool that does not connect until used, so start-up never waits on PostgreSQL.

    Each new connection tries a multi-host URL's hosts one at a time, each with its
    share of the connect timeout (:mod:`cti.db.connect`): a dead first host that never
    answers does not use up the time of the live one behind it.
    """
    return asyncpg.create_pool(
        config.database_url,
        connect=HostsConnect(),
        min_size=0,
        max_size=POOL_SIZE,
        max_inactive_connection_lifetime=0,  # keep warm connections; no reconnect on the call path
        # connect timeout, shared by the URL's hosts; calls are cut off sooner by the route budget
        timeout=5,
        command_timeout=10,
        reset=_keep_session,
    )


async def close_pool(pool: asyncpg.Pool, grace_s: float = 5) -> None:
    """Close gracefully, or terminate: a hung database must not hang our shutdown."""
    try:
        await asyncio.wait_for(pool.close(), grace_s)
    except (TimeoutError, OSError, asyncpg.InterfaceError) as exc:
        log.warning("database pool did not close in time; terminating", error=repr(exc))
        pool.terminate()


@contextlib.asynccontextmanager
async def postgres_pool(config: Config) -> AsyncIterator[asyncpg.Pool]:
    pool = create_pool(config)
    await pool  # with min_size=0 this opens nothing
    try:
        yield pool
    finally:
        await close_pool(pool)


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


#: Redis connection options: a Redis that is away must not hold up a call or a page.
REDIS_CONNECT_TIMEOUT_S = 0.5
REDIS_TIMEOUT_S = 2.0
REDIS_HEALTH_CHECK_S = 15


def create_redis(config: Config) -> tuple[redis.Redis, Sentinel | None]:
    """The one place a Redis client is made: from a plain URL, or through Sentinel.

    Through Sentinel the client asks the sentinels for the master before each new
    connection; after a failover its connections to the old master fail (or are told
    READONLY) and the next one goes to the promoted replica: every caller's own
    error handling (retry, fail open) carries it over the gap. The second value is the
    Sentinel, whose connections to the sentinels must be closed too.
    """
    url = config.redis_sentinel
    if url is None:
        client = redis.from_url(
            config.redis_url,
            socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
            socket_timeout=REDIS_TIMEOUT_S,
            health_check_interval=REDIS_HEALTH_CHECK_S,
        )
        return client, None
    sentinel_kwargs: dict[str, object] = {
        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_S,
        "socket_timeout": REDIS_TIMEOUT_S,
    }
    if config.redis_sentinel_password:
        sentinel_kwargs["password"] = config.redis_sentinel_password
    sentinel = Sentinel(list(url.sentinels), sentinel_kwargs=sentinel_kwargs)
    client = sentinel.master_for(
        url.service,
        db=url.db,
        username=url.username,
        password=url.password,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
        socket_timeout=REDIS_TIMEOUT_S,
        health_check_interval=REDIS_HEALTH_CHECK_S,
    )
    return client, sentinel


@contextlib.asynccontextmanager
async def redis_client(config: Config) -> AsyncIterator[redis.Redis]:
    client, sentinel = create_redis(config)
    try:
        yield client
    finally:
        await client.aclose()
        if sentinel is not None:
            await sentinel.aclose()


def create_ami_client(
    config: Config,
    sink: EventSink,
    *,
    id_prefix: str,
    filters: Sequence[AmiFilter],
    pbx: Pbx | None = None,
) -> AmiClient:
    """The AMI client of ``pbx`` (default: the first of :meth:`Config.pbx_list`, the one
    PBX without ``CTI_PBXES``), not connected; ``sink`` gets the events ``filters`` let
    through, in arrival order."""
    pbx = pbx or config.pbx_list()[0]
    return AmiClient(
        pbx.host,
        pbx.port,
        pbx.username,
        pbx.secret,
        events_sink=sink,
        ping_interval=config.ami_ping_s,
        ping_timeout=config.ami_ping_s,
        id_prefix=id_prefix,
        filters=filters,
    )


@contextlib.asynccontextmanager
async def ami_client(
    config: Config,
    sink: EventSink,
    *,
    id_prefix: str,
    filters: Sequence[AmiFilter],
    pbx: Pbx | None = None,
) -> AsyncIterator[AmiClient]:
    """:func:`create_ami_client`, connecting (and reconnecting) in the background while
    the context lasts, in a task of its own (one per PBX: one PBX's AMI going away
    never holds up another's). On exit the client logs off."""
    client = create_ami_client(config, sink, id_prefix=id_prefix, filters=filters, pbx=pbx)
    stop = asyncio.Event()
    name = "ami" if pbx is None or pbx.name == DEFAULT_PBX else f"ami-{pbx.name}"
    task = asyncio.create_task(client.run(stop), name=name)
    try:
        yield client
    finally:
        stop.set()
        await finish([task], AMI_LOGOFF_GRACE_S)


@contextlib.asynccontextmanager
async def listening_agi(server: AgiServer, bind: HostPort) -> AsyncIterator[AgiServer]:
    """FastAGI on ``bind``; on exit stop accepting and let calls in flight finish."""
    await server.start(bind.host, bind.port)
    log.info("cti serving", agi=f"{bind.host}:{server.port}")
    try:
        yield server
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def listening_http(server: HttpServer, bind: HostPort) -> AsyncIterator[HttpServer]:
    """HTTP on ``bind``; on exit close the WebSockets (1001: reconnect elsewhere), finish
    the requests in flight."""
    await server.start(bind.host, bind.port)
    try:
        yield server
    finally:
        await server.stop()
