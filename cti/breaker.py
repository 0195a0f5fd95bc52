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

Lookups run only when closed. Plain Python with an injected clock (the pure core: tested
without sockets); the probe that drives it is :class:`cti.lookup.BreakerProbe`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from enum import Enum


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
