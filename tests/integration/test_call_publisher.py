"""Call events into Redis Streams (cti.calls.publisher) and the AMI lease
(cti.calls.lease), against the real Redis.

What must hold: each event reaches the supervisors' stream and the streams of the
agents it concerns, at most once whoever publishes it; only the lease holder may
publish; a standby takes the lease when the holder stops renewing it, and not before;
an outage delays events, it does not lose them.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, cast

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from cti.backoff import Backoff
from cti.calls.events import CallEvent, data_changed
from cti.calls.leadership import Leadership, Outbox
from cti.calls.lease import LEASE_KEY, Lease, lease_key
from cti.calls.publisher import (
    ALL_EVENTS_STREAM,
    EventPublisher,
    Mark,
    NotLeader,
    agent_stream,
    call_agents_key,
)
from tests.processes import free_port
from tests.waiting import until

CALL = "6f1c1d1e-0000-4000-8000-000000000001"


def event(kind: str, fingerprint: str, *, agent: str | None = None, **kw: object) -> CallEvent:
    return CallEvent(
        kind=kind,
        call_key=CALL,
        call_id=CALL,
        linkedid="1795410950.10",
        fingerprint=fingerprint,
        at=1795410950.5,
        agent=agent,
        recipients=(agent,) if agent else (),
        **kw,  # type: ignore[arg-type]
    )


async def stream(client: redis.Redis, key: str) -> list[dict[str, Any]]:
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await client.xrange(key))
    return [json.loads(fields[b"e"]) for _id, fields in entries]


async def test_events_reach_their_agents_once(redis_client: redis.Redis) -> None:
    await redis_client.set(LEASE_KEY, "me")
    publisher = EventPublisher(redis_client, ttl_s=600)
    ringing_a = event("ringing", "ringing|PJSIP/2001-1", agent="PJSIP/2001")
    connected_a = event("connected", "connected|PJSIP/2001-1", agent="PJSIP/2001")
    ringing_b = event("ringing", "ringing|PJSIP/2002-2", agent="PJSIP/2002")
    transferred = event("transferred", "transferred|blind|x", to_call_agents=True)
    await publisher.publish_many([ringing_a, connected_a, ringing_b, transferred], "me")
    # A new leader publishing the same events again (its stand-by window) adds nothing.
    await publisher.publish_many([ringing_a, connected_a, ringing_b, transferred], "me")

    assert publisher.published == 4 and publisher.duplicates == 4
    kinds = [e["event"] for e in await stream(redis_client, ALL_EVENTS_STREAM)]
    assert kinds == ["ringing", "connected", "ringing", "transferred"]
    a = [e["event"] for e in await stream(redis_client, agent_stream("PJSIP/2001"))]
    b = [e["event"] for e in await stream(redis_client, agent_stream("PJSIP/2002"))]
    assert a == ["ringing", "connected", "transferred"]
    assert b == ["ringing", "transferred"]
    assert await redis_client.smembers(call_agents_key(CALL)) == {b"PJSIP/2001", b"PJSIP/2002"}
    assert 0 < await redis_client.ttl(call_agents_key(CALL)) <= 600


async def test_the_script_is_loaded_again_after_a_redis_restart(redis_client: redis.Redis) -> None:
    await redis_client.set(LEASE_KEY, "me")
    publisher = EventPublisher(redis_client, ttl_s=600)
    await publisher.publish_many([event("queued", "q|1")], "me")
    await redis_client.script_flush()  # what a restart does to loaded scripts
    await publisher.publish_many([event("queued", "q|2")], "me")
    assert publisher.published == 2


async def test_a_batch_that_finds_another_mark_writes_nothing(redis_client: redis.Redis) -> None:
    """The mark check (cti.calls.recent) is in the script: a batch sent expecting the
    last batch's mark, to a Redis that lost that batch, writes no event, leaves its own
    mark and says what it found, so the outbox can publish the lost events first."""
    await redis_client.set(LEASE_KEY, "me")
    publisher = EventPublisher(redis_client, ttl_s=600)
    first = Mark("m", "t:1", None)
    assert await publisher.publish_many([event("queued", "q|1")], "me", mark=first) is None
    second = Mark("m", "t:2", "t:1")
    assert await publisher.publish_many([event("queued", "q|2")], "me", mark=second) == "t:1"
    await redis_client.set("m", "t:1-lost")  # as if the promoted replica had an older one
    third = Mark("m", "t:3", "t:2")
    found = await publisher.publish_many([event("queued", "q|3")], "me", mark=third)
    assert found == "t:1-lost"
    assert publisher.published == 2 and publisher.duplicates == 0
    assert len(await stream(redis_client, ALL_EVENTS_STREAM)) == 2
    assert await redis_client.get("m") == b"t:3"
    assert await redis_client.pttl("m") > 0


async def test_data_changes_may_be_published_by_any_instance(redis_client: redis.Redis) -> None:
    """Edits come from whichever instance serves the agent: no lease needed."""
    await redis_client.set(LEASE_KEY, "someone-else")
    publisher = EventPublisher(redis_client, ttl_s=600)
    await redis_client.sadd(call_agents_key(CALL), "PJSIP/2001")
    await publisher.publish_many([data_changed(CALL, "1.1", 2, "PJSIP/2001", 1.0)], "")
    assert [e["version"] for e in await stream(redis_client, agent_stream("PJSIP/2001"))] == [2]


async def test_only_the_lease_holder_publishes(redis_client: redis.Redis) -> None:
    await redis_client.set(LEASE_KEY, "new-leader")
    publisher = EventPublisher(redis_client, ttl_s=600)
    first = event("ringing", "ringing|PJSIP/2001-1", agent="PJSIP/2001")
    try:
        await publisher.publish_many([first], "old-leader")
    except NotLeader:
        pass
    else:
        raise AssertionError("a leader that lost its lease published")
    assert await redis_client.exists(ALL_EVENTS_STREAM, agent_stream("PJSIP/2001")) == 0
    # ... and the refused event is not marked as seen: the new leader still publishes it.
    await publisher.publish_many([first], "new-leader")
    assert len(await stream(redis_client, ALL_EVENTS_STREAM)) == 1


async def test_each_pbx_events_are_fenced_by_that_pbx_lease(redis_client: redis.Redis) -> None:
    """One publisher, two PBXes: an instance that leads PBX b but not PBX a publishes
    b's events and is refused a's; the payload names the PBX; the call that crosses
    both (one call id) shares its agents set."""
    await redis_client.set(lease_key("a"), "other")
    await redis_client.set(lease_key("b"), "me")
    publisher = EventPublisher(redis_client, ttl_s=600)
    on_b = event("ringing", "@b|ringing|PJSIP/2001-1", agent="PJSIP/2001@b", pbx="b")
    on_a = event("ringing", "ringing|PJSIP/2001-1", agent="PJSIP/2001", pbx="a")
    await publisher.publish_many([on_b], "me", lease_key=lease_key("b"))
    try:
        await publisher.publish_many([on_a], "me", lease_key=lease_key("a"))
    except NotLeader:
        pass
    else:
        raise AssertionError("published under a lease held by another instance")
    assert [(e["agent"], e["pbx"]) for e in await stream(redis_client, ALL_EVENTS_STREAM)] == [
        ("PJSIP/2001@b", "b")
    ]
    await redis_client.set(lease_key("a"), "me")
    await publisher.publish_many([on_a], "me", lease_key=lease_key("a"))
    assert await redis_client.smembers(call_agents_key(CALL)) == {b"PJSIP/2001", b"PJSIP/2001@b"}
    assert len(await stream(redis_client, agent_stream("PJSIP/2001@b"))) == 1


async def test_a_pbx_outbox_is_fenced_by_its_own_lease(redis_client: redis.Redis) -> None:
    await redis_client.set(LEASE_KEY, "me")  # the default PBX's lease is ours ...
    await redis_client.set(lease_key("b"), "other")  # ... b's is not
    returned: list[CallEvent] = []
    outbox = Outbox(
        EventPublisher(redis_client, ttl_s=600), "me", returned.extend, lease_key=lease_key("b")
    )
    stop = asyncio.Event()
    task = asyncio.create_task(outbox.run(stop))
    events = [event("queued", "@b|queued|support|1", pbx="b")]
    outbox.submit(events)
    await until(lambda: returned == events)
    assert await redis_client.exists(ALL_EVENTS_STREAM) == 0
    stop.set()
    await asyncio.wait_for(task, 2)


async def test_outbox_hands_back_what_the_lease_refused(redis_client: redis.Redis) -> None:
    await redis_client.set(LEASE_KEY, "other")
    returned: list[CallEvent] = []
    outbox = Outbox(EventPublisher(redis_client, ttl_s=600), "me", returned.extend)
    stop = asyncio.Event()
    task = asyncio.create_task(outbox.run(stop))
    events = [event("queued", "queued|support|1"), event("ringing", "ringing|x", agent="A/1")]
    outbox.submit(events)
    await until(lambda: returned == events)
    assert outbox.backlog == 0
    stop.set()
    await asyncio.wait_for(task, 2)


async def test_outbox_retries_through_a_redis_outage(redis_client: redis.Redis) -> None:
    """Publishing against a Redis that refuses connections: the events wait and go out,
    in order, once it is back (here: the client is pointed back at the real server)."""
    down = redis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0)
    )
    await redis_client.set(LEASE_KEY, "me")
    publisher = EventPublisher(down, ttl_s=600)
    outbox = Outbox(publisher, "me", lambda _: None, backoff=Backoff(initial=0.02, cap=0.05))
    stop = asyncio.Event()
    task = asyncio.create_task(outbox.run(stop))
    outbox.submit([event("queued", "queued|support|1"), event("ringing", "r|1", agent="A/1")])
    await until(lambda: outbox.failures >= 2)
    assert outbox.backlog == 2
    # Redis "comes back": same publisher object, now with a working connection.
    publisher._redis = redis_client
    await until(lambda: outbox.backlog == 0)
    assert [e["event"] for e in await stream(redis_client, ALL_EVENTS_STREAM)] == [
        "queued",
        "ringing",
    ]
    stop.set()
    await asyncio.wait_for(task, 2)
    await down.aclose()


async def _plain_redis(port: int, workdir: Path) -> asyncio.subprocess.Process:
    """A private redis-server without persistence: a restart comes back empty."""
    process = await asyncio.create_subprocess_exec(
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", str(workdir),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip

    async def answers() -> bool:
        async with redis.Redis(port=port, socket_timeout=2) as probe:
            try:
                return bool(await probe.ping())
            except (RedisError, OSError):
                return False

    await until(answers, within_s=30, every_s=0.05)
    return process


async def test_the_leader_publishes_its_recent_events_again_after_redis_restarts_empty(
    tmp_path: Path,
) -> None:
    """Redis without persistence dies and comes back empty: the streams, the
    fingerprints and the lease are gone. The leader takes the lease again and publishes
    what it had published in its window once more (and what came meanwhile), once."""
    port = free_port()
    server = await _plain_redis(port, tmp_path)
    client = redis.Redis(port=port, socket_timeout=5, socket_connect_timeout=2)
    try:
        leadership = Leadership(
            client,
            EventPublisher(client, ttl_s=600),
            "me",
            lease_ttl_s=2.0,
            outbox_backoff=Backoff(initial=0.02, cap=0.2),
        )
        leadership.ami_connected(True)
        stop = asyncio.Event()
        task = asyncio.create_task(leadership.run(stop))
        await until(lambda: leadership.leader, within_s=30)
        leadership.take([event("ringing", f"r|{n}", agent="A/1", data={"n": n}) for n in range(10)])
        await until(lambda: leadership.backlog == 0, within_s=30)

        server.kill()
        await server.wait()
        server = await _plain_redis(port, tmp_path)
        leadership.take(
            [event("ringing", f"r|{n}", agent="A/1", data={"n": n}) for n in range(10, 15)]
        )

        async def all_once() -> bool:
            try:
                got = [e["n"] for e in await stream(client, ALL_EVENTS_STREAM)]
            except (RedisError, OSError):
                return False
            return sorted(got) == list(range(15))

        await until(all_once, within_s=60, every_s=0.1)
        await until(lambda: leadership.leader, within_s=30)
        stop.set()
        await asyncio.wait_for(task, 10)
        assert sorted(e["n"] for e in await stream(client, ALL_EVENTS_STREAM)) == list(range(15))
    finally:
        await client.aclose()
        server.kill()
        await server.wait()


async def test_lease_goes_to_one_instance_and_over_to_another(redis_client: redis.Redis) -> None:
    changes: list[tuple[str, bool]] = []

    def lease(owner: str) -> Lease:
        # The TTL is Redis's own clock: it must be well above any pause a loaded test
        # machine makes between two renewals (here 0.5 s apart).
        return Lease(
            redis_client,
            owner,
            ttl_s=4.0,
            renew_s=0.5,
            on_change=lambda h: changes.append((owner, h)),
        )

    a, b = lease("a"), lease("b")
    assert await a.try_once() and not await b.try_once()
    for _ in range(10):  # a renews for longer than the TTL: b never gets it
        await asyncio.sleep(0.5)
        assert await a.try_once() and not await b.try_once()
    # a dies (stops renewing): b takes over once the key expired, not before.
    assert not await b.try_once()
    took_over = await until(b.try_once, within_s=20)
    assert took_over and await redis_client.get(LEASE_KEY) == b"b"
    # a wakes up: its renewal fails, it knows it lost the lease.
    assert not await a.try_once() and not a.held
    assert changes == [("a", True), ("b", True), ("a", False)]


async def test_lease_waits_for_ami_and_hands_over_when_ami_is_lost(
    redis_client: redis.Redis,
) -> None:
    """The lease's clock is the test's: "short" and "long" do not depend on how fast
    this machine runs the steps (the key's TTL in Redis is far longer than the test)."""
    ami_up = False
    now = [0.0]
    lease = Lease(
        redis_client, "a", ttl_s=30, renew_s=1, eligible=lambda: ami_up, clock=lambda: now[0]
    )
    await lease.step()
    assert not lease.held and await redis_client.get(LEASE_KEY) is None
    ami_up = True
    await lease.step()
    assert lease.held
    ami_up = False
    await lease.step()  # a short AMI reconnect keeps the lease ...
    now[0] += 29
    await lease.step()
    assert lease.held
    now[0] += 1.5  # past a whole TTL without AMI
    await lease.step()  # ... a long one hands it over
    assert not lease.held and await redis_client.get(LEASE_KEY) is None


async def test_clean_shutdown_releases_at_once(redis_client: redis.Redis) -> None:
    lease = Lease(redis_client, "a", ttl_s=30, renew_s=1)
    stop = asyncio.Event()
    task = asyncio.create_task(lease.run(stop))
    await until(lambda: lease.held)
    stop.set()
    await asyncio.wait_for(task, 2)
    assert await redis_client.get(LEASE_KEY) is None


async def test_leadership_publishes_what_is_pending_before_it_releases_the_lease(
    redis_client: redis.Redis,
) -> None:
    """A clean shutdown: the outbox is drained under the lease (the fencing check lets
    it through), and only then is the lease given up for a standby to take."""
    leadership = Leadership(redis_client, EventPublisher(redis_client, ttl_s=600), "me")
    stop = asyncio.Event()
    task = asyncio.create_task(leadership.run(stop))
    leadership.take([event("queued", "queued|support|1")])  # a standby keeps it ...
    assert leadership.standby_backlog == 1 and not leadership.leader
    leadership.ami_connected(True)  # ... until AMI is up and the lease is ours
    await until(lambda: leadership.leader)
    leadership.take([event("ringing", "r|1", agent="A/1")])
    stop.set()
    await asyncio.wait_for(task, 5)
    assert [e["event"] for e in await stream(redis_client, ALL_EVENTS_STREAM)] == [
        "queued",
        "ringing",
    ]
    assert not leadership.leader and await redis_client.get(LEASE_KEY) is None


async def test_streams_keep_a_time_not_a_count(redis_client: redis.Redis) -> None:
    """Retention is a time: 15,000 events from two hours ago (written here with their
    ids of then) are trimmed by the next events, and 15,000 new ones (more than the old
    10,000-entry cap) all stay; the streams expire a day after their last entry."""
    await redis_client.set(LEASE_KEY, "me")
    now = await redis_now(redis_client)
    publisher = EventPublisher(redis_client, ttl_s=86_400, retention_s=3600, clock=lambda: now)
    then_ms = int((now - 7200) * 1000)
    for key in (ALL_EVENTS_STREAM, agent_stream("PJSIP/2001")):
        async with redis_client.pipeline(transaction=False) as pipe:
            for n in range(15_000):
                pipe.xadd(key, {"e": "{}"}, id=f"{then_ms}-{n + 1}")
            await pipe.execute()
    events = [event("ringing", f"ringing|{n}", agent="PJSIP/2001") for n in range(15_000)]
    for start in range(0, len(events), 1_000):
        await publisher.publish_many(events[start : start + 1_000], "me")
    for key in (ALL_EVENTS_STREAM, agent_stream("PJSIP/2001")):
        # Approximate: whole internal nodes (100 entries) go, so the one where old
        # and new meet may keep a few old entries.
        assert 15_000 <= await redis_client.xlen(key) < 15_100, key
        assert 86_390_000 < await redis_client.pttl(key) <= 86_400_000  # the call data's
    assert [e["event"] for e in (await stream(redis_client, ALL_EVENTS_STREAM))[-1:]] == ["ringing"]


async def redis_now(client: redis.Redis) -> float:
    seconds, micros = await client.time()
    return seconds + micros / 1_000_000
