"""A TCP proxy in front of a real server, for fault injection in tests.

Modes: ``forward`` (transparent), ``blackhole`` (accept and hold connections, never
answer: a server that is up but hung, or a network that drops packets) and ``refuse``
(close at once: a server that is down). ``cut()`` severs every connection in flight,
as a server restart does. ``freeze()`` makes the connections in flight go silent both
ways while their sockets stay open (a half-open connection: a NAT that forgot it, a
cable pulled); new connections are not affected. ``inject(data)`` writes extra bytes
to every client (garbage on the wire). ``partition()`` is a network partition that
neither side is told about: the connections in flight go silent both ways (bytes held,
nothing closed, a close by either side held too) and new connections are accepted but
held without reaching the server; ``heal()`` lets everything held through. Apart from
what a test injects, the bytes are the real server's.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

Mode = Literal["forward", "blackhole", "refuse", "partition"]


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode: Mode = "forward"
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._clients: dict[asyncio.StreamWriter, asyncio.Event] = {}  # -> flowing
        self.port = 0
        self._healed = asyncio.Event()
        self._healed.set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, scheme: str, path: str = "") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def set_mode(self, mode: Mode, *, cut: bool = True) -> None:
        self.mode = mode
        if cut:
            self.cut()

    def cut(self) -> None:
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    def freeze(self) -> None:
        for flowing in self._clients.values():
            flowing.clear()

    def partition(self) -> None:
        self.mode = "partition"
        self._healed.clear()
        self.freeze()

    def heal(self) -> None:
        self.mode = "forward"
        self._healed.set()
        for flowing in self._clients.values():
            flowing.set()

    async def inject(self, data: bytes) -> None:
        for writer, flowing in list(self._clients.items()):
            if flowing.is_set():
                writer.write(data)
                with contextlib.suppress(ConnectionError):
                    await writer.drain()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            if self.mode == "refuse":
                writer.transport.abort()
                return
            if self.mode == "blackhole":
                await asyncio.Event().wait()  # hold it open until cut or closed
            if self.mode == "partition":
                await self._healed.wait()  # accepted, held silently, never answered
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            self._writers.add(up_writer)
            flowing = self._clients[writer] = asyncio.Event()
            flowing.set()
            await asyncio.gather(
                _pipe(reader, up_writer, flowing, self._healed),
                _pipe(up_reader, writer, flowing, self._healed),
            )
        except OSError:
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            self._clients.pop(writer, None)
            writer.transport.abort()


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    flowing: asyncio.Event,
    healed: asyncio.Event,
) -> None:
    try:
        while data := await reader.read(65536):
            await flowing.wait()  # frozen: hold the bytes, for ever
            writer.write(data)
            await writer.drain()
    finally:
        try:
            await healed.wait()  # partitioned: the other side does not hear of a close
        finally:
            writer.transport.abort()
