"""``/healthz`` (the process serves), ``/readyz`` (its stores answer) and ``/metrics``.

Readiness asks PostgreSQL and Redis at once, each cut off after :data:`CHECK_TIMEOUT_S`,
so a hung store makes the probe say no quickly instead of hanging the probe. AMI counts
only where call following is on (``null`` otherwise): an instance that cannot reach
Asterisk cannot transfer or pause, and a balancer should prefer one that can.
"""

from __future__ import annotations

import asyncio

import asyncpg
import redis.asyncio as redis
from aiohttp import web

from cti.screenpop.context import context
from cti.screenpop.metrics import CONTENT_TYPE

CHECK_TIMEOUT_S = 1.0


async def _postgres_ok(pool: asyncpg.Pool) -> bool:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            return await pool.fetchval("SELECT 1") == 1
    except Exception:
        return False


async def _redis_ok(client: redis.Redis) -> bool:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            return bool(await client.ping())
    except Exception:
        return False


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    ctx = context(request)
    postgres, redis_ok = await asyncio.gather(_postgres_ok(ctx.pool), _redis_ok(ctx.redis))
    ami = ctx.ami.is_connected if ctx.ami is not None else None
    ready = postgres and redis_ok and ami is not False
    return web.json_response(
        {"postgres": postgres, "redis": redis_ok, "ami": ami}, status=200 if ready else 503
    )


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=context(request).metrics.render(), headers={"Content-Type": CONTENT_TYPE}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
