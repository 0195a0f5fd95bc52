"""Everything a service opened or started, and the one order in which it stops.

Shutdown goes from the outside in, so that nothing is dropped on the way:

1. **entrances**: stop accepting FastAGI (calls in flight finish), then close the
   sidebar's HTTP API (its WebSockets with 1001, so the sidebars reconnect to another
   instance): no new work comes in;
2. **writers** drain together within a grace period: the records of the calls just
   routed, the call events (published while this instance still holds the AMI lease,
   which is released after), the timeline;
3. **background** tasks (the routing plan's watcher, the pool warmer) are told to stop
   and cut off after a moment;
4. **resources** close in the reverse order of opening: the AMI client logs off, then
   the Redis client and the PostgreSQL pool close.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, TypeVar

import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")
#: A task's body: runs until the event is set (then finishes its work and returns).
Run = Callable[[asyncio.Event], Coroutine[Any, Any, None]]

WRITER_GRACE_S = 10.0
BACKGROUND_GRACE_S = 2.0


class _Tasks:
    """Tasks stopped together by one event."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, name: str, run: Run) -> None:
        self.tasks.append(asyncio.create_task(run(self.stop), name=name))

    async def close(self, grace_s: float) -> None:
        self.stop.set()
        await finish(self.tasks, grace_s)


class Supervisor:
    """Owns a service's resources, servers and tasks; :meth:`close` stops them all."""

    def __init__(self) -> None:
        self._resources = AsyncExitStack()
        self._entrances = AsyncExitStack()
        self._writers = _Tasks()
        self._background = _Tasks()

    async def resource(self, opened: AbstractAsyncContextManager[T]) -> T:
        """Open a connection (pool, client); closed last, in reverse order."""
        return await self._resources.enter_async_context(opened)

    async def entrance(self, listening: AbstractAsyncContextManager[T]) -> T:
        """Start a server; closed first, the last one started first."""
        return await self._entrances.enter_async_context(listening)

    def writer(self, name: str, run: Run) -> None:
        """A task whose queue must be drained at shutdown (within the writers' grace)."""
        self._writers.start(name, run)

    def background(self, name: str, run: Run) -> None:
        """A task that only needs telling to stop."""
        self._background.start(name, run)

    async def close(
        self, writer_grace_s: float = WRITER_GRACE_S, background_grace_s: float = BACKGROUND_GRACE_S
    ) -> None:
        """Stop everything in the order of the module docstring."""
        try:
            await self._entrances.aclose()
        finally:
            try:
                await self._writers.close(writer_grace_s)
                await self._background.close(background_grace_s)
            finally:
                await self._resources.aclose()


async def finish(tasks: Sequence[asyncio.Task[None]], grace_s: float) -> None:
    """Wait up to ``grace_s`` for ``tasks`` (already told to stop), then cancel the rest;
    a task that failed is logged, not raised: shutdown goes on."""
    if not tasks:
        return
    _done, pending = await asyncio.wait(tasks, timeout=grace_s)
    for task in pending:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for task, result in zip(tasks, results, strict=True):
        if isinstance(result, Exception):
            log.error("task failed", task=task.get_name(), error=repr(result))


async def run_until_signalled(
    stop: asyncio.Event, run: Callable[[], Coroutine[Any, Any, None]]
) -> None:
    """``run()`` until it returns; SIGTERM or SIGINT set ``stop`` (a clean shutdown)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run()
