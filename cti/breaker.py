"""A circuit breaker for the customer lookup: when the database is away, stop asking.

Why: with PostgreSQL unreachable every lookup costs the whole lookup budget (150 ms of
the caller's 200) and a pool connection, and after a few failures in a row the answer
is known in advance. The breaker then fails calls open at once, without a lookup, and
one probe at a time (a cheap query with a short timeout, every ~1.5 s, jittered so that
instances sharing an outage do not probe in lock-step) finds out when the database
answers again.

    closed ──N consecutive failures──▶ open ──probe due──▶ half-open (probe in flight)
      ▲                                 ▲                        │
      └────────── probe answered ───────┼────────────────────────┤
                                        └────── probe failed ────┘

Lookups run only when closed. The state machine is plain Python with an injected clock
(tested without sockets); :class:`BreakerProbe` is the one async part and does no I/O
of its own: it is handed the probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from enum import Enum

import structlog

log = structlog.get_logger(__name__)


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


Listener = Callable[[BreakerState, BreakerState], None]


class CircuitBreaker:
    def __init__(
        self,
        *,
        threshold: int = 5,
        probe_interval_s: float = 1.5,
        jitter: float = 0.3,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self.threshold = threshold
        self.probe_interval_s = probe_interval_s
        self.jitter = jitter
        self._clock = clock
        self._random = rng or random.Random()
        self.state = BreakerState.CLOSED
        self.failures = 0  # consecutive, while closed
        self._probe_at = 0.0
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        """``listener(old, new)`` on every transition; must be quick and must not raise."""
        self._listeners.append(listener)

    def allow(self) -> bool:
        """May a lookup be attempted? Only while closed: open and half-open fail open."""
        return self.state is BreakerState.CLOSED

    def record_success(self) -> None:
        """A lookup answered. While open it proves nothing new: the probe decides."""
        if self.state is BreakerState.CLOSED:
            self.failures = 0

    def record_failure(self) -> None:
        """A lookup failed or timed out. Failures of lookups begun before the breaker
        opened, arriving after, are not counted twice."""
        if self.state is not BreakerState.CLOSED:
            return
        self.failures += 1
        if self.failures >= self.threshold:
            self._open()

    def seconds_to_probe(self) -> float:
        """How long until a probe is due (0: now); meaningful while open."""
        return max(0.0, self._probe_at - self._clock())

    def probe_due(self) -> bool:
        return self.state is BreakerState.OPEN and self._clock() >= self._probe_at

    def begin_probe(self) -> None:
        if self.state is not BreakerState.OPEN:
            raise RuntimeError(f"no probe while {self.state.value}")
        self._move(BreakerState.HALF_OPEN)

    def probe_succeeded(self) -> None:
        self.failures = 0
        self._move(BreakerState.CLOSED)

    def probe_failed(self) -> None:
        self._open()

    def _open(self) -> None:
        spread = self.probe_interval_s * self.jitter
        self._probe_at = (
            self._clock() + self.probe_interval_s + self._random.uniform(-spread, spread)
        )
        self._move(BreakerState.OPEN)

    def _move(self, new: BreakerState) -> None:
        old, self.state = self.state, new
        if old is new:
            return
        for listener in self._listeners:
            listener(old, new)


def log_transitions(breaker: CircuitBreaker) -> None:
    """One log line per transition (not per call, not per failed probe)."""

    def changed(old: BreakerState, new: BreakerState) -> None:
        if new is BreakerState.OPEN and old is BreakerState.CLOSED:
            log.warning(
                "customer lookup breaker open; calls fail open without a lookup",
                failures=breaker.failures,
            )
        elif new is BreakerState.CLOSED:
            log.info("customer lookup breaker closed; lookups resume")

    breaker.listen(changed)


class BreakerProbe:
    """While the breaker is open, run ``probe`` when due; its answer closes the breaker.

    ``probe`` is cut off at ``timeout_s`` by a task of its own that is left to finish
    (the probe's cleanup must not delay the next one either).
    """

    def __init__(
        self,
        breaker: CircuitBreaker,
        probe: Callable[[], Awaitable[object]],
        *,
        timeout_s: float = 0.5,
    ) -> None:
        self._breaker = breaker
        self._probe = probe
        self._timeout_s = timeout_s
        self._opened = asyncio.Event()
        self._inflight: set[asyncio.Task[object]] = set()
        self.probes = 0
        breaker.listen(self._changed)
        if breaker.state is BreakerState.OPEN:
            self._opened.set()

    def _changed(self, _old: BreakerState, new: BreakerState) -> None:
        if new is BreakerState.OPEN:
            self._opened.set()

    async def run(self, stop: asyncio.Event) -> None:
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                if self._breaker.state is not BreakerState.OPEN:
                    self._opened.clear()
                    opened = asyncio.ensure_future(self._opened.wait())
                    await asyncio.wait({opened, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    opened.cancel()
                    continue
                delay = self._breaker.seconds_to_probe()
                if delay > 0:
                    await asyncio.wait({stopping}, timeout=delay)
                    continue
                await self.probe_once()
        finally:
            stopping.cancel()
            for task in list(self._inflight):
                task.cancel()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    await asyncio.gather(*self._inflight, return_exceptions=True)

    async def probe_once(self) -> bool:
        self._breaker.begin_probe()
        self.probes += 1
        task: asyncio.Task[object] = asyncio.ensure_future(self._probe())
        self._inflight.add(task)
        task.add_done_callback(_retrieve(self._inflight))
        done, _ = await asyncio.wait({task}, timeout=self._timeout_s)
        if done and not task.cancelled() and task.exception() is None:
            self._breaker.probe_succeeded()
            return True
        task.cancel()  # its cleanup runs on in its own task
        self._breaker.probe_failed()
        return False


def _retrieve(owner: set[asyncio.Task[object]]) -> Callable[[asyncio.Task[object]], None]:
    """Done callback: forget the task and read its outcome (no 'never retrieved')."""

    def done(task: asyncio.Task[object]) -> None:
        owner.discard(task)
        if not task.cancelled():
            task.exception()

    return done
