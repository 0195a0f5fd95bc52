"""Bad first hosts for a multi-host PostgreSQL URL, each on 127.0.0.1, counting who came.

* :class:`SilentHost` accepts connections and never says a word (a hung server, or a
  path that drops the replies);
* :class:`FullBacklog` never accepts: its listen queue is full, so the kernel drops the
  client's SYNs and the connect hangs (a machine gone, packets swallowed);
* :class:`StandbyHost` speaks the PostgreSQL protocol's start-up, trust
  authentication, and reports itself as a hot standby (``in_hot_standby=on``,
  ``default_transaction_read_only=on``: the two server parameters asyncpg reads for
  ``target_session_attrs``), then waits for the client to hang up.

A real standby would need a second PostgreSQL cluster and replication; what the client
sees of one at connection time is exactly these start-up messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

SSL_REQUEST = 80877103
STANDBY_PARAMETERS = {
    "server_version": "16.0",
    "server_encoding": "UTF8",
    "client_encoding": "UTF8",
    "DateStyle": "ISO, MDY",
    "integer_datetimes": "on",
    "standard_conforming_strings": "on",
    "TimeZone": "UTC",
    "in_hot_standby": "on",
    "default_transaction_read_only": "on",
}


class _Counting:
    def __init__(self) -> None:
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._closing = asyncio.Event()

    async def start(self) -> _Counting:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        # Ended from the inside, not cancelled: Python 3.11's stream callback logs an
        # error for a cancelled connection handler.
        self._closing.set()
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class SilentHost(_Counting):
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._closing.wait()  # hold it open, say nothing, until closed


class StandbyHost(_Counting):
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        length, code = struct.unpack("!ii", await reader.readexactly(8))
        if code == SSL_REQUEST:
            writer.write(b"N")  # no TLS here; the client goes on in the clear
            length, code = struct.unpack("!ii", await reader.readexactly(8))
        await reader.readexactly(length - 8)  # the start-up parameters: any user, any db
        out = _message(b"R", struct.pack("!i", 0))  # AuthenticationOk
        for name, value in STANDBY_PARAMETERS.items():
            out += _message(b"S", f"{name}\0{value}\0".encode())
        out += _message(b"K", struct.pack("!ii", 4242, 1))  # BackendKeyData
        out += _message(b"Z", b"I")  # ReadyForQuery, idle
        writer.write(out)
        await writer.drain()
        while await reader.read(65536):  # until the client terminates or hangs up
            pass


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


class FullBacklog:
    """A listening socket never accepted from, its queue filled first: the next
    connect's SYN is dropped (Linux drops SYNs while the accept queue is full)."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(0)
        self.port: int = self._listener.getsockname()[1]
        self._fillers: list[socket.socket] = []

    def fill(self, probe_s: float = 1.0) -> FullBacklog:
        """Connect until a connect does not complete within ``probe_s``."""
        for _ in range(16):
            filler = socket.socket()
            filler.settimeout(probe_s)
            try:
                filler.connect(("127.0.0.1", self.port))
            except TimeoutError:
                filler.close()
                return self
            self._fillers.append(filler)
        raise RuntimeError("the listen queue never filled")

    def close(self) -> None:
        for s in [*self._fillers, self._listener]:
            with contextlib.suppress(OSError):
                s.close()
