"""The wallboard's HTTP side: ``GET /api/wallboard`` and ``GET /ws/wallboard``.

The figures are computed once per event by the AMI leader (:mod:`cti.wallboard.engine`),
which publishes each frame once on a Redis channel. Each web process holds **one**
subscription (:class:`WallboardRelay`) and hands the same frame text to each of its open
wallboards: an event costs one Redis message and one JSON parse per process, and one
socket write per viewer, whatever is on the screens; nothing is queried or computed
per viewer. The relay also keeps a merged copy of the figures (the snapshot plus every
frame since), which a newly opened wallboard gets first and ``/metrics`` reads.

Frames carry a sequence number. A gap (a lost message, a new leader whose numbering
restarted from its last save) makes the relay read the whole snapshot again (the
leader writes it before publishing, in the same script) and send it to every socket.

Supervisors only: an agent's request is refused 403 ``forbidden``, before the upgrade.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import redis.asyncio as redis
import structlog
from aiohttp import web
from redis.exceptions import RedisError

from cti.backoff import Backoff
from cti.errors import DomainError
from cti.screenpop.auth import Claims
from cti.screenpop.context import authenticate, context, verify_token
from cti.screenpop.errors import invalid
from cti.screenpop.ws import receive, watch_revocation
from cti.wallboard.figures import FORMULA
from cti.wallboard.store import CHANNEL, WallboardStore

log = structlog.get_logger(__name__)

#: Open wallboards per web process; the next is closed 4429 (a TV wall needs a few).
MAX_WALLBOARDS = 1000
TOO_MANY = 4429


def _empty() -> dict[str, Any]:
    return {"seq": 0, "at": None, "formula": FORMULA, "queues": {}, "agents": {}}


class WallboardRelay:
    """One subscription to the leader's frames per process, fanned out to its sockets."""

    def __init__(
        self,
        store: WallboardStore,
        open_subscriber: Callable[[], redis.Redis],
        *,
        max_sockets: int = MAX_WALLBOARDS,
    ) -> None:
        self.store = store
        self._open_subscriber = open_subscriber
        self.max_sockets = max_sockets
        self.sockets: set[web.WebSocketResponse] = set()
        self.snapshot: dict[str, Any] | None = None
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.frames = 0
        self.resyncs = 0

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="wallboard-relay")

    async def stop(self) -> None:
        """Stop relaying. A cancellation that lands while redis-py's ``get_message`` reads
        can be swallowed by it (seen: a shutdown that waited for ever), so the loop also
        checks ``_stopping`` after each read of at most a second, and we cancel again
        until the task has ended."""
        self._stopping = True
        task = self._task
        if task is not None:
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            self._task = None

    async def _run(self) -> None:
        backoff = Backoff(initial=0.2, cap=5.0)
        while not self._stopping:
            client = self._open_subscriber()
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CHANNEL)
                await self._resync()  # after subscribing: no frame falls in between
                self.ready.set()
                backoff.reset()
                while not self._stopping:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        await self._frame(message["data"])
            except (RedisError, OSError) as exc:
                log.warning("wallboard relay: Redis failed; resubscribing", error=repr(exc))
                await asyncio.sleep(backoff.next_delay())
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                await client.aclose()

    async def _resync(self) -> None:
        self.snapshot = await self.store.snapshot() or _empty()
        self.resyncs += 1
        await self._send(json.dumps({"type": "snapshot", "snapshot": self.snapshot}))

    async def _frame(self, raw: bytes | str) -> None:
        text = raw.decode() if isinstance(raw, bytes) else raw
        try:
            frame = json.loads(text)
        except ValueError:
            return
        snapshot = self.snapshot
        if not isinstance(frame, dict) or snapshot is None:
            return
        if frame.get("seq") != snapshot.get("seq", 0) + 1:
            await self._resync()
            return
        for key, value in frame.items():
            if key not in ("type", "queues", "agents"):
                snapshot[key] = value
        snapshot.setdefault("queues", {}).update(frame.get("queues") or {})
        snapshot.setdefault("agents", {}).update(frame.get("agents") or {})
        self.frames += 1
        await self._send(text)

    async def _send(self, text: str) -> None:
        for ws in list(self.sockets):
            try:
                await ws.send_str(text)
            except (ConnectionError, RuntimeError):
                self.sockets.discard(ws)

    async def close_all(self) -> None:
        await asyncio.gather(
            *(ws.close(code=1001, message=b"server shutting down") for ws in list(self.sockets)),
            return_exceptions=True,
        )
        await self.stop()


RELAY = web.AppKey("cti.screenpop.wallboard", WallboardRelay)


def _supervisor(who: Claims) -> None:
    if not who.is_supervisor:
        raise DomainError("forbidden", "the wallboard is for supervisors only")


async def wallboard(request: web.Request) -> web.Response:
    """The figures as of the last frame (one Redis GET; nothing computed here)."""
    _supervisor(authenticate(request))
    relay = request.app[RELAY]
    snapshot = await relay.store.snapshot()
    return web.json_response(snapshot or _empty())


async def wallboard_socket(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    relay = request.app[RELAY]
    who = verify_token(request, request.query.get("token"))
    _supervisor(who)
    ws = web.WebSocketResponse(
        heartbeat=ctx.ws_limits.heartbeat_s,
        max_msg_size=ctx.ws_limits.max_frame_bytes,
        compress=False,  # deflating each frame once per socket is a cost per viewer
    )
    if not ws.can_prepare(request).ok:
        raise invalid("connection", "expected a WebSocket upgrade")
    await ws.prepare(request)
    if len(relay.sockets) >= relay.max_sockets:
        await ws.close(code=TOO_MANY, message=b"too many wallboards open on this server")
        return ws
    relay.start()
    ctx.metrics.wallboard_clients.inc()
    send_lock = asyncio.Lock()
    watch = asyncio.create_task(
        watch_revocation(ws, who, ctx.token_versions, ctx.ws_limits.revocation_check_s)
    )
    try:
        await asyncio.wait_for(relay.ready.wait(), 10.0)
        # The copy and the joining with no await between: the copy is written to the
        # socket before any frame the relay sends it, and no frame falls in between.
        text = json.dumps({"type": "snapshot", "snapshot": relay.snapshot})
        relay.sockets.add(ws)
        await ws.send_str(text)
        await receive(ws, ctx.sessions.seconds_left(who), send_lock)
    except (ConnectionError, TimeoutError):
        pass
    finally:
        relay.sockets.discard(ws)
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watch
        ctx.metrics.wallboard_clients.dec()
        if not ws.closed:
            await ws.close()
    return ws


def add_routes(app: web.Application, relay: WallboardRelay) -> None:
    app[RELAY] = relay
    app.router.add_get("/api/wallboard", wallboard)
    app.router.add_get("/ws/wallboard", wallboard_socket)

    async def start(_app: web.Application) -> None:
        relay.start()  # /metrics reads its copy even with no wallboard open

    async def close(_app: web.Application) -> None:
        await relay.close_all()

    app.on_startup.append(start)
    app.on_shutdown.append(close)
