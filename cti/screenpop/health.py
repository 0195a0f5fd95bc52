"""``/healthz`` (the process serves), ``/readyz`` (its stores answer) and ``/metrics``.

Readiness asks PostgreSQL and Redis at once, each cut off after :data:`CHECK_TIMEOUT_S`,
so a hung store makes the probe say no quickly instead of hanging the probe. AMI counts
only where call following is on (``null`` otherwise): an instance that cannot reach
Asterisk cannot transfer or pause, and a balancer should prefer one that can.

With several PBXes (:mod:`cti.pbx`) the body says each one's AMI by name (``pbxes``)
and lists those down (``ami_down``), but the instance stays ready while ANY of them is
up: a PBX that is down is usually down for every instance alike (the Asterisk itself,
or its network), so taking every instance out of the balancer for it would also stop
the routing and the call control of the PBXes that work. Only when no PBX's AMI is up
does AMI make the instance unready, which with one PBX is exactly the rule it always
had. Alert on ``ami_down`` (or ``cti_ami_connected{pbx=...} == 0``), not on readiness.

Where the process runs record writers (the daemon: :meth:`Metrics.watch_writers`),
readiness also says no while a writer is stuck, i.e. its oldest unwritten record has
waited more than :data:`STUCK_AFTER_S`, and names the writer and since when: records
are piling up in memory (a store away, or refusing what we write) and a restart would
lose them, which is what an operator must hear about.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import redis.asyncio as redis
from aiohttp import web

from cti.ami.client import AmiClient
from cti.batch_writer import WriterStats
from cti.pbx import DEFAULT_PBX
from cti.screenpop.metrics import CONTENT_TYPE, Metrics

CHECK_TIMEOUT_S = 1.0
#: A writer whose oldest unwritten record is older than this is stuck (not ready).
STUCK_AFTER_S = 60.0


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


#: Each PBX's AMI connection by PBX name; one lone client is the ``default`` PBX's.
AmiLinks = AmiClient | Mapping[str, AmiClient]


def ami_links(ami: AmiLinks | None) -> Mapping[str, AmiClient] | None:
    if ami is None or isinstance(ami, Mapping):
        return ami
    return {DEFAULT_PBX: ami}


@dataclass(frozen=True, slots=True)
class Probes:
    """What ``/readyz`` asks: the stores, AMI per PBX (None: this process does not
    follow calls) and the record writers (in ``metrics``)."""

    pool: asyncpg.Pool
    redis: redis.Redis
    metrics: Metrics
    ami: AmiLinks | None = None


def ami_report(ami: AmiLinks | None) -> tuple[bool, dict[str, object]]:
    """Whether AMI lets the instance be ready, and what the body says of it (see the
    module docstring): ``ami`` true when every PBX's AMI is up, false when one is down,
    null when this process follows none; ``pbxes`` each one by name; ``ami_down`` the
    names of those down."""
    links = ami_links(ami)
    if links is None:
        return True, {"ami": None}
    up = {name: client.is_connected for name, client in links.items()}
    down = [name for name, ok in up.items() if not ok]
    return any(up.values()), {"ami": not down, "pbxes": up, "ami_down": down}


#: On the sidebar's app, and on the metrics port's when it has one.
PROBES = web.AppKey("cti.screenpop.probes", Probes)


async def readyz(request: web.Request) -> web.Response:
    probes = request.app[PROBES]
    postgres, redis_ok = await asyncio.gather(_postgres_ok(probes.pool), _redis_ok(probes.redis))
    ami_ok, ami = ami_report(probes.ami)
    ready = postgres and redis_ok and ami_ok
    body: dict[str, object] = {"postgres": postgres, "redis": redis_ok, **ami}
    if probes.metrics.writers:
        writers = _writers(probes.metrics.writers, time.time())
        body["writers"] = writers
        ready = ready and not any(w["stuck_since"] for w in writers.values())
    return web.json_response(body, status=200 if ready else 503)


def _writers(writers: Sequence[WriterStats], now: float) -> dict[str, dict[str, object]]:
    report: dict[str, dict[str, object]] = {}
    for stats in writers:
        since = stats.stuck_since(now, STUCK_AFTER_S)
        report[stats.writer] = {
            "backlog": stats.backlog,
            "oldest_unwritten_s": round(stats.oldest_age_s(now), 3),
            "stuck_since": None
            if since is None
            else datetime.fromtimestamp(since, UTC).isoformat(),
            "dead_letters_held": stats.held,
        }
    return report


#: What ``/metrics`` renders: on the sidebar's app, or on the metrics port's own.
METRICS = web.AppKey("cti.screenpop.metrics", Metrics)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})


def add_routes(app: web.Application, *, with_metrics: bool = True) -> None:
    """``with_metrics`` False: ``/metrics`` is served on a port of its own
    (``CTI_METRICS_BIND``, :func:`metrics_app`), not here."""
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if with_metrics:
        app.router.add_get("/metrics", metrics)


def metrics_app(source: Metrics, probes: Probes | None = None) -> web.Application:
    """The metrics port: ``/metrics``, ``/healthz`` and, given ``probes``, ``/readyz``
    (the one a process without the sidebar, routing alone, answers)."""
    app = web.Application(client_max_size=1024)
    app[METRICS] = source
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    if probes is not None:
        app[PROBES] = probes
        app.router.add_get("/readyz", readyz)
    return app
