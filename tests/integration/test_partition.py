"""PostgreSQL partitioned away mid-traffic: every call is still routed inside the budget.

A partition is the fault that tells neither side: the warm connections go silent both
ways, new connections are accepted and never answered, nothing is reset. The black hole
of ``test_fail_open`` cuts the warm connections, which is kinder: asyncpg notices. Here
a lookup cut off at its deadline used to make the caller wait for asyncpg's cancel
request (a new connection, held by the partition): the whole outage. Calls arrive at
~30/s over real FastAGI sockets and are timed by the fake Asterisk, answer included.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from tests.fakes.asterisk_agi import AgiCallResult, agi_call
from tests.fakes.tcp_proxy import TcpProxy
from tests.integration.conftest import RunningDaemon, start_daemon
from tests.waiting import until

#: The budget asserted. Raised from the default 200 ms so that a loaded 2-core CI
#: machine stays honest; the partition lasts 10 s, and the point is "not 10 s".
BUDGET_MS = 1000
PARTITION_S = 10.0
RATE = 30  # calls per second


@pytest.fixture
async def pg_proxy(seeded):
    proxy = await TcpProxy("127.0.0.1", 5432).start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def daemon_via_pg_proxy(config, pg_proxy, redis_client):
    scheme, rest = config.database_url.split("://", 1)
    userinfo, path = rest.split("@", 1)[0], rest.split("/", 1)[1]
    url = f"{scheme}://{userinfo + '@' if '@' in rest else ''}127.0.0.1:{pg_proxy.port}/{path}"
    config = dataclasses.replace(config, database_url=url, route_budget_ms=BUDGET_MS)
    running = await start_daemon(config)
    await until(lambda: running.daemon.pool.get_size() >= 10)  # warm, as in production
    yield running
    await running.daemon.shutdown(writer_grace_s=2)


async def _timed(running: RunningDaemon, n: int) -> tuple[AgiCallResult, float]:
    started = time.perf_counter()
    result = await agi_call(
        "127.0.0.1",
        running.port,
        callerid="2120000002",
        dnid="5550100",
        uniqueid=f"1795407778.{n}",
        within_s=60,  # measured, not enforced here: today's code waited the outage
    )
    return result, time.perf_counter() - started


def _breaker_gauge(running: RunningDaemon) -> dict[str, float]:
    lines = running.daemon.metrics.render().decode().splitlines()
    prefix = "cti_lookup_breaker_state{state="
    return {
        line[len(prefix) :].split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith(prefix)
    }


async def test_partition_routes_every_call_in_budget_then_lookups_resume(
    daemon_via_pg_proxy, pg_proxy, db
):
    running = daemon_via_pg_proxy
    before, _ = await _timed(running, 0)
    assert before.var("CTI_RULE") == "gold"

    pg_proxy.partition()
    started = time.perf_counter()
    calls: list[asyncio.Task[tuple[AgiCallResult, float]]] = []
    gauge_mid_outage: dict[str, float] = {}
    n = 0
    while (due := n / RATE) < PARTITION_S:
        await asyncio.sleep(max(0.0, started + due - time.perf_counter()))
        n += 1
        calls.append(asyncio.create_task(_timed(running, n)))
        if n == RATE * 5:
            gauge_mid_outage = _breaker_gauge(running)
    pg_proxy.heal()
    outcomes = await asyncio.gather(*calls)

    elapsed = sorted(e for _, e in outcomes)
    slowest_ms = elapsed[-1] * 1000
    print(
        f"\n{len(outcomes)} calls during a {PARTITION_S:.0f} s partition: "
        f"max {slowest_ms:.1f} ms, p50 {elapsed[len(elapsed) // 2] * 1000:.2f} ms, "
        f"p99 {elapsed[int(len(elapsed) * 0.99)] * 1000:.2f} ms (budget {BUDGET_MS} ms)"
    )
    assert slowest_ms < BUDGET_MS, f"slowest call answered in {slowest_ms:.0f} ms"
    for result, _ in outcomes:  # routed, to the number's default queue
        assert (result.var("CTI_ROUTE"), result.var("CTI_QUEUE"), result.var("CTI_RULE")) == (
            "queue",
            "support",
            "fail-open",
        )
    # Open, or half-open while a probe is in flight: not closed, and exactly one state.
    assert gauge_mid_outage["closed"] == 0.0
    assert gauge_mid_outage["open"] + gauge_mid_outage["half-open"] == 1.0

    # Healed: the probe closes the breaker and calls are looked up again.
    result = await until(lambda: _gold(running), within_s=15)
    assert result.var("CTI_PRIORITY") == "10"
    assert _breaker_gauge(running)["closed"] == 1.0
    # ... and the records of the outage's calls arrive: nothing lost.
    reasons = await until(lambda: _reasons_if_all(db, len(outcomes)), within_s=30)
    assert set(reasons) <= {"lookup-timeout", "breaker-open"}
    assert reasons["breaker-open"] > reasons.get("lookup-timeout", 0)


async def _gold(running: RunningDaemon) -> AgiCallResult | None:
    result, _ = await _timed(running, 100_000)
    return result if result.var("CTI_RULE") == "gold" else None


async def _reasons_if_all(db, expected: int) -> dict[str, int] | None:
    rows = await db.fetch(
        "SELECT fail_open_reason, count(*) AS n FROM interactions"
        " WHERE fail_open_reason IS NOT NULL GROUP BY 1"
    )
    reasons = {r["fail_open_reason"]: r["n"] for r in rows}
    return reasons if sum(reasons.values()) >= expected else None
