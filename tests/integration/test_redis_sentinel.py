"""Shared stores that survive a machine: Redis through Sentinel, PostgreSQL through a
multi-host connection string. Real processes throughout (tests/sentinel.py: Debian's
redis-server and redis-sentinel on private ports).

What must hold: the master is killed (SIGKILL) while two instances follow calls; the
sentinels promote the replica; the *same* clients, made by the daemon's own factory
from ``CTI_REDIS_URL=redis+sentinel://...``, carry on against the new master; what was
written and replicated before the kill is still there; the events taken while there
was no master are published after it, each exactly once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import pytest
import redis.asyncio as redis
from redis.exceptions import RedisError

from cti.app.resources import close_pool, create_pool, redis_client
from cti.backoff import Backoff
from cti.calldata.store import CallDataStore, call_key
from cti.calls.events import CallEvent
from cti.calls.leadership import Leadership
from cti.calls.lease import LEASE_KEY
from cti.calls.publisher import ALL_EVENTS_STREAM, EventPublisher
from cti.config import Config, HostPort, load_config
from cti.db.migrate import ensure_database
from cti.screenpop.ws import reader_factory
from tests.conftest import PG_SERVER
from tests.integration.conftest import ROUTE_BUDGET_MS, start_daemon
from tests.processes import free_port
from tests.sentinel import FAILOVER_S, replicated, sentinel_group
from tests.waiting import until

CALL = "6f1c1d1e-0000-4000-8000-0000000000f0"
NOW = datetime(2026, 12, 6, 20, 0, tzinfo=UTC)
#: Whatever the machine's load, a promoted master serves within this.
CARRY_ON_S = 60.0


def event(n: str) -> CallEvent:
    return CallEvent(
        kind="ringing",
        call_key=CALL,
        call_id=CALL,
        linkedid="1795410950.10",
        fingerprint=f"ringing|{n}",
        at=1795410950.5,
        agent="PJSIP/2001",
        recipients=("PJSIP/2001",),
        data={"seq": n},
    )


def document() -> dict[str, Any]:
    return {
        "call_id": str(uuid.uuid4()),
        "version": 1,
        "created_at": NOW.isoformat(),
        "customer": None,
        "routing": {"queue": "support", "priority": 10},
        "ivr": {},
        "notes": [],
        "disposition": None,
        "tags": [],
        "attributes": {},
    }


async def published(client: redis.Redis) -> list[str]:
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await client.xrange(ALL_EVENTS_STREAM))
    return [json.loads(fields[b"e"])["seq"] for _id, fields in entries]


async def read_blocking(reader: redis.Redis) -> list[str]:
    """What the WebSocket does: a blocking XREAD (from the start, here)."""
    reply = await reader.xread({ALL_EVENTS_STREAM: "0"}, block=300)
    entries = reply[0][1] if reply else []
    return [json.loads(fields[b"e"])["seq"] for _id, fields in entries]


def succeeds(action: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[bool]]:
    """A condition for :func:`until`: ``action`` went through (a Redis error: not yet).
    What a caller of the store sees across the gap: a refused request, then service."""

    async def attempt() -> bool:
        try:
            await action()
        except (RedisError, OSError):
            return False
        return True

    return attempt


@pytest.mark.parametrize(
    "lease_ttl_s",
    [
        # The failover (a few seconds) is over long before the lease would expire: the
        # leader renews it on the promoted replica and goes on leading.
        pytest.param(30.0, id="lease-outlives-the-failover"),
        # The lease expires during the failover: whoever takes it on the new master
        # publishes, the other's events are fenced off (or skipped by fingerprint).
        pytest.param(1.0, id="lease-expires-during-the-failover"),
    ],
)
async def test_the_master_dies_and_every_instance_carries_on_with_the_promoted_replica(
    tmp_path: Path, lease_ttl_s: float
) -> None:
    async with sentinel_group(tmp_path) as group:
        config = load_config({"CTI_REDIS_URL": group.url(db=2)})
        assert config.redis_sentinel is not None
        async with redis_client(config) as a_client, redis_client(config) as b_client:
            instances = []
            for owner, client in (("a", a_client), ("b", b_client)):
                leadership = Leadership(
                    client,
                    EventPublisher(client, ttl_s=600),
                    owner,
                    lease_ttl_s=lease_ttl_s,
                    outbox_backoff=Backoff(initial=0.05, cap=0.5),
                )
                leadership.ami_connected(True)
                instances.append(leadership)
            a, b = instances
            stop = asyncio.Event()
            a_task = asyncio.create_task(a.run(stop))
            await until(lambda: a.leader, within_s=CARRY_ON_S)
            b_task = asyncio.create_task(b.run(stop))
            store = CallDataStore(a_client, 3_600)
            # A sidebar's WebSocket reads with a client of its own, made from a_client's.
            reader = reader_factory(a_client, block_ms=300)()

            # Before: call data and events, written and replicated.
            before = [document() for _ in range(20)]
            await store.create_many(before)
            first = before[0]["call_id"]
            v2 = await store.update(first, 1, {"note": "before the failover"}, "agent/2001", NOW)
            for leadership in instances:  # every instance follows the same calls
                leadership.take([event(f"before-{i}") for i in range(10)])
            await until(lambda: a.backlog == 0 and a.outbox.failures == 0, within_s=CARRY_ON_S)
            assert await published(a_client) == [f"before-{i}" for i in range(10)]
            assert await replicated(a_client)  # the replica has it all

            group.kill_master()
            killed = time.monotonic()
            for leadership in instances:  # calls go on while there is no master
                leadership.take([event(f"during-{i}") for i in range(10)])
            await until(group.promoted, within_s=FAILOVER_S, every_s=0.2)

            # After: the same clients reach the new master and carry on.
            after = document()
            await until(succeeds(lambda: store.create_many([after])), within_s=CARRY_ON_S)
            gap_s = time.monotonic() - killed
            expected = [f"{w}-{i}" for w in ("before", "during") for i in range(10)]
            await until(
                lambda: (a.leader or b.leader) and a.backlog == 0 and b.backlog == 0,
                within_s=CARRY_ON_S,
            )
            await until(
                succeeds(lambda: _expect(published(b_client), expected)), within_s=CARRY_ON_S
            )
            await until(succeeds(lambda: _expect(read_blocking(reader), expected)), within_s=60)
            for client in (a_client, b_client, reader):
                server = await client.info("server")
                assert server["tcp_port"] == group.replica_port
            for doc in before:  # straight from Redis: the store has no PostgreSQL here
                assert await a_client.exists(call_key(doc["call_id"])) == 1
            assert await store.get(first) == v2
            v3 = await store.update(first, 2, {"note": "after the failover"}, "agent/2002", NOW)
            assert [n["text"] for n in v3["notes"]] == ["before the failover", "after the failover"]
            assert await store.get(after["call_id"]) == after
            leader = "a" if a.leader else "b"
            assert (await b_client.get(LEASE_KEY)) == leader.encode()
            assert not (a.leader and b.leader)
            if gap_s < lease_ttl_s * 0.6:  # the leader renewed in time: never lost it
                assert (a.lease.changes, b.lease.changes) == (1, 0)

            stop.set()
            await asyncio.wait_for(asyncio.gather(a_task, b_task), 30)
            await reader.aclose()


async def test_events_the_failover_lost_are_published_again_by_the_same_leader(
    tmp_path: Path,
) -> None:
    """The replication window: the master acknowledges events its replica never gets,
    dies, and the replica is promoted. The leader keeps its lease (the failover is far
    shorter than it), notices the new master lacks its last batches (their mark is not
    there) and publishes its recent window again: the lost events go in once, the
    surviving ones are skipped by their fingerprints."""
    async with sentinel_group(tmp_path) as group:
        config = load_config({"CTI_REDIS_URL": group.url(db=3)})
        async with redis_client(config) as client:
            leader = Leadership(
                client,
                EventPublisher(client, ttl_s=600),
                "a",
                lease_ttl_s=60.0,  # outlives any failover here: the lease is never lost
                outbox_backoff=Backoff(initial=0.05, cap=0.5),
            )
            leader.ami_connected(True)
            stop = asyncio.Event()
            task = asyncio.create_task(leader.run(stop))
            await until(lambda: leader.leader, within_s=CARRY_ON_S)

            leader.take([event(f"before-{i}") for i in range(10)])
            await until(lambda: leader.backlog == 0, within_s=CARRY_ON_S)
            assert await replicated(client)

            await group.cut_off_replica()
            leader.take([event(f"lost-{i}") for i in range(10)])
            await until(lambda: leader.backlog == 0, within_s=CARRY_ON_S)
            async with redis.Redis(port=group.master_port, db=3) as master:
                on_master = await published(master)  # acknowledged by the master
            assert on_master == [f"{w}-{i}" for w in ("before", "lost") for i in range(10)]

            group.kill_master()
            group.thaw_replica()
            await until(group.promoted, within_s=FAILOVER_S, every_s=0.2)
            leader.take([event(f"after-{i}") for i in range(5)])

            # In the order they happened: the first batch on the new master found the
            # mark of the last replicated batch, wrote nothing, and the lost events went
            # out ahead of it.
            expected = [f"{w}-{i}" for w in ("before", "lost") for i in range(10)] + [
                f"after-{i}" for i in range(5)
            ]
            await until(succeeds(lambda: _expect(published(client), expected)), within_s=CARRY_ON_S)
            assert (await client.info("server"))["tcp_port"] == group.replica_port
            assert leader.outbox.losses >= 1
            assert leader.leader and leader.lease.changes == 1  # the same leader all along
            assert (await client.get(LEASE_KEY)) == b"a"

            stop.set()
            await asyncio.wait_for(task, 30)
            assert await published(client) == expected  # nothing doubled since


async def _expect(got: Awaitable[list[str]], expected: list[str]) -> None:
    """Raise (a Redis-looking error: not there yet) until ``got`` is ``expected``."""
    value = await got
    if value != expected:
        raise RedisError(f"published so far: {value}")


async def test_a_dead_first_postgresql_host_is_skipped() -> None:
    """``postgresql://closed-port,127.0.0.1:5432/...?target_session_attrs=read-write``:
    the pool and a one-off connection both land on the live primary."""
    server = urlsplit(PG_SERVER)
    user = f"{server.username}@" if server.username else ""
    closed = free_port()  # nothing listens: connection refused at once
    dsn = (
        f"postgresql://{user}127.0.0.1:{closed},{server.hostname}:{server.port or 5432}"
        "/postgres?target_session_attrs=read-write"
    )
    config = load_config({"CTI_DATABASE_URL": dsn})
    assert config == Config(database_url=dsn)
    pool = create_pool(config)
    await pool
    try:
        port = await pool.fetchval("SELECT inet_server_port()")
        assert port == (server.port or 5432)
        assert await pool.fetchval("SHOW transaction_read_only") == "off"
    finally:
        await close_pool(pool)
    assert await ensure_database(dsn) is False  # `cti db migrate`'s first step: it is there


async def test_the_daemon_routes_through_sentinel_and_keeps_the_call_data_over_a_failover(
    seeded: str, tmp_path: Path
) -> None:
    """The composition root's own path: ``cti serve`` (in process) with
    ``CTI_REDIS_URL=redis+sentinel://``; a call routed before the kill keeps its data,
    one routed after it gets its data on the new master."""
    async with sentinel_group(tmp_path) as group:
        config = dataclasses.replace(
            load_config({"CTI_REDIS_URL": group.url(db=1), "CTI_DATABASE_URL": seeded}),
            agi_bind=HostPort("127.0.0.1", 0),
            plan_cache=str(tmp_path / "plan-cache.toml"),
            route_budget_ms=ROUTE_BUDGET_MS,
        )
        running = await start_daemon(config)
        try:
            async with redis.Redis(port=group.master_port, db=1) as master:
                first = await running.call(callerid="2120000002", dnid="5550100")
                first_key = call_key(first.variables["__CTI_CALL_ID"])
                await until(lambda: master.exists(first_key), within_s=CARRY_ON_S)
                assert await replicated(master)
            group.kill_master()
            await until(group.promoted, within_s=FAILOVER_S, every_s=0.2)
            second = await running.call(callerid="2120000004", dnid="5550100")
            assert second.var("CTI_TIER") == "bronze"  # routing never needed Redis
            second_key = call_key(second.variables["__CTI_CALL_ID"])
            async with redis.Redis(port=group.replica_port, db=1) as promoted:
                await until(lambda: promoted.exists(second_key), within_s=CARRY_ON_S)
                document = json.loads(await promoted.get(first_key))
            assert document["customer"]["account_number"] == "A0000002"
        finally:
            await running.daemon.shutdown(writer_grace_s=2)
