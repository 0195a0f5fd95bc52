"""The one shutdown order of cti/app's supervisor: from the outside in."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from cti.app.supervisor import Run, Supervisor


async def test_everything_stops_in_one_order_from_the_outside_in() -> None:
    done: list[str] = []

    @contextlib.asynccontextmanager
    async def opened(name: str) -> AsyncIterator[str]:
        yield name
        done.append(name)

    def task(name: str) -> Run:
        async def run(stop: asyncio.Event) -> None:
            await stop.wait()
            done.append(name)

        return run

    supervisor = Supervisor()
    assert await supervisor.resource(opened("pool closed")) == "pool closed"
    await supervisor.resource(opened("ami logged off"))
    supervisor.writer("writer", task("writers drained"))
    supervisor.background("watcher", task("background stopped"))
    await supervisor.entrance(opened("websockets closed"))
    await supervisor.entrance(opened("agi closed"))
    await supervisor.close()
    assert done == [
        "agi closed",
        "websockets closed",
        "writers drained",
        "background stopped",
        "ami logged off",
        "pool closed",
    ]


async def test_a_task_that_does_not_stop_is_cut_off_and_the_rest_still_closes() -> None:
    closed: list[str] = []

    @contextlib.asynccontextmanager
    async def pool() -> AsyncIterator[None]:
        yield
        closed.append("pool")

    async def stuck(_stop: asyncio.Event) -> None:
        await asyncio.Event().wait()

    async def failing(_stop: asyncio.Event) -> None:
        raise RuntimeError("a bug")

    supervisor = Supervisor()
    await supervisor.resource(pool())
    supervisor.writer("stuck", stuck)
    supervisor.background("failing", failing)
    await asyncio.wait_for(supervisor.close(writer_grace_s=0.01, background_grace_s=0.01), 5)
    assert closed == ["pool"]
