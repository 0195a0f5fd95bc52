"""The sidebar's HTTP application, built from explicit dependencies, and its runner.

``cti serve`` and ``cti screenpop`` build it from their own clients (the composition
root, cti.app); tests from whatever they need. Nothing here reads the configuration or
opens a connection by itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import asyncpg
import redis.asyncio as redis
import structlog
from aiohttp import web

from cti.agents.audit import SupervisorAudit
from cti.agents.supervision import Supervision
from cti.calldata.service import CallDataService
from cti.calls.control import CallControl
from cti.routing.table import RoutingTable
from cti.screenpop import api, health, openapi, reports, supervision_api, wallboard, ws
from cti.screenpop.access import Access
from cti.screenpop.auth import Sessions
from cti.screenpop.connections import HttpLimits, HttpListener, request_started
from cti.screenpop.context import CONTEXT, Context, WsLimits, revocation_middleware
from cti.screenpop.errors import MAX_BODY_BYTES, error_middleware
from cti.screenpop.metrics import LoginQueueSource, Metrics
from cti.screenpop.password_checks import PasswordChecks
from cti.screenpop.revocation import TokenVersions
from cti.screenpop.security import ServerLog, security_headers
from cti.screenpop.throttle import LoginThrottle
from cti.wallboard.store import WallboardStore

log = structlog.get_logger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: How long a stopping server waits for requests in flight (sockets are closed first).
SHUTDOWN_GRACE_S = 5.0


def build_app(
    *,
    pool: asyncpg.Pool,
    redis_client: redis.Redis,
    call_data: CallDataService,
    sessions: Sessions,
    metrics: Metrics | None = None,
    control: CallControl | None = None,
    ami: health.AmiLinks | None = None,
    ws_limits: WsLimits | None = None,
    open_reader: Callable[[], redis.Redis] | None = None,
    static_dir: Path = STATIC_DIR,
    throttle: LoginThrottle | None = None,
    password_checks: PasswordChecks | None = None,
    wallboard_relay: wallboard.WallboardRelay | None = None,
    table: Callable[[], RoutingTable] = RoutingTable,
    timezone: str = "",
    serve_metrics: bool = True,
) -> web.Application:
    """The application. ``control``/``ami`` None: call control and pausing answer 503
    ``ami_unavailable`` and /readyz reports ``"ami": null``; ``ami`` is each PBX's AMI
    connection by name (or the one PBX's client), for /readyz. ``open_reader`` makes the
    Redis client of one WebSocket (default: a dedicated connection to ``redis_client``'s
    server). ``table`` is the routing plan of the moment (its pause reasons and queues;
    default: an empty plan, which offers none). ``serve_metrics`` False: no ``/metrics``
    here (it has a port of its own)."""
    limits = ws_limits or WsLimits()
    open_reader = open_reader or ws.reader_factory(redis_client, limits.block_ms)
    audit = SupervisorAudit(pool)
    metrics = metrics or Metrics()
    relay = wallboard_relay or wallboard.WallboardRelay(WallboardStore(redis_client), open_reader)
    metrics.watch_wallboard(lambda: relay.snapshot)
    checks = password_checks or PasswordChecks()
    metrics.watch_login_queue(LoginQueueSource(lambda: checks.admitted, lambda: checks.refused))
    app = web.Application(
        client_max_size=MAX_BODY_BYTES, middlewares=[error_middleware, revocation_middleware]
    )
    app[CONTEXT] = Context(
        pool=pool,
        redis=redis_client,
        call_data=call_data,
        sessions=sessions,
        metrics=metrics,
        access=Access(pool, redis_client),
        open_reader=open_reader,
        control=control,
        ami=ami,
        ws_limits=limits,
        throttle=throttle or LoginThrottle(redis_client),
        password_checks=checks,
        token_versions=TokenVersions(pool),
        table=table,
        supervision=Supervision(control, audit, table) if control is not None else None,
        audit=audit,
    )
    app[ws.SOCKETS] = ws.Sockets(limits.per_agent)
    api.add_routes(app)
    supervision_api.add_routes(app)
    reports.add_routes(app, timezone)
    app[health.METRICS] = metrics
    app[health.PROBES] = health.Probes(pool, redis_client, metrics, ami)
    health.add_routes(app, with_metrics=serve_metrics)
    openapi.add_routes(app)
    app.router.add_get("/ws", ws.websocket)
    wallboard.add_routes(app, relay)
    _add_page(app, static_dir)
    app.on_response_prepare.append(security_headers)
    app.on_shutdown.append(_close_sockets)
    return app


def _add_page(app: web.Application, static_dir: Path) -> None:
    """The page and its assets: the files of ``static_dir`` by name, nothing else.

    A lookup by name rather than aiohttp's ``add_static``: that one answers a missing
    file with a bare 404 decided while the response is sent, past the error middleware,
    so it was the one refusal that was not the JSON error; and a fixed set of names
    leaves no path to resolve, so nothing outside the folder can be asked for."""
    assets = (
        {path.name: path for path in static_dir.iterdir() if path.is_file()}
        if static_dir.is_dir()
        else {}
    )

    async def index(_request: web.Request) -> web.StreamResponse:
        page = static_dir / "index.html"
        if not page.is_file():
            raise web.HTTPNotFound(reason="the sidebar page is not installed")
        return web.FileResponse(page, headers={"Cache-Control": "no-cache"})

    async def asset(request: web.Request) -> web.StreamResponse:
        path = assets.get(request.match_info["filename"])
        if path is None or not path.is_file():
            raise web.HTTPNotFound(reason="no such file")
        return web.FileResponse(path)

    async def wallboard_page(_request: web.Request) -> web.StreamResponse:
        page = static_dir / "wallboard.html"
        if not page.is_file():
            raise web.HTTPNotFound(reason="the wallboard page is not installed")
        return web.FileResponse(page, headers={"Cache-Control": "no-cache"})

    app.router.add_get("/", index)
    app.router.add_get("/wallboard", wallboard_page)
    app.router.add_get("/static/{filename}", asset)


async def _close_sockets(app: web.Application) -> None:
    await app[ws.SOCKETS].close_all()


class HttpServer:
    """Runs an application on one TCP address until stopped, behind our admission
    (cti.screenpop.connections): caps at accept, a header deadline, idle keep-alive
    closed. ``name`` names the port in logs and metrics."""

    def __init__(
        self, app: web.Application, limits: HttpLimits | None = None, name: str = "sidebar"
    ) -> None:
        self.app = app
        self.name = name
        self.limits = limits or HttpLimits()
        app.middlewares.insert(0, request_started)  # the header deadline is met
        # No access log: WebSocket URLs carry the token, and the daemon logs what matters.
        # A malformed request is one log line, not a traceback (cti.screenpop.security).
        self._runner = web.AppRunner(
            app,
            access_log=None,
            logger=ServerLog(),
            handle_signals=False,
            shutdown_timeout=SHUTDOWN_GRACE_S,
            keepalive_timeout=self.limits.keepalive_s,
        )
        self.port: int | None = None
        self.listener = HttpListener(self.name, self._handler, self.limits)

    def _handler(self) -> asyncio.Protocol:
        """aiohttp's handler for one connection (the runner is set up by then)."""
        server = self._runner.server
        assert server is not None
        return server()

    async def start(self, host: str, port: int) -> None:
        await self._runner.setup()
        await self.listener.start(host, port)
        self.port = self.listener.port
        log.info(
            "http serving",
            http=f"{host}:{self.port}",
            port_of=self.name,
            max_connections=self.limits.max_connections,
            max_per_address=self.limits.max_per_address,
        )

    async def stop(self) -> None:
        """Stop accepting, close the sockets (clients reconnect elsewhere), finish
        requests, stop."""
        self.listener.close()
        await self._runner.cleanup()
