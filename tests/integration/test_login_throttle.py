"""Login throttling and the bounded password-check queue, over real HTTP on real
PostgreSQL and Redis (issue "Nothing lost, nobody starved").

The throttle's clock is injected and frozen, so "how many guesses get through" does not
depend on how fast this machine answers; different client addresses are different
loopback addresses (127.0.0.x), bound by the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio as redis

from cti.screenpop.context import CONTEXT, Context
from cti.screenpop.password_checks import PasswordChecks
from cti.screenpop.throttle import Counter, LoginThrottle, ThrottlePolicy
from tests.integration.test_screenpop_api import PASSWORDS, Stack, add_agents, start_stack

USER = ThrottlePolicy(free_failures=5, base_s=1.0, cap_s=60.0)
ADDRESS = ThrottlePolicy(free_failures=20, base_s=1.0, cap_s=60.0)
ATTACKER, DESK, ELSEWHERE = "127.0.0.1", "127.0.0.2", "127.0.0.3"


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=5)
    await add_agents(pool)
    yield pool
    await pool.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def throttled(
    pool: asyncpg.Pool, redis_client: redis.Redis, clock: Clock
) -> AsyncIterator[Stack]:
    throttle = LoginThrottle(redis_client, user_policy=USER, address_policy=ADDRESS, clock=clock)
    stack = await start_stack(
        pool, redis_client, throttle=throttle, password_checks=PasswordChecks()
    )
    yield stack
    await stack.client.close()


@contextlib.asynccontextmanager
async def from_address(address: str) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(local_addr=(address, 0), force_close=True, limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def login(
    stack: Stack, session: aiohttp.ClientSession, username: str, password: str
) -> tuple[int, Any, str | None]:
    url = stack.client.make_url("/api/login")
    async with session.post(url, json={"username": username, "password": password}) as response:
        return response.status, await response.json(), response.headers.get("Retry-After")


def _ctx(stack: Stack) -> Context:
    return stack.client.app[CONTEXT]


async def _metric(stack: Stack, name: str) -> float:
    async with stack.client.get("/metrics") as response:
        text = await response.text()
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.rsplit(" ", 1)[1])


async def test_a_flood_of_guesses_is_answered_429_without_checking_passwords(
    throttled: Stack,
) -> None:
    async with from_address(ATTACKER) as attacker:
        answers = []
        for i in range(400):
            answers.append(await login(throttled, attacker, "alice", f"guess-{i:04}"))
    statuses = [status for status, _, _ in answers]
    assert statuses[:5] == [401] * 5
    assert statuses.count(429) == 395
    assert _ctx(throttled).password_checks.checks_run == 5  # no scrypt for a 429
    assert await _metric(throttled, "cti_login_throttled_total") == 395
    _, body, retry_after = answers[-1]
    assert body == {
        "error": "too_many_attempts",
        "message": "too many failed logins; try again later",
    }
    assert retry_after == "1"
    # The right password from the guessing address waits too: a 429 says nothing about it.
    async with from_address(ATTACKER) as attacker:
        assert (await login(throttled, attacker, "alice", PASSWORDS["alice"]))[0] == 429


async def test_the_lock_doubles_with_each_failure_after_it_expires(
    throttled: Stack, clock: Clock
) -> None:
    async with from_address(ATTACKER) as attacker:
        for _ in range(5):
            assert (await login(throttled, attacker, "alice", "wrong-password"))[0] == 401
        locks = []
        for _ in range(4):
            status, _, retry_after = await login(throttled, attacker, "alice", "wrong-password")
            assert status == 429
            locks.append(int(retry_after or 0))
            clock.now += locks[-1]
            assert (await login(throttled, attacker, "alice", "wrong-password"))[0] == 401
    assert locks == [1, 2, 4, 8]


async def test_the_agent_at_a_known_address_logs_in_during_a_flood_on_their_name(
    throttled: Stack,
) -> None:
    """The per-name lock does not apply to an address the agent has logged in from:
    otherwise anyone could lock any agent out by guessing (lockout as denial of
    service). A new address waits like the attacker does."""
    async with from_address(DESK) as desk:
        assert (await login(throttled, desk, "alice", PASSWORDS["alice"]))[0] == 200
    async with from_address(ATTACKER) as attacker:
        for i in range(50):
            await login(throttled, attacker, "alice", f"guess-{i:04}")
    async with from_address(ELSEWHERE) as elsewhere:
        status, _, retry_after = await login(throttled, elsewhere, "alice", PASSWORDS["alice"])
        assert status == 429 and retry_after is not None
    async with from_address(DESK) as desk:
        status, body, _ = await login(throttled, desk, "alice", PASSWORDS["alice"])
        assert status == 200, body
        # Another agent from the attacker's address is not locked by alice's name.
    async with from_address(ELSEWHERE) as elsewhere:
        assert (await login(throttled, elsewhere, "bob", PASSWORDS["bob"]))[0] == 200


async def test_one_address_trying_many_names_is_throttled_too(throttled: Stack) -> None:
    async with from_address(ATTACKER) as attacker:
        statuses = [
            (await login(throttled, attacker, f"user{i}", "wrong-password"))[0] for i in range(30)
        ]
    assert statuses[:20] == [401] * 20 and set(statuses[20:]) == {429}


async def test_a_success_clears_the_names_failures(throttled: Stack) -> None:
    async with from_address(ATTACKER) as attacker, from_address(DESK) as desk:
        for _ in range(4):
            assert (await login(throttled, attacker, "alice", "wrong-password"))[0] == 401
        assert (await login(throttled, desk, "alice", PASSWORDS["alice"]))[0] == 200
        for _ in range(5):  # 9 in all, but 5 since the success: the last one locks
            assert (await login(throttled, attacker, "alice", "wrong-password"))[0] == 401
        assert (await login(throttled, attacker, "alice", "wrong-password"))[0] == 429


async def test_an_unknown_name_is_throttled_exactly_like_a_known_one(throttled: Stack) -> None:
    answers: dict[str, list[tuple[int, Any]]] = {}
    for username, address in (("alice", DESK), ("nobody", ELSEWHERE)):
        async with from_address(address) as session:
            answers[username] = [
                (await login(throttled, session, username, "wrong-password"))[:2] for _ in range(8)
            ]
    assert answers["alice"] == answers["nobody"]


async def test_the_redis_counter_follows_the_policy(
    redis_client: redis.Redis, clock: Clock
) -> None:
    throttle = LoginThrottle(redis_client, user_policy=USER, address_policy=ADDRESS, clock=clock)
    reference = Counter()
    for _ in range(12):
        try:
            await throttle.check("carol", DESK)
            waited = 0.0
        except Exception as exc:  # Throttled
            waited = exc.retry_after_s  # type: ignore[attr-defined]
        assert waited == reference.retry_after(clock.now)
        clock.now += waited
        await throttle.failed("carol", DESK)
        reference.fail(USER, clock.now)
    ttl = await redis_client.pttl(LoginThrottle.user_key("carol"))
    assert 0 < ttl <= USER.forget_s * 1000


async def test_a_burst_of_logins_is_refused_beyond_the_queue_and_a_login_still_gets_in(
    pool: asyncpg.Pool, redis_client: redis.Redis
) -> None:
    """200 logins at once: at most 4 + 16 are held at a time, the rest answered 503 at
    once with Retry-After; an agent who honours it gets in within a few checks' time.
    (The burst's address runs into its throttle too: 429s once 20 have failed.)"""
    checks = PasswordChecks(concurrency=4, max_waiting=16)
    stack = await start_stack(pool, redis_client, password_checks=checks)
    try:
        async with from_address(ATTACKER) as burst:
            flood = [
                asyncio.create_task(login(stack, burst, f"ghost{i}", "wrong-password"))
                for i in range(200)
            ]
            async with from_address(DESK) as desk:
                started = time.monotonic()
                attempts = 0
                while True:
                    attempts += 1
                    status, body, retry_after = await login(stack, desk, "bob", PASSWORDS["bob"])
                    if status != 503:
                        break
                    assert body["error"] == "busy" and retry_after == "1"
                    await asyncio.sleep(int(retry_after))
                latency = time.monotonic() - started
            answers = await asyncio.gather(*flood)
        refused = await _metric(stack, "cti_password_checks_refused_total")
        in_queue = await _metric(stack, "cti_password_checks_in_queue")
    finally:
        await stack.client.close()
    assert status == 200, body
    statuses = [status for status, _, _ in answers]
    assert set(statuses) <= {401, 429, 503} and statuses.count(503) > 0
    assert all(r == "1" for s, _, r in answers if s == 503)
    assert checks.peak <= checks.capacity  # never more than 20 logins held at once
    # /metrics counts each 503 (the burst's and the desk's) and the queue drained.
    assert (refused, in_queue) == (statuses.count(503) + attempts - 1, 0)
    assert latency < 15, latency  # generous: the point is "not 7 s for 200 scrypts"


async def test_a_concurrent_guessing_flood_from_one_address_leaves_places_for_others(
    pool: asyncpg.Pool, redis_client: redis.Redis, clock: Clock
) -> None:
    """200 wrong-password logins at once for one name from one address: they all pass
    the throttle before the first has failed, but together they hold at most their
    share of the password-check queue, so an agent at another desk is not answered
    ``busy`` (503) and logs in at the first attempt. (One check at a time, so that the
    flood's places drain slowly whatever this machine's speed.)"""
    throttle = LoginThrottle(redis_client, user_policy=USER, address_policy=ADDRESS, clock=clock)
    checks = PasswordChecks(concurrency=1, max_waiting=19)
    stack = await start_stack(pool, redis_client, throttle=throttle, password_checks=checks)
    try:
        async with from_address(ATTACKER) as attacker:
            flood = [
                asyncio.create_task(login(stack, attacker, "alice", f"guess-{i:04}"))
                for i in range(200)
            ]
            deadline = time.monotonic() + 60
            # The flood holds as many places as it may (all of them, without a share).
            while checks.admitted < checks.max_share:
                assert time.monotonic() < deadline, "the flood never arrived"
                await asyncio.sleep(0.002)
            async with from_address(DESK) as desk:
                status, body, _ = await login(stack, desk, "bob", PASSWORDS["bob"])
            answers = await asyncio.gather(*flood)
    finally:
        await stack.client.close()
    assert status == 200, body
    statuses = [status for status, _, _ in answers]
    assert set(statuses) <= {401, 429, 503} and statuses.count(401) <= checks.max_share + 5
    assert checks.peak <= checks.capacity
