"""A bounded queue drained in batches by one background task; a refused record never jams it.

The caller's path only enqueues (never awaits the database or Redis); the worker
writes batches and, when the store is down, keeps the batch and retries with backoff
so that an outage delays records instead of losing them. Only when the queue is full
(a long outage under load) are new items refused, and that is logged and counted.

A store that refuses a *record* (a NUL byte in text, a failed ``CHECK``, a key too
long: see :mod:`cti.write_errors` for which errors count) would refuse the same batch
for ever, and every later record would wait behind it. So a batch refused that way is
bisected: its first half is written alone, then halved again while it is refused,
until the refused record stands alone; that record goes to the dead letters
(:class:`DeadLetterSink`, the ``dead_letters`` table in the daemon) and the writer
moves on. Records keep their order. A write function may also report refusals itself
(it returns ``(index, error)`` pairs), as the timeline writer does after writing the
rest of its batch row by row.

If the dead letter cannot be stored either, it is kept in memory (at most
``max_held``, counted in :attr:`WriterStats.held`) and offered again later.

After the first item of a batch arrives the worker lingers briefly (20 ms by
default) so that a busy daemon writes a few large batches rather than many tiny
ones: per-batch overhead was a quarter of a route's CPU at saturation.

:class:`WriterStats` is a plain object, updated in place by the writer, that the
composition root hands to whoever reports (``/metrics``, ``/readyz``).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, Protocol, TypeVar

import structlog

from cti.backoff import Backoff
from cti.write_errors import is_permanent

T = TypeVar("T")
log = structlog.get_logger(__name__)

#: What a write function may return: the records of the batch it could not store
#: (their index in the batch, and why), having stored the others.
Refusals = Iterable[tuple[int, BaseException]]
WriteBatch = Callable[[Sequence[T]], Awaitable[Refusals | None]]


@dataclass(slots=True)
class WriterStats:
    """One writer's figures, as of now. Times are wall-clock seconds (``time.time()``)."""

    writer: str
    backlog: int = 0  # records accepted and not yet written (nor dead-lettered)
    oldest_unwritten_at: float | None = None  # when the oldest of those was submitted
    written: int = 0
    dead_lettered: int = 0  # stored in the dead letters
    held: int = 0  # refused records whose dead letter waits in memory
    retries: int = 0  # batch writes that failed (transient) and will be tried again
    dropped: int = 0  # lost: queue full, or no room left to hold a dead letter

    def oldest_age_s(self, now: float) -> float:
        """Seconds the oldest unwritten record has waited (0 with nothing waiting)."""
        at = self.oldest_unwritten_at
        return 0.0 if at is None else max(now - at, 0.0)

    def stuck_since(self, now: float, after_s: float) -> float | None:
        """When the oldest unwritten record arrived, if it has waited over ``after_s``."""
        at = self.oldest_unwritten_at
        return at if at is not None and now - at > after_s else None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record the store refused for good, and why."""

    writer: str
    call_id: str | None
    error_class: str
    error_message: str
    record: object
    at: datetime


class DeadLetterSink(Protocol):
    """Where refused records go; raises if it cannot store the letter."""

    async def put(self, letter: DeadLetter) -> None: ...


def call_id_of(record: object) -> str | None:
    """The record's call id, if it has one (an attribute or a mapping key ``call_id``)."""
    value = record.get("call_id") if isinstance(record, Mapping) else None
    if value is None:
        value = getattr(record, "call_id", None)
    return str(value) if value is not None else None


class BatchWriter(Generic[T]):
    def __init__(
        self,
        name: str,
        write_batch: WriteBatch[T],
        *,
        max_queue: int = 100_000,
        max_batch: int = 500,
        linger_s: float = 0.02,
        backoff: Backoff | None = None,
        dead_letters: DeadLetterSink | None = None,
        max_held: int = 1_000,
        permanent: Callable[[BaseException], bool] = is_permanent,
        clock: Callable[[], float] = time.time,
        linger: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.name = name
        self._write_batch = write_batch
        self._items: deque[tuple[T, float]] = deque()  # unwritten, in order, stamped
        self._arrived = asyncio.Event()
        self._max_queue = max_queue
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._linger = linger  # how the worker waits out linger_s (tests pace it by hand)
        self._backoff = backoff or Backoff(initial=0.2, cap=10.0)
        self._dead_letters = dead_letters
        self._held: deque[DeadLetter] = deque()
        self._max_held = max_held
        self._permanent = permanent
        self._clock = clock
        self._probe = max_batch  # batch size while isolating a refused record
        self._suspect = 0  # records at the head among which the refused one hides
        self.stats = WriterStats(name)

    @property
    def written(self) -> int:
        return self.stats.written

    @property
    def dropped(self) -> int:
        return self.stats.dropped

    @property
    def failures(self) -> int:
        """Batch writes that failed and were retried (:attr:`WriterStats.retries`)."""
        return self.stats.retries

    @property
    def backlog(self) -> int:
        return len(self._items)

    def submit(self, item: T) -> bool:
        """Enqueue without waiting. False (and logged) when the queue is full."""
        if len(self._items) >= self._max_queue:
            self.stats.dropped += 1
            log.error("writer queue full, record dropped", writer=self.name, dropped=self.dropped)
            return False
        at = self._clock()
        self._items.append((item, at))
        self.stats.backlog = len(self._items)
        if self.stats.oldest_unwritten_at is None:
            self.stats.oldest_unwritten_at = at
        self._arrived.set()
        return True

    def _changed(self) -> None:
        self.stats.backlog = len(self._items)
        self.stats.oldest_unwritten_at = self._items[0][1] if self._items else None

    async def run(self, stop: asyncio.Event) -> None:
        """Write until ``stop`` is set and the queue has been flushed (or cannot be)."""
        linger = True  # a batch started from an empty queue waits for company first
        while not (stop.is_set() and not self._items):
            if not self._items:
                await self._wait_for_items(stop)
                linger = True
                continue
            if linger and not stop.is_set() and len(self._items) < self._max_batch:
                await self._linger(self._linger_s)
            linger = False
            if await self._flush_once():
                if self._held:
                    await self._offer_held()
                linger = self._probe == self._max_batch  # not while isolating
                continue
            if stop.is_set():
                log.error(
                    "writer stopped with unwritten records",
                    writer=self.name,
                    backlog=self.backlog,
                    dead_letters_held=len(self._held),
                )
                return
            await self._backoff.wait(stop)
        if self._held:
            await self._offer_held()
        if self._held:
            log.error(
                "writer stopped with dead letters it could not store",
                writer=self.name,
                dead_letters_held=len(self._held),
            )

    async def _wait_for_items(self, stop: asyncio.Event) -> None:
        """Until an item arrives or ``stop``; offers the held dead letters meanwhile."""
        self._arrived.clear()
        arrived = asyncio.ensure_future(self._arrived.wait())
        stopped = asyncio.ensure_future(stop.wait())
        timeout = self._backoff.next_delay() if self._held else None
        try:
            await asyncio.wait(
                {arrived, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            arrived.cancel()
            stopped.cancel()
        if not self._items and self._held:
            await self._offer_held()

    async def _flush_once(self) -> bool:
        """Write the head of the queue. False: the store failed (transient), retry later."""
        size = min(self._probe, self._max_batch, len(self._items))
        batch = [item for item, _ in itertools.islice(self._items, size)]
        try:
            refusals = await self._write_batch(batch)
        except Exception as exc:
            if not self._permanent(exc):
                self.stats.retries += 1
                log.warning(
                    "batch write failed, will retry",
                    writer=self.name,
                    size=len(batch),
                    error=repr(exc),
                )
                return False
            if size > 1:  # isolate: try the first half alone
                if self._suspect <= 0:  # logged once per isolation, not per halving
                    log.info(
                        "batch refused, isolating the refused record",
                        writer=self.name,
                        size=size,
                        error=repr(exc),
                    )
                self._probe, self._suspect = size // 2, size
                return True
            await self._dead_letter(batch[0], exc)
            self._take(1, written=0)
            self._probe, self._suspect = self._max_batch, 0
            return True
        refused = dict(refusals or ())
        for index, error in sorted(refused.items()):
            await self._dead_letter(batch[index], error)
        self._take(size, written=size - len(refused))
        self._backoff.reset()
        self._suspect -= size
        if self._suspect <= 0:  # past the refused range (it held no lone culprit)
            self._probe = self._max_batch
        return True

    def _take(self, count: int, *, written: int) -> None:
        for _ in range(count):
            self._items.popleft()
        self.stats.written += written
        self._changed()

    async def _dead_letter(self, record: T, exc: BaseException) -> None:
        """Set ``record`` aside: logged once here, stored, or held if it cannot be."""
        letter = DeadLetter(
            writer=self.name,
            call_id=call_id_of(record),
            error_class=type(exc).__name__,
            error_message=str(exc),
            record=record,
            at=datetime.now(UTC),
        )
        log.error(
            "record refused by the store, set aside in the dead letters",
            writer=self.name,
            call_id=letter.call_id,
            error=letter.error_class,
            message=letter.error_message[:500],
        )
        if self._dead_letters is None:
            self.stats.dropped += 1
            log.error("no dead-letter store: record lost", writer=self.name, record=repr(record))
            return
        self._held.append(letter)
        await self._offer_held()
        if len(self._held) > self._max_held:
            lost = self._held.popleft()
            self.stats.dropped += 1
            log.error(
                "too many dead letters held in memory: the oldest is lost",
                writer=self.name,
                call_id=lost.call_id,
                record=repr(lost.record)[:2000],
            )
        self.stats.held = len(self._held)

    async def _offer_held(self) -> None:
        """Store the held dead letters, oldest first, until the sink fails."""
        assert self._dead_letters is not None
        while self._held:
            letter = self._held[0]
            try:
                await self._dead_letters.put(letter)
            except Exception as exc:
                log.warning(
                    "dead letter not stored, kept in memory",
                    writer=self.name,
                    call_id=letter.call_id,
                    held=len(self._held),
                    error=repr(exc),
                )
                break
            self._held.popleft()
            self.stats.dead_lettered += 1
        self.stats.held = len(self._held)
