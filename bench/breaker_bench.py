"""Fail-open latency with the lookup breaker open, against a lookup answered at once.

    .venv/bin/python -m bench.breaker_bench            # about 5 s
    .venv/bin/python -m bench.breaker_bench --calls 20000 --rounds 5

Why: with the breaker open a call must fail open at once, "well under a millisecond",
instead of spending the lookup budget (150 ms) per call. What is timed is
:meth:`cti.router.Router.route` in-process (the decision the daemon records as
``decision_us``: normalisation, the lookup step, the rules, handing the records to
the writers), no sockets and no stores, so that the lookup step is what differs:

* **baseline**: breaker closed, the lookup an in-memory coroutine that answers at once
  (the floor of any real lookup: the task the lookup runs in, the wait on it);
* **breaker open**: the lookup is not attempted (``fail_open_reason=breaker-open``).

Rounds alternate baseline / open so that a drift of the shared machine hits both; the
ratio open / baseline is the figure to compare between machines. The partition itself
(decision times while PostgreSQL is partitioned) is measured by
tests/integration/test_partition.py, which prints its max / p50 / p99.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from typing import Any

from cti.breaker import CircuitBreaker
from cti.logs import configure_logging
from cti.router import Router, RouteRequest
from cti.routing.model import Customer
from cti.routing.table import RoutingTable

CUSTOMER = Customer(2, "A0000002", "Bench Customer", "gold", "active", "en")


class _Discard:
    def submit(self, item: Any) -> bool:
        return True


async def _find(e164: str | None, account: str | None) -> Customer | None:
    return CUSTOMER


def _router(breaker: CircuitBreaker) -> Router:
    return Router(
        table=lambda: RoutingTable(loaded=True),
        find_customer=_find,
        default_queue="default",
        region="US",
        lookup_budget_s=0.15,
        interactions=_Discard(),
        call_data=_Discard(),
        breaker=breaker,
    )


async def _phase(router: Router, calls: int) -> list[float]:
    request = RouteRequest("PJSIP/trunk-00000001", "1795407778.1", "2120000002", "5550100")
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        await router.route(request)
        times.append((time.perf_counter() - started) * 1e6)
    return times


def _row(name: str, us: Sequence[float]) -> str:
    ordered = sorted(us)
    p99 = ordered[int(len(ordered) * 0.99)]
    return f"{name:<14} {statistics.median(ordered):>9.1f} {p99:>9.1f} {ordered[-1]:>9.1f}"


async def main(calls: int, rounds: int) -> None:
    configure_logging("console", "warning")
    closed = CircuitBreaker()
    opened = CircuitBreaker(threshold=1)
    opened.record_failure()
    baseline, broken = _router(closed), _router(opened)
    await _phase(baseline, 500)  # warm-up
    await _phase(broken, 500)
    base_us: list[float] = []
    open_us: list[float] = []
    for _ in range(rounds):
        base_us += await _phase(baseline, calls)
        open_us += await _phase(broken, calls)
    assert broken.failed_open == broken.routed and baseline.failed_open == 0
    print(f"{rounds} rounds x {calls} calls; Router.route() in microseconds")
    print(f"{'':<14} {'p50':>9} {'p99':>9} {'max':>9}")
    print(_row("baseline", base_us))
    print(_row("breaker open", open_us))
    ratio = statistics.median(open_us) / statistics.median(base_us)
    print(f"p50 ratio open / baseline: {ratio:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=5000, help="calls per phase")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds))
