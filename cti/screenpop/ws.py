"""The sidebar's WebSocket: the agent's call events, from where the client left off.

``GET /ws?token=T[&after=ID]``: ``hello`` first, then every entry of the agent's stream
(``cti:events:agent:<endpoint>``; a supervisor's: ``cti:events``) after ``after``, then
live ones, in stream order, each once. A reconnecting tab sends the last id it saw.

**One blocking XREAD per socket, on a Redis connection of its own.** ``XREAD`` from an
id is exclusive and ordered, so resuming with ``after=`` gives exactly the missed
entries, and the catch-up and live phases are the same loop with the same cursor: there
is no hand-over between a backlog read and a live feed where an entry could slip
through or come twice. A shared reader (one XREAD over every subscribed stream, fanned
out) would use fewer connections, but it must restart its blocking read whenever a
socket joins or leaves and splice each newcomer's backlog onto the live feed, which is
where such designs lose or repeat entries. The cost here is one Redis connection per
open socket, bounded by 3 sockets per agent: a few hundred for a call centre, far below
Redis's default 10,000 clients. The connection is dedicated (not from the shared pool)
because a blocking read holds it for up to ``block_ms`` and needs a longer socket
timeout than ordinary commands.

A Redis outage pauses the feed (retried with backoff, the cursor kept); nothing is lost
because the stream still holds the entries when Redis is back.

**Retention.** The streams keep a time (``CTI_STREAM_RETENTION_S``), and Redis may come
back empty. While catching up (the first reads, and the first after a Redis error) the
feed asks the stream, after each read, whether it still reaches back to the cursor
(:func:`cti.screenpop.streams.lost_after`). If so it sends ``{"type": "resync",
"reason": "trimmed"|"reset", "after": <the cursor>}`` instead of the read's entries and
starts over from the snapshot a new tab gets: the newest ``snapshot_entries`` entries.
A client is never silently skipped past what it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

import redis.asyncio as redis
import structlog
from aiohttp import WSMsgType, web
from redis.exceptions import RedisError

from cti.backoff import Backoff
from cti.calls.publisher import ALL_EVENTS_STREAM, agent_stream, stream_entries
from cti.screenpop.auth import Claims
from cti.screenpop.context import WsLimits, context, verify_token
from cti.screenpop.errors import invalid
from cti.screenpop.metrics import Metrics
from cti.screenpop.revocation import TokenVersions
from cti.screenpop.streams import (
    START,
    STREAM_ID,
    entry_id,
    entry_json,
    lost_after,
    snapshot_start,
)

log = structlog.get_logger(__name__)

TOO_MANY_SOCKETS = 4429
TOKEN_EXPIRED = 4401
GOING_AWAY = 1001
INTERNAL_ERROR = 1011


class Sockets:
    """The open sockets of this process, counted per agent (the 3-per-agent limit)."""

    def __init__(self, per_agent: int) -> None:
        self.per_agent = per_agent
        self._count: dict[str, int] = {}
        self.open: set[web.WebSocketResponse] = set()

    def add(self, username: str, ws: web.WebSocketResponse) -> bool:
        """Count the socket in, unless the agent already has ``per_agent`` open.

        No await between the check and the count: two sockets opening at once cannot
        both take the last place."""
        count = self._count.get(username, 0)
        if count >= self.per_agent:
            return False
        self._count[username] = count + 1
        self.open.add(ws)
        return True

    def remove(self, username: str, ws: web.WebSocketResponse) -> None:
        self.open.discard(ws)
        count = self._count.get(username, 0) - 1
        if count > 0:
            self._count[username] = count
        else:
            self._count.pop(username, None)

    def of(self, username: str) -> int:
        return self._count.get(username, 0)

    async def close_all(self) -> None:
        """On shutdown: tell every client to reconnect (elsewhere, or here later)."""
        await asyncio.gather(
            *(ws.close(code=GOING_AWAY, message=b"server shutting down") for ws in list(self.open)),
            return_exceptions=True,
        )


SOCKETS = web.AppKey("cti.screenpop.sockets", Sockets)


def reader_factory(client: redis.Redis, block_ms: int) -> Callable[[], redis.Redis]:
    """New single-connection clients to the same Redis as ``client``, whose socket
    timeout outlasts a blocking read.

    They copy ``client``'s connection class and options, so a client made through
    Sentinel (cti.app.resources.create_redis) gives readers whose connections ask the
    same Sentinel-backed pool for the master, and follow it over a failover
    (tests/integration/test_redis_sentinel.py). ``client`` must outlive them."""
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "socket_timeout": block_ms / 1000 + 10}

    def open_reader() -> redis.Redis:
        # from_pool: closing the client closes its pool (and so the connection) too.
        return redis.Redis.from_pool(
            redis.ConnectionPool(
                connection_class=pool.connection_class, max_connections=1, **kwargs
            )
        )

    return open_reader


class _Feed:
    """Sends one stream to one socket, from ``cursor`` on, for as long as it is open."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        reader: redis.Redis,
        stream: str,
        cursor: str,
        *,
        limits: WsLimits,
        metrics: Metrics,
        pops_for: str | None,
        send_lock: asyncio.Lock,
    ) -> None:
        self._ws = ws
        self._reader = reader
        self._stream = stream
        self.cursor = cursor
        self._limits = limits
        self._metrics = metrics
        self._pops_for = pops_for
        self._send_lock = send_lock
        self._backoff = Backoff(initial=0.2, cap=5.0)

    async def run(self) -> None:
        live = False  # caught up once: from then on entries are news, and pops
        fresh = self.cursor == START  # nothing to resume from: start at the snapshot
        while not self._ws.closed:
            before = self.cursor
            try:
                if fresh:
                    before = self.cursor = await self._snapshot()
                    fresh = False
                reply = await self._reader.xread(
                    {self._stream: before},
                    count=self._limits.batch,
                    block=self._limits.block_ms if live else None,
                )
                lost = None if live else await lost_after(self._reader, self._stream, before)
            except (RedisError, OSError) as exc:
                log.warning("event stream unreadable; retrying", error=repr(exc))
                live = False  # Redis may be back empty: check the cursor again
                await asyncio.sleep(self._backoff.next_delay())
                continue
            self._backoff.reset()
            if lost is not None:
                await self._resync(lost, before)
                fresh = True
                continue
            entries = stream_entries(reply)
            for raw_id, fields in entries:
                await self._send(entry_id(raw_id), entry_json(fields), live)
            if len(entries) < self._limits.batch:
                live = True

    async def _snapshot(self) -> str:
        return await snapshot_start(self._reader, self._stream, self._limits.snapshot_entries)

    async def _resync(self, reason: str, after: str) -> None:
        """Tell the client its resume point is gone; the snapshot follows."""
        log.info("client resynchronised", stream=self._stream, reason=reason, after=after)
        self._metrics.resyncs.labels(reason=reason).inc()
        frame = json.dumps({"type": "resync", "reason": reason, "after": after})
        async with self._send_lock:
            await self._ws.send_str(frame)
        self.cursor = START

    async def _send(self, stream_id: str, text: str | None, live: bool) -> None:
        self.cursor = stream_id  # past it even if it is not ours to send
        try:
            event = json.loads(text) if text is not None else None
        except ValueError:
            event = None
        if not isinstance(event, dict):
            log.warning("malformed stream entry skipped", stream=self._stream, id=stream_id)
            return
        frame = json.dumps({"type": "event", "id": stream_id, "event": event})
        async with self._send_lock:
            await self._ws.send_str(frame)
        if (
            live
            and self._pops_for is not None
            and event.get("event") == "ringing"
            and event.get("agent") == self._pops_for
            and isinstance(event.get("at"), int | float)
        ):
            self._metrics.observe_pop_since(event["at"])


async def websocket(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    sockets = request.app[SOCKETS]
    who = verify_token(request, request.query.get("token"))
    after = request.query.get("after")
    if after is not None and not STREAM_ID.fullmatch(after):
        raise invalid("after", "a stream id as the server sent it (digits-digits)")
    ws = web.WebSocketResponse(
        heartbeat=ctx.ws_limits.heartbeat_s,
        max_msg_size=ctx.ws_limits.max_frame_bytes,
        compress=False,  # small frames; zlib would cost ~300 KB per socket
    )
    if not ws.can_prepare(request).ok:
        raise invalid("connection", "expected a WebSocket upgrade")
    await ws.prepare(request)
    if not sockets.add(who.username, ws):
        log.info("too many sidebars open", username=who.username)
        await ws.close(code=TOO_MANY_SOCKETS, message=b"too many open sidebars for this agent")
        return ws
    ctx.metrics.websocket_clients.inc()
    reader = ctx.open_reader()
    feed_task: asyncio.Task[None] | None = None
    watch_task: asyncio.Task[None] | None = None
    send_lock = asyncio.Lock()
    try:
        cursor = after or START
        hello = {"type": "hello", "agent": who.agent_json(), "after": cursor}
        await ws.send_str(json.dumps(hello))
        feed = _Feed(
            ws,
            reader,
            ALL_EVENTS_STREAM if who.is_supervisor else agent_stream(who.endpoint),
            cursor,
            limits=ctx.ws_limits,
            metrics=ctx.metrics,
            pops_for=None if who.is_supervisor else who.endpoint,
            send_lock=send_lock,
        )
        feed_task = asyncio.create_task(_guard(ws, feed), name=f"ws-feed-{who.username}")
        watch_task = asyncio.create_task(
            watch_revocation(ws, who, ctx.token_versions, ctx.ws_limits.revocation_check_s),
            name=f"ws-revocation-{who.username}",
        )
        await receive(ws, ctx.sessions.seconds_left(who), send_lock)
    except ConnectionError:
        pass  # the client went away mid-send
    finally:
        for task in (feed_task, watch_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        sockets.remove(who.username, ws)
        ctx.metrics.websocket_clients.dec()
        await reader.aclose()
        if not ws.closed:
            await ws.close()
    return ws


async def _guard(ws: web.WebSocketResponse, feed: _Feed) -> None:
    """Run the feed; a bug in it closes the socket (the client reconnects with ``after``)
    rather than leaving a socket open that silently gets nothing."""
    try:
        await feed.run()
    except ConnectionError:
        pass
    except Exception:
        log.exception("event feed failed; closing the socket")
        await ws.close(code=INTERNAL_ERROR, message=b"event feed failed; reconnect")


async def watch_revocation(
    ws: web.WebSocketResponse, who: Claims, versions: TokenVersions | None, every_s: float
) -> None:
    """Close the socket 4401 once its token is revoked (logout, new password, agent
    removed or changed): a socket must not keep delivering a removed agent's calls."""
    if versions is None:
        return
    while not ws.closed:
        await asyncio.sleep(every_s)
        try:
            revoked = await versions.revoked(who)
        except Exception:  # a bug here must not take the socket's feed down with it
            log.exception("revocation check failed")
            continue
        if revoked:
            log.info("socket closed: token revoked", username=who.username)
            await ws.close(code=TOKEN_EXPIRED, message=b"token revoked; log in again")
            return


async def receive(ws: web.WebSocketResponse, valid_s: float, send_lock: asyncio.Lock) -> None:
    """Answer pings until the client closes, sends too big a frame, or the token expires
    (``valid_s`` from now, by the sessions' clock)."""
    try:
        async with asyncio.timeout(valid_s):
            while True:
                msg = await ws.receive()
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    return
                if msg.type is WSMsgType.ERROR:  # e.g. a frame over the limit: closed 1009
                    return
                if msg.type is WSMsgType.TEXT and _is_ping(msg.data):
                    async with send_lock:
                        await ws.send_str('{"type":"pong"}')
    except TimeoutError:
        await ws.close(code=TOKEN_EXPIRED, message=b"token expired; log in again")


def _is_ping(data: str) -> bool:
    try:
        message = json.loads(data)
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("type") == "ping"
