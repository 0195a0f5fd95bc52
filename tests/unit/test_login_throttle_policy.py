"""The login throttle's policy, in plain Python with a clock we move by hand."""

from __future__ import annotations

import pytest

from cti.screenpop.throttle import Counter, ThrottlePolicy

POLICY = ThrottlePolicy(free_failures=3, base_s=1.0, cap_s=10.0)


def test_a_few_failures_are_free_then_the_lock_doubles_up_to_the_cap() -> None:
    delays = [POLICY.delay_after(n) for n in range(1, 10)]
    assert delays == [0, 0, 1, 2, 4, 8, 10, 10, 10]


def test_the_schedule_stops_at_the_first_delay_at_the_cap() -> None:
    assert POLICY.schedule_ms() == [0, 0, 1000, 2000, 4000, 8000, 10000]
    tiny_steps = ThrottlePolicy(free_failures=0, base_s=1e-12, cap_s=7 * 86400)
    assert len(tiny_steps.schedule_ms()) < 80  # bounded even for an absurd base
    with pytest.raises(ValueError):
        ThrottlePolicy(cap_s=1e300)


def test_a_counter_locks_after_the_free_failures_and_unlocks_with_time() -> None:
    counter, now = Counter(), 1000.0
    for _ in range(2):
        counter.fail(POLICY, now)
        assert counter.retry_after(now) == 0
    counter.fail(POLICY, now)  # the 3rd: locked 1 s
    assert counter.retry_after(now) == 1.0
    assert counter.retry_after(now + 0.5) == 0.5
    assert counter.retry_after(now + 1.0) == 0
    counter.fail(POLICY, now + 1.0)  # the 4th: 2 s
    assert counter.retry_after(now + 1.0) == 2.0
