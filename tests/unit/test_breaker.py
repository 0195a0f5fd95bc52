"""The lookup's circuit breaker: its state table on an injected clock, no sockets."""

from __future__ import annotations

import asyncio
import random

import pytest

from cti.breaker import BreakerState, CircuitBreaker
from cti.lookup import BREAKER_OPEN, TIMEOUT, BreakerProbe, CustomerLookup
from cti.routing.model import Customer

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **kwargs: object) -> tuple[CircuitBreaker, list[tuple[str, str]]]:
    made = CircuitBreaker(clock=clock, rng=random.Random(7), **kwargs)  # type: ignore[arg-type]
    moves: list[tuple[str, str]] = []
    made.listen(lambda old, new: moves.append((old.value, new.value)))
    return made, moves


def test_opens_after_threshold_consecutive_failures_only():
    clock = Clock()
    b, moves = breaker(clock, threshold=3)
    b.record_failure()
    b.record_failure()
    b.record_success()  # the run is broken: count again
    b.record_failure()
    b.record_failure()
    assert b.state is CLOSED and b.allow()
    b.record_failure()
    assert b.state is OPEN and not b.allow()
    assert moves == [("closed", "open")]


def test_late_results_while_open_change_nothing():
    clock = Clock()
    b, moves = breaker(clock, threshold=1)
    b.record_failure()
    b.record_failure()  # a lookup begun before the opening, failing after it
    b.record_success()  # ... or answering: the probe decides, not a straggler
    assert b.state is OPEN
    assert moves == [("closed", "open")]


def test_probe_is_due_after_the_jittered_interval():
    clock = Clock()
    b, _ = breaker(clock, threshold=1, probe_interval_s=1.5, jitter=0.2)
    b.record_failure()
    wait = b.seconds_to_probe()
    assert 1.2 <= wait <= 1.8
    clock.now += wait - 0.01
    assert not b.probe_due()
    clock.now += 0.01
    assert b.probe_due()


def test_jitter_spreads_instances():
    clock = Clock()
    waits = set()
    for seed in range(20):
        b = CircuitBreaker(threshold=1, clock=clock, rng=random.Random(seed))
        b.record_failure()
        waits.add(round(b.seconds_to_probe(), 3))
    assert len(waits) > 10


@pytest.mark.parametrize(
    ("probe_answers", "state", "moves"),
    [
        (True, CLOSED, [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]),
        (False, OPEN, [("closed", "open"), ("open", "half-open"), ("half-open", "open")]),
    ],
)
def test_state_table(probe_answers, state, moves):
    clock = Clock()
    b, seen = breaker(clock, threshold=1)
    b.record_failure()
    clock.now += 10
    b.begin_probe()
    assert b.state is HALF_OPEN and not b.allow()  # calls still fail open meanwhile
    b.probe_succeeded() if probe_answers else b.probe_failed()
    assert b.state is state
    assert seen == moves
    assert b.allow() is (state is CLOSED)


def test_a_failed_probe_reschedules_and_a_closed_breaker_counts_from_zero():
    clock = Clock()
    b, _ = breaker(clock, threshold=2)
    b.record_failure()
    b.record_failure()
    clock.now += 10
    b.begin_probe()
    b.probe_failed()
    assert not b.probe_due() and b.seconds_to_probe() > 1
    clock.now += 10
    b.begin_probe()
    b.probe_succeeded()
    b.record_failure()
    assert b.state is CLOSED  # one failure, not three


def test_no_probe_unless_open():
    b, _ = breaker(Clock())
    with pytest.raises(RuntimeError):
        b.begin_probe()


# --- the lookup behind it (asyncio, no sockets) -------------------------------------------


async def test_open_breaker_fails_open_without_a_lookup():
    asked = 0

    async def find(e164: str | None, account: str | None) -> Customer | None:
        nonlocal asked
        asked += 1
        return None

    b = CircuitBreaker(threshold=1)
    b.record_failure()
    lookup = CustomerLookup(find, budget_s=1, breaker=b)
    assert await lookup.find("+12120000002", None, "c1") == (None, BREAKER_OPEN)
    assert asked == 0


async def test_deadline_answers_while_the_lookup_is_still_cleaning_up():
    """The cut-off lookup's cleanup (here: ignoring its cancellation for a while) runs
    in its own task; the caller has its answer at the deadline."""
    cleaning = asyncio.Event()
    release = asyncio.Event()

    async def find(e164: str | None, account: str | None) -> Customer | None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaning.set()
            await release.wait()  # e.g. a pool waiting on a cancel request
        return None

    b = CircuitBreaker(threshold=2)
    lookup = CustomerLookup(find, budget_s=0.01, breaker=b)
    assert await lookup.find("+12120000002", None, "c1") == (None, TIMEOUT)
    await cleaning.wait()
    assert lookup.inflight == 1 and b.failures == 1
    release.set()
    await lookup.aclose()
    assert lookup.inflight == 0


async def test_probe_loop_closes_the_breaker_when_the_probe_answers():
    answers = [False, True]

    async def probe() -> None:
        if not answers.pop(0):
            raise OSError("unreachable")

    b = CircuitBreaker(threshold=1, probe_interval_s=0.01)
    prober = BreakerProbe(b, probe, timeout_s=1)
    stop = asyncio.Event()
    running = asyncio.create_task(prober.run(stop))
    closed = asyncio.Event()
    b.listen(lambda _old, new: closed.set() if new is CLOSED else None)
    b.record_failure()
    async with asyncio.timeout(5):
        await closed.wait()
    assert prober.probes == 2
    stop.set()
    await running


async def test_probe_that_hangs_is_cut_off_at_its_timeout():
    async def probe() -> None:
        await asyncio.Event().wait()

    b = CircuitBreaker(threshold=1)
    b.record_failure()
    prober = BreakerProbe(b, probe, timeout_s=0.01)
    assert await prober.probe_once() is False
    assert b.state is OPEN
