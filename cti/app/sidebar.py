"""The sidebar's HTTP API (:mod:`cti.screenpop`) on the service's own clients."""

from __future__ import annotations

import dataclasses

import asyncpg
import redis.asyncio as redis

from cti.app.following import CallFollowing
from cti.app.resources import listening_http
from cti.app.supervisor import Supervisor
from cti.calldata.service import CallDataService
from cti.config import Config
from cti.routing.plan_watcher import PlanWatcher
from cti.screenpop.app import HttpServer, build_app
from cti.screenpop.auth import Sessions
from cti.screenpop.connections import HttpLimits
from cti.screenpop.health import Probes, metrics_app
from cti.screenpop.metrics import Metrics


async def open_sidebar(
    supervisor: Supervisor,
    config: Config,
    *,
    pool: asyncpg.Pool,
    redis_client: redis.Redis,
    call_data: CallDataService,
    metrics: Metrics,
    calls: CallFollowing | None,
    plan: PlanWatcher,
) -> HttpServer:
    """Serve the API. Without AMI (``calls`` None) there is no call control: those
    routes (and the supervisor's actions) answer 503 ami_unavailable. ``plan`` offers
    the pause reasons and queues."""
    app = build_app(
        pool=pool,
        redis_client=redis_client,
        call_data=call_data,
        sessions=Sessions(config.session_secret.encode(), config.session_ttl_s),
        metrics=metrics,
        control=calls.control if calls is not None else None,
        ami=calls.amis if calls is not None else None,
        table=lambda: plan.table,
        timezone=config.timezone,
        serve_metrics=config.metrics_bind is None,
    )
    server = HttpServer(app, http_limits(config), name="sidebar")
    metrics.watch_http("sidebar", server.listener.source())
    return await supervisor.entrance(listening_http(server, config.http_bind))


def http_limits(config: Config) -> HttpLimits:
    return HttpLimits(
        header_timeout_s=config.http_header_timeout_s,
        keepalive_s=config.http_keepalive_s,
        max_connections=config.http_max_connections,
        max_per_address=config.http_max_per_address,
    )


#: The metrics port serves a scraper or two: a few connections are plenty.
METRICS_MAX_CONNECTIONS = 64
METRICS_MAX_PER_ADDRESS = 16


async def open_metrics_port(
    supervisor: Supervisor, config: Config, metrics: Metrics, probes: Probes
) -> HttpServer:
    """``/metrics`` (and ``/healthz``, ``/readyz``) on ``CTI_METRICS_BIND``, a port of its
    own: kept off the agents' network, and served by a process without the sidebar too."""
    assert config.metrics_bind is not None
    limits = dataclasses.replace(
        http_limits(config),
        max_connections=METRICS_MAX_CONNECTIONS,
        max_per_address=METRICS_MAX_PER_ADDRESS,
    )
    server = HttpServer(metrics_app(metrics, probes), limits, name="metrics")
    metrics.watch_http("metrics", server.listener.source())
    return await supervisor.entrance(listening_http(server, config.metrics_bind))
