"""BatchWriter: records wait out a failing store, in order, and are flushed at stop."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from cti.backoff import Backoff
from cti.batch_writer import BatchWriter
from tests.waiting import until


class Store:
    """A store that fails while ``down`` and records what it was given."""

    def __init__(self) -> None:
        self.down = False
        self.batches: list[list[int]] = []
        self.attempts = 0

    async def write(self, batch: Sequence[int]) -> None:
        self.attempts += 1
        if self.down:
            raise ConnectionError("store is down")
        self.batches.append(list(batch))

    @property
    def items(self) -> list[int]:
        return [i for batch in self.batches for i in batch]


def _writer(store: Store, **options) -> BatchWriter[int]:
    return BatchWriter("test", store.write, backoff=Backoff(initial=0.01, cap=0.02), **options)


async def _run_until(writer: BatchWriter[int], stop: asyncio.Event, condition) -> asyncio.Task:
    task = asyncio.create_task(writer.run(stop))
    await until(condition, every_s=0.005)
    return task


async def test_items_written_in_order_in_batches():
    store, stop = Store(), asyncio.Event()
    writer = _writer(store, max_batch=10, linger_s=0.05)
    for i in range(25):
        writer.submit(i)
    task = await _run_until(writer, stop, lambda: len(store.items) == 25)
    assert store.items == list(range(25))
    assert [len(b) for b in store.batches] == [10, 10, 5]
    stop.set()
    await task


async def test_lingering_gathers_a_burst_into_one_batch():
    store, stop = Store(), asyncio.Event()
    writer = _writer(store, linger_s=0.1)
    task = asyncio.create_task(writer.run(stop))
    writer.submit(0)
    await asyncio.sleep(0.02)  # the writer has the first item and is lingering
    for i in range(1, 50):
        writer.submit(i)
    await until(lambda: len(store.items) == 50, every_s=0.005)
    assert store.batches == [list(range(50))]
    stop.set()
    await task


async def test_a_failing_store_delays_records_but_loses_none():
    store, stop = Store(), asyncio.Event()
    store.down = True
    writer = _writer(store, linger_s=0)
    for i in range(5):
        writer.submit(i)
    task = await _run_until(writer, stop, lambda: store.attempts >= 3)
    assert store.items == [] and writer.backlog == 5 and writer.failures >= 3
    writer.submit(5)
    store.down = False
    await until(lambda: len(store.items) == 6, every_s=0.005)
    assert store.items == list(range(6))
    assert writer.written == 6
    stop.set()
    await task


async def test_stop_flushes_what_is_queued():
    store, stop = Store(), asyncio.Event()
    writer = _writer(store, linger_s=0)
    task = asyncio.create_task(writer.run(stop))
    for i in range(3):
        writer.submit(i)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert store.items == [0, 1, 2]


async def test_stop_while_the_store_is_down_ends_and_reports_the_backlog():
    store, stop = Store(), asyncio.Event()
    store.down = True
    writer = _writer(store, linger_s=0)
    writer.submit(1)
    task = await _run_until(writer, stop, lambda: store.attempts >= 1)
    stop.set()
    await asyncio.wait_for(task, 5)  # does not hang on a dead store
    assert writer.backlog == 1


async def test_a_full_queue_refuses_and_counts():
    store = Store()
    writer = _writer(store, max_queue=2)
    assert writer.submit(1) and writer.submit(2)
    assert not writer.submit(3)
    assert writer.dropped == 1 and writer.backlog == 2
