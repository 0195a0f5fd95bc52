"""BatchWriter: records wait out a failing store, in order, and are flushed at stop."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from cti.backoff import Backoff
from cti.batch_writer import BatchWriter, DeadLetter
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
    """The linger is paced by the test: the burst arrives while the writer lingers,
    however slow this machine is."""
    lingering, linger_over = asyncio.Event(), asyncio.Event()

    async def linger(seconds: float) -> None:
        assert seconds == 0.1
        lingering.set()
        await linger_over.wait()

    store, stop = Store(), asyncio.Event()
    writer = _writer(store, linger_s=0.1, linger=linger)
    task = asyncio.create_task(writer.run(stop))
    writer.submit(0)
    await lingering.wait()  # the writer has the first item and is lingering
    for i in range(1, 50):
        writer.submit(i)
    linger_over.set()
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


# -- a record the store refuses for good: isolated, set aside, the others land ----------
class Refusing(Store):
    """A store that refuses, for good, any batch holding a negative number (as
    PostgreSQL refuses a whole COPY for one bad row)."""

    async def write(self, batch: Sequence[int]) -> None:
        self.attempts += 1
        if self.down:
            raise ConnectionError("store is down")
        if any(i < 0 for i in batch):
            raise ValueError("negative numbers are refused")
        self.batches.append(list(batch))


class Letters:
    """Dead letters in memory; raises while ``down`` (the dead-letter store is away)."""

    def __init__(self) -> None:
        self.down = False
        self.letters: list[DeadLetter] = []

    async def put(self, letter: DeadLetter) -> None:
        if self.down:
            raise ConnectionError("dead-letter store is down")
        self.letters.append(letter)

    @property
    def records(self) -> list[object]:
        return [letter.record for letter in self.letters]


def _refusing_writer(store: Store, letters: Letters | None, **options) -> BatchWriter[int]:
    return BatchWriter(
        "test",
        store.write,
        backoff=Backoff(initial=0.01, cap=0.02),
        dead_letters=letters,
        linger_s=0,
        **options,
    )


async def test_a_refused_record_is_isolated_and_the_others_land_in_order():
    store, letters, stop = Refusing(), Letters(), asyncio.Event()
    writer = _refusing_writer(store, letters, max_batch=64)
    items = [*range(40), -1, *range(40, 60), -2, *range(60, 100)]
    for i in items:
        writer.submit(i)
    task = asyncio.create_task(writer.run(stop))
    await until(lambda: writer.backlog == 0, every_s=0.005)
    assert store.items == list(range(100))
    assert letters.records == [-1, -2]
    assert (letters.letters[0].writer, letters.letters[0].error_class) == ("test", "ValueError")
    s = writer.stats
    assert (s.written, s.dead_lettered, s.held, s.retries, s.dropped) == (100, 2, 0, 0, 0)
    assert store.attempts < 40  # bisected, not written one by one
    stop.set()
    await task


async def test_a_batch_refused_as_a_whole_is_written_in_parts_then_in_full_batches_again():
    """A batch refused although no record alone is (the refusal came from the mix): its
    parts land, and the writer goes back to full batches afterwards."""
    store, letters, stop = Store(), Letters(), asyncio.Event()
    original = store.write

    async def refuse_big_batches(batch: Sequence[int]) -> None:
        if len(batch) > 8 and batch[0] < 32:
            raise ValueError("too much at once")
        await original(batch)

    writer = BatchWriter("test", refuse_big_batches, dead_letters=letters, linger_s=0, max_batch=32)
    for i in range(96):
        writer.submit(i)
    task = asyncio.create_task(writer.run(stop))
    await until(lambda: writer.backlog == 0, every_s=0.005)
    assert store.items == list(range(96)) and letters.letters == []
    assert [len(b) for b in store.batches][-2:] == [32, 32]
    stop.set()
    await task


async def test_a_dead_letter_the_sink_cannot_take_is_held_then_stored():
    store, letters, stop = Refusing(), Letters(), asyncio.Event()
    letters.down = True
    writer = _refusing_writer(store, letters)
    for i in (1, -1, 2):
        writer.submit(i)
    task = asyncio.create_task(writer.run(stop))
    await until(lambda: writer.backlog == 0, every_s=0.005)
    assert store.items == [1, 2]
    assert (writer.stats.held, writer.stats.dead_lettered) == (1, 0)
    letters.down = False
    await until(lambda: writer.stats.held == 0, every_s=0.005)  # offered again while idle
    assert letters.records == [-1] and writer.stats.dead_lettered == 1
    stop.set()
    await task


async def test_held_dead_letters_are_bounded_and_the_overflow_is_counted_as_dropped():
    store, letters, stop = Refusing(), Letters(), asyncio.Event()
    letters.down = True
    writer = _refusing_writer(store, letters, max_held=2)
    for i in (-1, -2, -3, 4):
        writer.submit(i)
    task = asyncio.create_task(writer.run(stop))
    await until(lambda: writer.backlog == 0, every_s=0.005)
    assert store.items == [4]
    assert (writer.stats.held, writer.stats.dropped) == (2, 1)
    letters.down = False
    await until(lambda: writer.stats.held == 0, every_s=0.005)
    assert letters.records == [-2, -3]  # the oldest went first
    stop.set()
    await task


async def test_stats_say_how_much_waits_and_since_when():
    store, stop = Store(), asyncio.Event()
    store.down = True
    now = [1000.0]
    writer = BatchWriter(
        "test", store.write, backoff=Backoff(0.01, 0.02), linger_s=0, clock=lambda: now[0]
    )
    assert writer.stats.oldest_unwritten_at is None and writer.stats.stuck_since(5000, 60) is None
    writer.submit(1)
    now[0] = 1010.0
    writer.submit(2)
    task = await _run_until(writer, stop, lambda: store.attempts >= 2)
    s = writer.stats
    assert (s.backlog, s.oldest_unwritten_at, s.written) == (2, 1000.0, 0)
    assert s.retries >= 2 and s.oldest_age_s(1030.0) == 30.0
    assert s.stuck_since(1030.0, 60) is None and s.stuck_since(1100.0, 60) == 1000.0
    store.down = False
    await until(lambda: writer.backlog == 0, every_s=0.005)
    assert (s.backlog, s.oldest_unwritten_at, s.written) == (0, None, 2)
    stop.set()
    await task
