"""A listening socket with our own accept loop so a refusal costs next to nothing.

asyncio's server wraps every accepted connection in a task, a transport, a protocol
and a stream pair before our code sees it. Under a flood of strangers that work, done
thousands of times a second on the one event loop that also routes the calls, delayed
route decisions past their budget. Here the listening socket is read directly: each
accepted socket is judged by :class:`~cti.net.admission.Admission` on its peer
address alone and, if refused, reset (SO_LINGER 0: no TIME_WAIT kept for it) before
anything else is built. Only admitted sockets are handed on (FastAGI makes them
asyncio streams, HTTP hands them to aiohttp's protocol).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import struct
from collections.abc import Callable

import structlog

from cti.net.admission import Admission

log = structlog.get_logger(__name__)

#: The kernel's queue of connections not yet accepted (asyncio's default is 100). When a
#: burst overflows it, the kernel drops the SYN and the peer's connect waits for a
#: retransmission one second later: a flood of strangers would delay Asterisk's own
#: connects although we refuse the strangers at once. Capped by net.core.somaxconn.
ACCEPT_BACKLOG = 4096
#: Accepts per wake-up, so that a flood cannot keep the loop in one callback.
ACCEPTS_PER_WAKEUP = 128
#: Out of file descriptors: stop accepting this long (the kernel queues meanwhile).
PAUSE_ON_EXHAUSTION_S = 1.0
_EXHAUSTION = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}

#: Called with an admitted, connected, non-blocking socket and its peer's address.
Admitted = Callable[[socket.socket, str], None]


class Listener:
    def __init__(
        self, name: str, admission: Admission, admitted: Admitted, on_refused: Callable[[], None]
    ):
        self.name = name  # starts the log lines: "agi accept failed"
        self._admission = admission
        self._admitted = admitted
        self._on_refused = on_refused
        self._sockets: list[socket.socket] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, host: str, port: int) -> None:
        """Bind every address ``host`` resolves to, as asyncio's own server does."""
        self._loop = loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        seen = set()
        for family, kind, proto, _name, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(ACCEPT_BACKLOG)
                sock.setblocking(False)
            except OSError:
                sock.close()
                self.close()
                raise
            self._sockets.append(sock)
            loop.add_reader(sock.fileno(), self._accept, sock)

    @property
    def port(self) -> int:
        return int(self._sockets[0].getsockname()[1])

    def close(self) -> None:
        for sock in self._sockets:
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets = []

    def _accept(self, listening: socket.socket) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                conn, peer = listening.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno in _EXHAUSTION:
                    self._pause(listening, exc)
                else:
                    log.warning(f"{self.name} accept failed", error=repr(exc))
                return
            address = str(peer[0]) if isinstance(peer, tuple) else ""
            if self._admission.admit(address) is not None:  # counted, logged (rate-limited)
                _reset(conn)
                self._on_refused()
                continue
            conn.setblocking(False)
            self._admitted(conn, address)

    def _pause(self, listening: socket.socket, exc: OSError) -> None:
        """Out of descriptors: accepting again at once would spin; retry in a second."""
        assert self._loop is not None
        log.error(f"{self.name} accept paused: out of resources", error=repr(exc))
        self._loop.remove_reader(listening.fileno())

        def resume() -> None:
            if listening in self._sockets:
                assert self._loop is not None
                self._loop.add_reader(listening.fileno(), self._accept, listening)

        self._loop.call_later(PAUSE_ON_EXHAUSTION_S, resume)


_LINGER_ZERO = struct.pack("ii", 1, 0)


def _reset(conn: socket.socket) -> None:
    """Close at once with a reset: nothing read, nothing flushed, no TIME_WAIT kept."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    conn.close()
