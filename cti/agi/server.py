"""The FastAGI server: one asyncio task per connection, strict limits, clean closes.

The adapter stays thin: it reads lines, feeds :mod:`cti.agi.protocol`, and hands a
:class:`AgiSession` to the script the request names. Everything that can go wrong
with a peer (garbage, a header that never ends, a peer that vanishes, an unknown
script) ends in a logged close of that one connection; the server itself never stops
serving. Who may connect, and how many at once, is :mod:`cti.agi.admission`'s call,
made in :mod:`cti.net.listener`'s accept loop before a byte is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import structlog

from cti.agi.admission import (
    DEFAULT_ALLOW,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_PER_ADDRESS,
    agi_admission,
)
from cti.agi.protocol import (
    HANGUP,
    AgiProtocolError,
    AgiReply,
    AgiRequest,
    ReplyParser,
    RequestParser,
)
from cti.net.admission import Network
from cti.net.listener import Listener

log = structlog.get_logger(__name__)

MAX_LINE = 8 * 1024


class AgiSessionClosed(ConnectionError):
    """The peer went away, or broke the protocol, while a script was talking to it."""


@dataclass(frozen=True, slots=True)
class AgiLimits:
    header_timeout_s: float = 5.0  # the whole request block, so slow drips are cut too
    reply_timeout_s: float = 5.0
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_header_bytes: int = 64 * 1024
    #: Peers outside these networks are refused at accept (CTI_AGI_ALLOW).
    allow: tuple[Network, ...] = DEFAULT_ALLOW
    #: Sessions one address may hold at once (CTI_AGI_MAX_PER_ADDRESS).
    max_per_address: int = DEFAULT_MAX_PER_ADDRESS


class AgiSession:
    """What a script sees: the request and a way to send commands, one at a time.

    Commands are strictly sequential: Asterisk reads the socket through a buffered
    ``fgets`` and then polls the descriptor, so pipelined commands would sit in its
    buffer unread.
    """

    def __init__(
        self,
        request: AgiRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        reply_timeout_s: float,
        peer_host: str = "",
    ) -> None:
        self.request = request
        #: The address Asterisk connected from (which PBX asks, when hosts differ).
        self.peer_host = peer_host
        self.hung_up = False
        self.commands: list[bytes] = []
        self._reader = reader
        self._writer = writer
        self._reply_timeout_s = reply_timeout_s

    async def command(self, line: bytes) -> AgiReply:
        self.commands.append(line)
        self._writer.write(line)
        try:
            async with asyncio.timeout(self._reply_timeout_s):
                await self._writer.drain()
                parser = ReplyParser()
                while True:
                    raw = await self._reader.readline()
                    if not raw.endswith(b"\n"):
                        raise AgiSessionClosed("connection closed while waiting for a reply")
                    reply = parser.feed(raw)
                    if isinstance(reply, AgiReply):
                        return reply
                    if reply is HANGUP:
                        self.hung_up = True
        except TimeoutError:
            raise AgiSessionClosed(f"no reply within {self._reply_timeout_s}s") from None
        except (AgiProtocolError, ValueError, ConnectionError) as exc:
            raise AgiSessionClosed(str(exc)) from exc


Script = Callable[[AgiSession], Awaitable[None]]


@dataclass(slots=True)
class AgiStats:
    connections: int = 0
    active: int = 0
    refused: int = 0
    bad_requests: int = 0
    unknown_scripts: int = 0
    script_errors: int = 0
    by_close: dict[str, int] = field(default_factory=dict)


class AgiServer:
    def __init__(self, scripts: Mapping[str, Script], limits: AgiLimits | None = None) -> None:
        self._scripts = dict(scripts)
        self.limits = limits or AgiLimits()
        self.stats = AgiStats()
        self.admission = agi_admission(
            self.limits.allow, self.limits.max_per_address, self.limits.max_connections
        )
        self._listener = Listener("agi", self.admission, self._admitted, self._count_refused)
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)

    async def start(self, host: str, port: int) -> None:
        await self._listener.start(host, port)

    @property
    def port(self) -> int:
        """The port we listen on (useful when bound to port 0)."""
        return self._listener.port

    async def close(self, grace_s: float = 5.0) -> None:
        """Stop accepting, let sessions in flight finish for ``grace_s``, then cancel them."""
        self._listener.close()
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _count_refused(self) -> None:
        self.stats.connections += 1
        self.stats.refused += 1

    def _admitted(self, conn: socket.socket, address: str) -> None:
        """An admitted socket (its slot taken): a task of its own, until it closes."""
        self.stats.connections += 1
        task = asyncio.get_running_loop().create_task(self._session(conn, address))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _session(self, conn: socket.socket, address: str) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=conn, limit=MAX_LINE)
        except BaseException:
            self.admission.release(address)
            conn.close()
            raise
        await self._serve(reader, writer, address)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str
    ) -> None:
        stats = self.stats
        conn_log = log.bind(agi_conn=next(self._ids), peer=_peer(writer))
        stats.active += 1
        outcome = "ok"
        try:
            request = await self._read_request(reader)
            if request is None:
                outcome = "peer-closed"
                return
            for fault in request.refused:
                conn_log.warning(
                    "agi argument with a control character dropped",
                    fault=fault,
                    channel=request.get("channel"),
                )
            script = self._scripts.get(request.script)
            if script is None:
                stats.unknown_scripts += 1
                outcome = "unknown-script"
                conn_log.warning(
                    "agi request for an unknown script; closing",
                    script=request.script[:80],
                    channel=request.get("channel"),
                )
                return
            session = AgiSession(
                request, reader, writer, self.limits.reply_timeout_s, _peer_host(writer)
            )
            await script(session)
        except TimeoutError:
            outcome = "header-timeout"
            conn_log.info("agi peer sent no complete request in time; closing")
        except (AgiProtocolError, ValueError) as exc:  # ValueError: a line over MAX_LINE
            stats.bad_requests += 1
            outcome = "bad-request"
            conn_log.warning("agi bad request; closing", error=str(exc)[:200])
        except (AgiSessionClosed, ConnectionError) as exc:
            outcome = "session-lost"
            conn_log.info("agi session ended early", error=str(exc)[:200])
        except Exception:
            stats.script_errors += 1
            outcome = "script-error"
            conn_log.exception("agi script failed")
        finally:
            stats.active -= 1
            self.admission.release(address)
            stats.by_close[outcome] = stats.by_close.get(outcome, 0) + 1
            await _close(writer)

    async def _read_request(self, reader: asyncio.StreamReader) -> AgiRequest | None:
        parser = RequestParser(max_bytes=self.limits.max_header_bytes)
        async with asyncio.timeout(self.limits.header_timeout_s):
            while True:
                raw = await reader.readline()
                if not raw.endswith(b"\n"):
                    return None  # EOF (perhaps mid-line) before the blank line
                request = parser.feed(raw)
                if request is not None:
                    return request


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)


def _peer_host(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) else ""


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, TimeoutError, ConnectionError):
        async with asyncio.timeout(1):
            await writer.wait_closed()
