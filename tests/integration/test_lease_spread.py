"""The PBX leases spread over the instances (cti.calls.spread, cti.calls.presence,
cti.calls.spreading), against the real Redis.

Three "instances" in one process, each with its own owner id, one Leadership per PBX
(four lease keys) sharing one Spreading, AMI "up" for the PBXes it can reach. What
must hold: they settle at 2/1/1 with every PBX led; an instance joining later gets one
lease handed over, cleanly (every event in the stream once, in order); when an
instance stops, or dies, its PBXes are taken by the others soon after.

Times come from Redis itself (who holds which key, polled): the measurements printed
(``-s``) are this machine's, the assertions only generous bounds.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import cast

import pytest
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from cti.calls.events import CallEvent
from cti.calls.leadership import Leadership
from cti.calls.lease import Lease, lease_key
from cti.calls.presence import INSTANCES_KEY, Presence
from cti.calls.publisher import ALL_EVENTS_STREAM, EventPublisher
from cti.calls.spread import Verdict
from cti.calls.spreading import Spreading
from tests.conftest import REDIS_URL
from tests.waiting import until

#: Redis's clock runs the TTL: it must be well above any pause of a loaded machine.
TTL = 3.0
PBXES = ("a", "b", "c", "d")


class Instance:
    def __init__(self, client: redis.Redis, owner: str, reach: tuple[str, ...] = PBXES) -> None:
        self.owner = owner
        self.client = client
        self.spreading = Spreading(Presence(client), owner, ttl_s=TTL, renew_s=TTL / 5)
        self.leaderships = {
            pbx: Leadership(
                client,
                EventPublisher(client, ttl_s=600, lease_key=lease_key(pbx)),
                owner,
                lease_ttl_s=TTL,
                lease_key=lease_key(pbx),
                spread=self.spreading.seat(pbx),
            )
            for pbx in PBXES
        }
        for pbx in reach:
            self.leaderships[pbx].ami_connected(True)
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> Instance:
        self.tasks = [asyncio.create_task(ld.run(self.stop)) for ld in self.leaderships.values()]
        return self

    async def halt(self) -> None:
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), 10)

    async def die(self) -> None:
        """Redis becomes unreachable for it, then it stops: no release, no goodbye."""
        pool = self.client.connection_pool
        pool.connection_kwargs.update(port=1, socket_connect_timeout=0.2)
        for connection in (*pool._available_connections, *pool._in_use_connections):
            connection.port = 1
        await pool.disconnect()
        await self.halt()

    def take(self, pbx: str, events: list[CallEvent]) -> None:
        self.leaderships[pbx].take(events)

    @property
    def handovers(self) -> int:
        return self.spreading.rule.handovers


async def holders(client: redis.Redis) -> dict[str, str | None]:
    values = await client.mget([lease_key(pbx) for pbx in PBXES])
    return {pbx: v.decode() if v else None for pbx, v in zip(PBXES, values, strict=True)}


def loads(held: dict[str, str | None], owners: list[str]) -> list[int]:
    counts = Counter(held.values())
    return sorted((counts[owner] for owner in owners), reverse=True)


class Watch:
    """Polls who holds each lease; remembers the longest time a PBX was unled."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.longest_unled = dict.fromkeys(PBXES, 0.0)
        self.held: dict[str, str | None] = dict.fromkeys(PBXES)
        self._unled_since: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watch:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        while True:
            self.held = await holders(self.client)
            now = time.monotonic()
            for pbx, who in self.held.items():
                if who is None:
                    since = self._unled_since.setdefault(pbx, now)
                    self.longest_unled[pbx] = max(self.longest_unled[pbx], now - since)
                else:
                    self._unled_since.pop(pbx, None)
            await asyncio.sleep(0.02)

    def reset(self) -> None:
        self.longest_unled = dict.fromkeys(PBXES, 0.0)


@pytest.fixture
async def cluster():
    """Makes instances, each with its own Redis client (one may be cut off); halts
    them all at the end, whatever the test did."""
    made: list[Instance] = []

    def instance(owner: str, reach: tuple[str, ...] = PBXES) -> Instance:
        client = redis.from_url(REDIS_URL, retry=Retry(NoBackoff(), 0))
        made.append(Instance(client, owner, reach))
        return made[-1]

    yield instance
    for i in made:
        if i.tasks and not i.stop.is_set():
            await i.halt()
        await i.client.aclose()


async def test_three_instances_split_four_pbxes_and_take_over_from_one_that_stops(
    redis_client: redis.Redis, cluster
) -> None:
    started = time.monotonic()
    instances = [cluster(f"i{n}").start() for n in (1, 2, 3)]
    owners = [i.owner for i in instances]
    async with Watch(redis_client) as watch:
        await until(lambda: loads(watch.held, owners) == [2, 1, 1], within_s=30)
        converged = time.monotonic() - started
        # Settled: it stays so for several TTLs, all four led all the time.
        watch.reset()
        await asyncio.sleep(3 * TTL)
        assert loads(watch.held, owners) == [2, 1, 1]
        assert max(watch.longest_unled.values()) == 0.0
        assert sum(i.handovers for i in instances) <= 2  # 0 when they see each other in time
        announced = await redis_client.zrange(INSTANCES_KEY, 0, -1)
        assert sorted(announced) == [b"i1", b"i2", b"i3"]

        # The instance with two stops cleanly: the other two take its PBXes at once.
        heavy = next(i for i in instances if list(watch.held.values()).count(i.owner) == 2)
        its = [pbx for pbx, who in watch.held.items() if who == heavy.owner]
        stopped = time.monotonic()
        await heavy.halt()
        rest = [i.owner for i in instances if i is not heavy]
        await until(lambda: loads(watch.held, rest) == [2, 2], within_s=30)
        taken_after_stop = time.monotonic() - stopped
        assert all(watch.longest_unled[pbx] < TTL for pbx in its)
        announced = await redis_client.zrange(INSTANCES_KEY, 0, -1)
        assert sorted(announced) == sorted(o.encode() for o in rest)  # it withdrew
    print(
        f"\nconverged 2/1/1 in {converged:.2f} s (TTL {TTL} s), handovers "
        f"{sum(i.handovers for i in instances)}; a stopped instance's PBXes taken in "
        f"{taken_after_stop:.2f} s, longest unled {max(watch.longest_unled.values()):.2f} s"
    )


async def test_an_instance_that_dies_is_replaced(redis_client: redis.Redis, cluster) -> None:
    instances = [cluster(f"i{n}").start() for n in (1, 2, 3)]
    owners = [i.owner for i in instances]
    async with Watch(redis_client) as watch:
        await until(lambda: loads(watch.held, owners) == [2, 1, 1], within_s=30)
        victim = next(i for i in instances if list(watch.held.values()).count(i.owner) == 1)
        died = time.monotonic()
        await victim.die()
        rest = [i.owner for i in instances if i is not victim]
        await until(lambda: loads(watch.held, rest) == [2, 2], within_s=30)
        replaced = time.monotonic() - died
    # Its lease lives out its TTL in Redis; then the lighter survivor takes it. How long
    # that takes is measured, not asserted: on a loaded machine the renewals that notice
    # it run late (7.2 s once in the whole suite, 3.0-3.6 s alone), and the behaviour
    # under test is that the survivors take it, which ``until`` bounds generously.
    print(f"\na dead instance's PBX taken {replaced:.2f} s after it died (TTL {TTL} s)")


def event(pbx: str, n: int) -> CallEvent:
    return CallEvent(
        kind="queued",
        call_key=f"call-{pbx}",
        call_id=None,
        linkedid=f"1795410950.{n}",
        fingerprint=f"{pbx}|{n}",
        at=1795410950.5,
    )


async def test_an_instance_joining_later_gets_one_lease_cleanly(
    redis_client: redis.Redis, cluster
) -> None:
    """Events flow all along (every instance sees each PBX's events, as each follows
    its AMI): through the hand-over each reaches the stream once, in order."""
    first = [cluster(f"i{n}").start() for n in (1, 2)]
    running = list(first)
    sent = 0
    feeding = asyncio.Event()

    async def feed() -> None:
        nonlocal sent
        while not feeding.is_set():
            for pbx in PBXES:
                for instance in running:
                    instance.take(pbx, [event(pbx, sent)])
            sent += 1
            await asyncio.sleep(0.005)

    feeder = asyncio.create_task(feed())
    async with Watch(redis_client) as watch:
        await until(lambda: loads(watch.held, ["i1", "i2"]) == [2, 2], within_s=30)
        await asyncio.sleep(TTL)  # settled (some may have been handed over to get there)
        assert loads(watch.held, ["i1", "i2"]) == [2, 2]
        before = sum(i.handovers for i in running)
        watch.reset()
        joined = time.monotonic()
        late = cluster("i3")
        running.append(late.start())
        owners = ["i1", "i2", "i3"]
        await until(lambda: loads(watch.held, owners) == [2, 1, 1], within_s=30)
        converged = time.monotonic() - joined
        watch_longest = max(watch.longest_unled.values())
        await asyncio.sleep(2 * TTL)  # and nothing moves after that
        assert loads(watch.held, owners) == [2, 1, 1]
    handovers = sum(i.handovers for i in running) - before
    assert handovers == 1 and late.handovers == 0
    feeding.set()
    await feeder
    # Whoever leads each PBX now publishes what is left of its outbox.
    await until(lambda: all(i.leaderships[p].backlog == 0 for i in running for p in PBXES))
    for instance in running:
        await instance.halt()
    entries = cast(
        list[tuple[bytes, dict[bytes, bytes]]], await redis_client.xrange(ALL_EVENTS_STREAM)
    )
    published = [json.loads(fields[b"e"])["linkedid"] for _id, fields in entries]
    by_pbx: dict[str, list[int]] = {}
    for entry in entries:
        payload = json.loads(entry[1][b"e"])
        by_pbx.setdefault(payload["call_key"][-1], []).append(
            int(payload["linkedid"].rsplit(".", 1)[1])
        )
    assert len(published) == 4 * sent
    for pbx in PBXES:
        assert by_pbx[pbx] == list(range(sent)), pbx
    print(
        f"\na late instance got its lease {converged:.2f} s after joining (TTL {TTL} s), "
        f"handovers {handovers}, longest unled {watch_longest:.2f} s, "
        f"{len(published)} events each published once"
    )


async def test_an_instance_never_takes_a_pbx_it_cannot_reach(
    redis_client: redis.Redis, cluster
) -> None:
    for owner, reach in (("i1", "abc"), ("i2", "abc"), ("i3", "d")):
        cluster(owner, reach=tuple(reach)).start()
    async with Watch(redis_client) as watch:
        await until(lambda: None not in watch.held.values(), within_s=30)
        assert watch.held["d"] == "i3"
        await asyncio.sleep(2 * TTL)
        assert watch.held["d"] == "i3"
        assert loads(watch.held, ["i1", "i2"]) == [2, 1]
        assert "d" not in {p for p, who in watch.held.items() if who in ("i1", "i2")}


class HandOver:
    """A spread that always wants the lease given away once held (the rule itself is
    tested in tests/unit/test_spread.py)."""

    def __init__(self) -> None:
        self.handed = 0

    async def verdict(self, *, eligible: bool, held: bool) -> Verdict:
        return Verdict.HAND_OVER if held else Verdict.TAKE

    def held(self, held: bool) -> None:
        pass

    async def handed_over(self) -> None:
        self.handed += 1

    async def leave(self) -> None:
        pass


async def test_a_lease_is_handed_over_only_once_the_outbox_is_empty(
    redis_client: redis.Redis,
) -> None:
    empty = [False, False, True]
    asked: list[bool] = []

    def drain(start: bool) -> bool:
        asked.append(start)
        return empty.pop(0)

    spread = HandOver()
    lease = Lease(redis_client, "me", key=lease_key("a"), ttl_s=30, spread=spread, drain=drain)
    await lease.step()
    assert lease.held
    for _ in range(2):  # the outbox still has events: keep (and renew) the lease
        await lease.step()
        assert lease.held and await redis_client.get(lease_key("a")) == b"me"
    await lease.step()
    assert not lease.held and await redis_client.get(lease_key("a")) is None
    assert asked == [True, True, True] and spread.handed == 1


async def test_while_handing_over_new_events_wait_for_the_next_leader(
    redis_client: redis.Redis,
) -> None:
    leadership = Leadership(
        redis_client,
        EventPublisher(redis_client, ttl_s=600, lease_key=lease_key("a")),
        "me",
        lease_key=lease_key("a"),
    )
    leadership.set_leader(True)
    assert leadership.drain(True)  # nothing pending: may release at once
    leadership.take([event("a", 1)])
    assert leadership.backlog == 0 and leadership.standby_backlog == 1
    # Called off (the lighter instance went away): what waited goes out after all.
    leadership.drain(False)
    assert leadership.backlog == 1 and leadership.standby_backlog == 0
    assert not leadership.drain(True)  # the outbox is not empty: keep the lease for now
    leadership.take([event("a", 2)])
    leadership.set_leader(False)  # released: event 2 is the next leader's to publish
    assert leadership.standby_backlog == 1 and not leadership.holding_back
