"""What every handler needs, in one object stored on the application.

Built by :func:`cti.screenpop.app.build_app` from explicit dependencies, so that tests
(and ``cti screenpop``) assemble exactly what they want without the whole daemon.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
from aiohttp import web
from redis.asyncio import Redis

from cti.agents.audit import SupervisorAudit
from cti.agents.supervision import Supervision
from cti.calldata.service import CallDataService
from cti.calls.control import CallControl
from cti.errors import DomainError
from cti.routing.table import RoutingTable
from cti.screenpop.access import Access
from cti.screenpop.auth import Claims, Sessions, TokenError
from cti.screenpop.health import AmiLinks
from cti.screenpop.metrics import Metrics
from cti.screenpop.password_checks import PasswordChecks
from cti.screenpop.revocation import TokenVersions
from cti.screenpop.throttle import LoginThrottle


@dataclass(frozen=True, slots=True)
class WsLimits:
    per_agent: int = 3  # open sockets per agent in this process; the next is closed 4429
    heartbeat_s: float = 15.0  # WebSocket ping interval (and pong deadline)
    max_frame_bytes: int = 4096  # a bigger client frame closes the socket (1009)
    block_ms: int = 5000  # one blocking XREAD waits at most this
    revocation_check_s: float = 1.0  # how often an open socket checks its token is not revoked
    batch: int = 500  # entries per XREAD
    #: A client with nothing to resume from (a new tab, or one whose resume point was
    #: trimmed) gets at most this many of the newest entries: enough for today's calls.
    snapshot_entries: int = 2000


@dataclass(slots=True)
class Context:
    pool: asyncpg.Pool
    redis: Redis
    call_data: CallDataService
    sessions: Sessions
    metrics: Metrics
    access: Access
    #: A new Redis client for one WebSocket's blocking reads (see cti.screenpop.ws).
    open_reader: Callable[[], Redis]
    control: CallControl | None = None  # None: no AMI, call control and pausing answer 503
    ami: AmiLinks | None = None  # for /readyz: each PBX's AMI connection
    ws_limits: WsLimits = field(default_factory=WsLimits)
    #: None: no throttling (a test that is not about it); build_app always sets one.
    throttle: LoginThrottle | None = None
    password_checks: PasswordChecks = field(default_factory=PasswordChecks)
    token_versions: TokenVersions | None = None  # None: signature only (no revocation)
    #: The routing plan of the moment: its pause reasons and queues.
    table: Callable[[], RoutingTable] = RoutingTable
    #: None: no AMI, the supervisor's actions answer 503 (like call control).
    supervision: Supervision | None = None
    #: The supervisor actions' record (None: none kept, read as empty).
    audit: SupervisorAudit | None = None


CONTEXT = web.AppKey("cti.screenpop.context", Context)


def context(request: web.Request) -> Context:
    return request.app[CONTEXT]


def authenticate(request: web.Request) -> Claims:
    """The caller's claims from ``Authorization: Bearer <token>``, or 401 ``unauthorized``."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        token = ""
    return verify_token(request, token.strip())


def verify_token(request: web.Request, token: str | None) -> Claims:
    try:
        return context(request).sessions.verify(token)
    except TokenError as exc:
        raise DomainError("unauthorized", f"{exc}: log in again (POST /api/login)") from None


def presented_token(request: web.Request) -> str | None:
    """The token the request carries: ``Authorization: Bearer`` or the WebSocket's
    ``?token=``."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.query.get("token") if request.path in ("/ws", "/ws/wallboard") else None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def revocation_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """401 for a validly signed token that has been revoked (cti.screenpop.revocation),
    before any handler runs; a missing or bad token is the handler's to refuse."""
    ctx = context(request)
    token = presented_token(request)
    if token and ctx.token_versions is not None and request.path != "/api/login":
        try:
            who = ctx.sessions.verify(token)
        except TokenError:
            return await handler(request)
        if await ctx.token_versions.revoked(who):
            raise DomainError("unauthorized", "token revoked: log in again (POST /api/login)")
    return await handler(request)
