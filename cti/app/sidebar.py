"""The sidebar's HTTP API (:mod:`cti.screenpop`) on the service's own clients."""

from __future__ import annotations

import asyncpg
import redis.asyncio as redis

from cti.app.following import CallFollowing
from cti.app.resources import listening_http
from cti.app.supervisor import Supervisor
from cti.calldata.service import CallDataService
from cti.config import Config
from cti.screenpop.app import HttpServer, build_app
from cti.screenpop.auth import Sessions
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
) -> HttpServer:
    """Serve the API. Without AMI (``calls`` None) there is no call control: those
    routes answer 503 ami_unavailable."""
    app = build_app(
        pool=pool,
        redis_client=redis_client,
        call_data=call_data,
        sessions=Sessions(config.session_secret.encode(), config.session_ttl_s),
        metrics=metrics,
        control=calls.control if calls is not None else None,
        ami=calls.ami if calls is not None else None,
        timezone=config.timezone,
    )
    return await supervisor.entrance(listening_http(HttpServer(app), config.http_bind))
