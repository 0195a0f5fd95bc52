"""The sidebar's HTTP connections: admitted at accept, closed when they stall.

aiohttp's own listener (``TCPSite``) accepts every connection, and nothing but its
keep-alive timer (3,630 s by default) bounds a request's headers: 1,100 connections
that each sent ``GET /healthz HTTP/1.1`` and one header line stayed open for minutes,
filled a 1,024-descriptor table and every FastAGI route failed meanwhile. So the
sidebar's port is read by our own accept loop (:class:`cti.net.listener.Listener`, as
FastAGI's is): each connection is judged by
:class:`cti.net.admission.Admission` (a cap per address and over all) and reset at once
if refused; an admitted one is handed to aiohttp's request handler behind
:class:`_Connection`, a pass-through protocol that

* closes the connection when its first request's headers are not complete within
  ``header_timeout_s`` of accept (a peer that sends part of a request, or nothing);
* gives the admission slot back when the connection is lost, however it ends.

Between requests of a kept-alive connection, aiohttp's ``keepalive_timeout`` (our
``keepalive_s``) bounds both an idle connection and one that sends part of its next
request: its handler is idle until a request's headers are complete.

**At the global cap an idle connection makes room.** 1,000 idle connections from 8
addresses (each under its per-address cap) filled the cap and an agent's connection
was reset at accept for the header deadline's ten seconds at a time. So when the cap is
reached, a connection with no request in flight (waiting for its first request's
headers, or kept alive between requests) is closed to admit the newcomer: one from the
address that holds the most idle connections, the longest idle of them (an agent's own
idle connection goes last; its WebSocket, a request in flight, never), and only if that
address holds more idle connections than the newcomer's own. So an agent (no idle
connection) always displaces a hoarder, while the flood's own returning connections,
once its addresses hold as many as each other, are reset at accept as cheaply as before
rather than displacing each other in a loop. Counted in ``/metrics``
(``cti_http_evicted_total``) and logged by the rate-limited refusal log
(``reason="evicted"``); otherwise the newcomer is refused (``global``).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from aiohttp import web

from cti.net.admission import Admission, RateLimitedLog
from cti.net.listener import Listener
from cti.screenpop.metrics import HttpPortSource

log = structlog.get_logger(__name__)

#: A browser sends its request at once; 10 s is generous for a slow link.
DEFAULT_HEADER_TIMEOUT_S = 10.0
#: An idle kept-alive connection is closed after this (the page's WebSocket is not idle).
DEFAULT_KEEPALIVE_S = 30.0
#: Each agent's page holds a WebSocket and a few short requests; 2,000 is several hundred
#: agents. The descriptor budget may lower it at start-up (cti.net.admission.fit_caps).
DEFAULT_MAX_CONNECTIONS = 2000
#: An office behind one NAT address (or a reverse proxy: raise it to the global cap).
DEFAULT_MAX_PER_ADDRESS = 500


@dataclass(frozen=True, slots=True)
class HttpLimits:
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    keepalive_s: float = DEFAULT_KEEPALIVE_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_per_address: int = DEFAULT_MAX_PER_ADDRESS


class _Connection(asyncio.Protocol):
    """aiohttp's handler of one connection, behind a deadline and a slot."""

    def __init__(self, inner: asyncio.Protocol, owner: HttpListener, address: str) -> None:
        self._inner = inner
        self._owner = owner
        self._address = address
        self._transport: asyncio.BaseTransport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self.made = False
        self.requests = 0
        self.in_flight = 0  # requests whose handler runs (a WebSocket's, all along)
        self.evicted = False  # its slot was given back when it was closed to make room

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made = True
        self._transport = transport
        self._deadline = asyncio.get_running_loop().call_later(
            self._owner.limits.header_timeout_s, self._expire
        )
        self._inner.connection_made(transport)
        self._owner.idle(self)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        try:
            self._inner.connection_lost(exc)
        finally:
            self._owner.lost(self)

    @property
    def address(self) -> str:
        return self._address

    def request_started(self) -> None:
        """A request's headers are complete (its handler runs): the deadline is met."""
        self.requests += 1
        self.in_flight += 1
        self._owner.busy(self)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def request_finished(self) -> None:
        """Its handler returned (aiohttp writes the response it built at once)."""
        self.in_flight -= 1
        if self.in_flight == 0 and self._transport is not None:
            self._owner.idle(self)

    def evict(self) -> None:
        """Closed at once (a reset) to make room; the caller has the slot back."""
        self.evicted = True
        if self._transport is not None:
            self._transport.abort()  # type: ignore[attr-defined]

    def _expire(self) -> None:
        self._deadline = None
        if self.requests == 0 and self._transport is not None:
            self._owner.header_timed_out(self._address)
            self._transport.close()


@web.middleware
async def request_started(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Tells the connection its request arrived (the first middleware of the app)."""
    transport = request.transport
    connection = transport.get_protocol() if transport is not None else None
    if not isinstance(connection, _Connection):
        return await handler(request)
    connection.request_started()
    try:
        return await handler(request)
    finally:
        connection.request_finished()


class HttpListener:
    """Our accept loop in front of an aiohttp server (``AppRunner.server``).

    ``name`` names the port in logs and metrics (``sidebar``, ``metrics``)."""

    def __init__(
        self, name: str, handler: Callable[[], asyncio.Protocol], limits: HttpLimits
    ) -> None:
        self.name = name
        self.limits = limits
        self.admission = Admission(
            name=f"http {name}",
            max_per_address=limits.max_per_address,
            max_connections=limits.max_connections,
        )
        self.admission.make_room = self._evict_idle
        self.header_timeouts = 0
        self.evicted = 0
        #: Connections with no request in flight, by address, longest idle first.
        self._idle: dict[str, dict[_Connection, float]] = {}
        self._timeouts_log = RateLimitedLog(
            f"http {name}: no request within the header deadline; closed", "closed"
        )
        self._handler = handler
        self._listener = Listener(f"http {name}", self.admission, self._admitted, _nothing)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> None:
        await self._listener.start(host, port)

    @property
    def port(self) -> int:
        return self._listener.port

    def source(self) -> HttpPortSource:
        """The figures ``/metrics`` reads (:meth:`Metrics.watch_http`)."""
        return HttpPortSource(
            refused=lambda: self.admission.refused,
            header_timeouts=lambda: self.header_timeouts,
            evicted=lambda: self.evicted,
            active=lambda: self.admission.active,
        )

    def close(self) -> None:
        """Stop accepting (the runner closes the connections it has)."""
        self._listener.close()

    def lost(self, connection: _Connection) -> None:
        self.busy(connection)
        if not connection.evicted:
            self.admission.release(connection.address)

    def idle(self, connection: _Connection) -> None:
        """``connection`` has no request in flight: it may be closed to make room."""
        self._idle.setdefault(connection.address, {})[connection] = time.monotonic()

    def busy(self, connection: _Connection) -> None:
        idle = self._idle.get(connection.address)
        if idle is not None and idle.pop(connection, None) is not None and not idle:
            del self._idle[connection.address]

    def idle_connections(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    def _evict_idle(self, newcomer: str) -> bool:
        """At the global cap: close the longest idle connection of the address holding
        the most idle ones, giving its slot back at once, if it holds more than the
        ``newcomer``'s address; False (the newcomer is refused) if not."""
        if not self._idle:
            return False
        address = max(
            self._idle, key=lambda a: (len(self._idle[a]), -next(iter(self._idle[a].values())))
        )
        if len(self._idle[address]) <= len(self._idle.get(newcomer, ())):
            return False
        connection = next(iter(self._idle[address]))
        self.busy(connection)
        connection.evict()
        self.admission.release(address)
        self.evicted += 1
        self.admission.log.note(address, reason="evicted", limit=self.admission.max_connections)
        return True

    def header_timed_out(self, address: str) -> None:
        self.header_timeouts += 1
        self._timeouts_log.note(address, header_timeout_s=self.limits.header_timeout_s)

    def _admitted(self, conn: socket.socket, address: str) -> None:
        task = asyncio.get_running_loop().create_task(self._connect(conn, address))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, conn: socket.socket, address: str) -> None:
        connection = _Connection(self._handler(), self, address)
        try:
            await asyncio.get_running_loop().connect_accepted_socket(lambda: connection, conn)
        except BaseException as exc:
            if not connection.made:  # else connection_lost gives the slot back
                self.admission.release(address)
                conn.close()
            if not isinstance(exc, Exception):
                raise
            log.info("http connection failed at once", peer=address, error=repr(exc))


def _nothing() -> None:
    """Refusals are counted by the admission itself."""
