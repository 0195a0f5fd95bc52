"""Agents on several PBXes (issue 12) through real sockets, Redis and PostgreSQL, with
one fake Asterisk Manager per PBX (tests/fakes/ami_server.py):

* wrap-up: the same recorded call on PBX a and on PBX b puts ``PJSIP/2001`` and
  ``PJSIP/2001@b`` in wrap-up, each paused on its own PBX with the interface as that
  PBX names it; Redis keys them apart; a disposition on b ends b's only;
* supervisor actions: a pause of ``PJSIP/2001@b`` goes to b's AMI as
  ``Interface: PJSIP/2001``, the audit row naming ``PJSIP/2001@b``; listening from a
  phone on another PBX is refused (``other_pbx``, 409), from one on b it rings into
  ChanSpy on b;
* the wallboard has its own lease: of two engines one counts, and the other takes over
  where it left off.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
import redis.asyncio as redis

from cti.agents.store import STATE_KEY, AgentStore
from cti.ami.client import AmiClient
from cti.ami.protocol import Message
from cti.calls.control import CallControl, PbxLine
from cti.calls.effects import AgentConnected
from cti.calls.events import CallEvent
from cti.calls.lease import Lease
from cti.calls.publisher import EventPublisher
from cti.calls.sink import CallModelSink
from cti.calls.tracker import model_for
from cti.config import Config
from cti.pbx import Pbx
from cti.screenpop.agents import add_agent
from cti.screenpop.ws import reader_factory
from cti.wallboard.engine import WallboardEngine
from cti.wallboard.figures import Figures
from cti.wallboard.store import LEASE_KEY as WALLBOARD_LEASE
from cti.wallboard.store import WallboardStore
from tests.fakes.ami_server import FakeAmi
from tests.integration.conftest import RunningDaemon, start_daemon
from tests.integration.test_screenpop_api import Stack, running_stack
from tests.unit import ami_replay
from tests.waiting import until

WAIT_S = 20
WRAPUP_S = 8
A2001, B2001 = "PJSIP/2001", "PJSIP/2001@b"


def pbxes(a: int, b: int) -> tuple[Pbx, Pbx]:
    return (
        Pbx("a", "127.0.0.1", a, "cti", "s3cret", home=True),
        Pbx("b", "127.0.0.1", b, "cti", "s3cret", home=False),
    )


def member_status(queue: str) -> dict[str, str]:
    return {
        "Queue": queue,
        "Name": "Agent 2001",
        "Location": "PJSIP/2001",
        "StateInterface": "PJSIP/2001",
        "Membership": "static",
        "Status": "1",
        "Paused": "0",
        "PausedReason": "",
    }


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeAmi, FakeAmi]]:
    roster = [("QueueMember", member_status(q)) for q in ("default", "support")]
    a = await FakeAmi(queue_status=roster).start()
    b = await FakeAmi(queue_status=roster).start()
    for fake in (a, b):
        for action in ("QueuePause", "QueueAdd", "Originate"):
            fake.responses[action] = {"Response": "Success", "Message": "ok"}
    yield a, b
    await a.close()
    await b.close()


def pauses(fake: FakeAmi, paused: str) -> list[tuple[str | None, str | None, str | None]]:
    return sorted(
        (m.get("Interface"), m.get("Queue"), m.get("Reason"))
        for m in fake.actions("QueuePause")
        if m.get("Paused") == paused
    )


def answered_call(tag: str) -> tuple[bytes, str]:
    """The recorded answered call renamed to ``tag``, its last event now; its call id."""
    blocks = ami_replay.renamed_events("answered_call", tag)
    stamps = [t for b in blocks if (t := ami_replay.block_timestamp(b)) is not None]
    blocks = ami_replay.renamed_events("answered_call", tag, time.time() - max(stamps))
    (call_id,) = {
        line.split(b"=", 1)[1].decode()
        for b in blocks
        for line in b.split(b"\r\n")
        if line.startswith(b"ChanVariable: CTI_CALL_ID=") and line != b"ChanVariable: CTI_CALL_ID="
    }
    return b"".join(blocks), call_id


# -- wrap-up, through a real daemon following two PBXes ------------------------------------
async def test_wrap_up_on_each_pbx_pauses_there_and_never_collides(
    config: Config, fakes: tuple[FakeAmi, FakeAmi], redis_client: redis.Redis, db
) -> None:
    fake_a, fake_b = fakes
    await db.execute("UPDATE queues SET wrapup_s = $1 WHERE name = 'support'", WRAPUP_S)
    two = dataclasses.replace(
        config,
        ami_enabled=True,
        pbxes=pbxes(fake_a.port, fake_b.port),
        ami_lease_ttl_s=2,
        instance_id="one",
    )
    running: RunningDaemon = await start_daemon(two)
    try:
        calls = running.daemon.parts.calls
        assert calls is not None
        await until(lambda: all(f.leadership and f.leadership.leader for f in calls.pbxes))
        await until(
            lambda: all(f.agents and f.agents.plan.wrapup_s("support") for f in calls.pbxes)
        )
        on_a, _ = answered_call("wa")
        on_b, call_b = answered_call("wb")
        await fake_a.push(on_a)
        await fake_b.push(on_b)
        # Each PBX pauses its own 2001 in both its queues, named as that PBX names it.
        expected = [("PJSIP/2001", q, "wrap-up") for q in ("default", "support")]
        await until(lambda: len(pauses(fake_a, "true")) == 2 and len(pauses(fake_b, "true")) == 2)
        assert pauses(fake_a, "true") == pauses(fake_b, "true") == expected
        store = AgentStore(redis_client)
        records = await until(lambda: _when(store.wrap_ups(), lambda r: {A2001, B2001} <= set(r)))
        assert records[B2001][0].call_id == call_b
        assert set(await store.wrap_ups(lambda agent: agent.endswith("@b"))) == {B2001}
        states = await until(lambda: _when(store.read_states(), lambda s: {A2001, B2001} <= set(s)))
        assert (states[A2001]["pbx"], states[B2001]["pbx"]) == ("a", "b")
        # The disposition of b's call ends b's wrap-up only, unpaused on b only.
        assert await store.disposition_saved(B2001, call_b) is True
        await until(lambda: len(pauses(fake_b, "false")) == 2)
        assert pauses(fake_b, "false") == [("PJSIP/2001", q, None) for q in ("default", "support")]
        assert pauses(fake_a, "false") == []
        assert set(await until(lambda: _when(store.wrap_ups(), lambda r: B2001 not in r))) == {
            A2001
        }
        # The wallboard's own lease: this instance counts, whichever PBXes it leads.
        assert await until(lambda: redis_client.get(WALLBOARD_LEASE)) == b"one"
    finally:
        await running.daemon.shutdown(writer_grace_s=2)


async def _when(read: Any, check: Any) -> Any:
    value = await read
    return value if check(value) else None


async def test_a_new_leader_of_one_pbx_replaces_only_its_own_agents(
    redis_client: redis.Redis,
) -> None:
    from cti.agents.state import AgentBoard

    home, b = (
        AgentBoard(pbx=pbxes(1, 2)[0], clock=lambda: 1.0),
        AgentBoard(pbx=pbxes(1, 2)[1], clock=lambda: 1.0),
    )
    for board in (home, b):
        board.apply(_member("PJSIP/2001"))
        board.apply(_member("PJSIP/2002"))
    store = AgentStore(redis_client)
    await store.write_states(home.snapshot().values(), replace=home.owns)
    await store.write_states(b.snapshot().values(), replace=b.owns)
    assert set(await store.read_states()) == {
        "PJSIP/2001",
        "PJSIP/2002",
        "PJSIP/2001@b",
        "PJSIP/2002@b",
    }
    # b's new leader knows 2001@b only now: 2002@b goes, a's agents stay.
    only = {k: v for k, v in b.snapshot().items() if k == "PJSIP/2001@b"}
    await store.write_states(only.values(), replace=b.owns)
    assert set(await store.read_states()) == {"PJSIP/2001", "PJSIP/2002", "PJSIP/2001@b"}
    assert await redis_client.hlen(STATE_KEY) == 3


def _member(device: str) -> Message:
    from cti.ami.protocol import MessageKind

    fields = {"queue": "support", "interface": device, "status": "1", "paused": "0"}
    return Message(MessageKind.EVENT, "QueueMemberStatus", fields)


# -- supervisor actions, over HTTP, to the agent's PBX ----------------------------------------
@contextlib.asynccontextmanager
async def two_pbx_control(
    fake_a: FakeAmi, fake_b: FakeAmi
) -> AsyncIterator[tuple[CallControl, AgentConnected]]:
    """Call control over a and b; on b, 2001 (``PJSIP/2001@b``) talks on the recorded
    call: (control, that AgentConnected)."""
    sinks, clients = [], []
    stop = asyncio.Event()
    tasks = []
    for pbx, fake in zip(pbxes(fake_a.port, fake_b.port), (fake_a, fake_b), strict=True):
        sink = CallModelSink(model_for(pbx))
        client = AmiClient("127.0.0.1", fake.port, "cti", "s3cret", events_sink=sink)
        tasks.append(asyncio.create_task(client.run(stop)))
        sinks.append(sink)
        clients.append(client)
    try:
        await until(lambda: all(s.up for s in sinks))
        connected: list[AgentConnected] = []
        for msg in ami_replay.parse(ami_replay.load("answered_call")):
            sinks[1].apply(msg)
            connected = [e for e in sinks[1].effects if isinstance(e, AgentConnected)]
            if connected:
                break
        assert connected and connected[0].agent == B2001
        lines = [
            PbxLine(name, client, sink.model)
            for name, client, sink in zip(("a", "b"), clients, sinks, strict=True)
        ]
        yield CallControl.over(lines), connected[0]
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)


@pytest.fixture
async def on_b(
    database_url: str, redis_client: redis.Redis, fakes: tuple[FakeAmi, FakeAmi]
) -> AsyncIterator[tuple[Stack, FakeAmi, FakeAmi, AgentConnected]]:
    """The stack's supervisor boss (phone on a), dora (``PJSIP/2001@b``) talking on b,
    and bea, a supervisor whose phone is on b (``PJSIP/2009@b``), logged in."""
    fake_a, fake_b = fakes
    async with (
        two_pbx_control(fake_a, fake_b) as (control, connected),
        running_stack(database_url, redis_client, control=control) as stack,
    ):
        await add_agent(stack.pool, "dora", B2001, "dora-password", display_name="Dora")
        await add_agent(stack.pool, "bea", "PJSIP/2009@b", "bea-password", role="supervisor")
        status, body = await stack.request(
            "POST", "/api/login", json={"username": "bea", "password": "bea-password"}
        )
        assert status == 200, body
        stack.tokens["bea"] = body["token"]
        yield stack, fake_a, fake_b, connected


async def audit(pool: asyncpg.Pool) -> list[tuple[Any, ...]]:
    rows = await pool.fetch(
        "SELECT supervisor, action, target_agent, device, result FROM supervisor_audit ORDER BY id"
    )
    return [tuple(r) for r in rows]


async def test_a_supervisor_pauses_an_agent_on_b_through_bs_ami(on_b) -> None:
    stack, fake_a, fake_b, _connected = on_b
    status, answer = await stack.request(
        "POST",
        "/api/supervisor/agents/dora/pause",
        "boss",
        json={"paused": True, "reason": "lunch"},
    )
    assert (status, answer) == (200, {"paused": True})
    status, _ = await stack.request(
        "POST",
        "/api/supervisor/agents/dora/queue",
        "boss",
        json={"queue": "support", "logged_in": True},
    )
    assert status == 200
    assert pauses(fake_b, "true") == [("PJSIP/2001", None, "lunch")]
    [added] = fake_b.actions("QueueAdd")
    assert (added.get("Interface"), added.get("Queue")) == ("PJSIP/2001", "support")
    assert fake_a.actions("QueuePause") == [] and fake_a.actions("QueueAdd") == []
    assert await audit(stack.pool) == [
        ("boss", "pause", "dora", B2001, "ok"),
        ("boss", "queue_login", "dora", B2001, "ok"),
    ]
    status, body = await stack.request("GET", "/api/supervisor/audit", "boss")
    assert status == 200 and body["entries"][0]["device"] == B2001


async def test_listening_across_pbxes_is_refused_and_on_the_same_pbx_rings_into_chanspy(
    on_b,
) -> None:
    stack, fake_a, fake_b, connected = on_b
    status, body = await stack.request(
        "POST", "/api/supervisor/agents/dora/spy", "boss", json={"mode": "listen"}
    )
    assert (status, body["error"]) == (409, "other_pbx")
    assert "ChanSpy" in body["message"] and "'a'" in body["message"]
    assert fake_a.actions("Originate") == fake_b.actions("Originate") == []
    status, body = await stack.request(
        "POST", "/api/supervisor/agents/dora/spy", "bea", json={"mode": "listen"}
    )
    assert (status, body) == (202, {"mode": "listen", "call_key": connected.call_id})
    [originate] = fake_b.actions("Originate")
    assert originate.get("Channel") == "PJSIP/2009"
    assert originate.get("Data") == f"{connected.channel},qES"
    assert fake_a.actions("Originate") == []
    assert await audit(stack.pool) == [
        ("boss", "listen", "dora", B2001, "other_pbx"),
        ("bea", "listen", "dora", B2001, "ok"),
    ]


# -- the wallboard's own lease --------------------------------------------------------------
@contextlib.asynccontextmanager
async def instance(client: redis.Redis, owner: str) -> AsyncIterator[WallboardEngine]:
    """One instance's wallboard: its lease (as cti.app.wallboard runs it) and engine."""
    lease = Lease(client, owner, key=WALLBOARD_LEASE, ttl_s=2.0, renew_s=0.4)
    engine = WallboardEngine(
        WallboardStore(client, lease_key=WALLBOARD_LEASE),
        reader_factory(client, 300),
        owner,
        Figures(ZoneInfo("UTC")),
        is_leader=lambda: lease.held,
        flush_s=0.01,
        state_every_s=0.05,
        block_ms=300,
    )
    stop = asyncio.Event()
    tasks = [asyncio.create_task(lease.run(stop)), asyncio.create_task(engine.run(stop))]
    try:
        yield engine
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)


def queued(key: str, at: float, pbx: str) -> CallEvent:
    return CallEvent(
        kind="queued",
        call_key=key,
        call_id=key,
        linkedid="1795410950.10",
        fingerprint=f"queued|{uuid.uuid4().hex}",
        at=at,
        pbx=pbx,
        data={"queue": "support", "tier": "gold", "rule": "r1"},
    )


async def test_of_two_wallboard_engines_one_counts_every_pbxs_events_once(
    redis_client: redis.Redis,
) -> None:
    publisher = EventPublisher(redis_client, ttl_s=3600)
    now = time.time()
    events = [queued(f"c{i}", now + i, "a" if i % 2 else "b") for i in range(6)]
    # Each PBX's leader publishes its own events (fenced by its own PBX lease).
    for pbx in ("a", "b"):
        await redis_client.set(f"cti:ami:leader:{pbx}", f"leader-{pbx}")
        mine = [e for e in events if e.pbx == pbx]
        await publisher.publish_many(mine, f"leader-{pbx}", lease_key=f"cti:ami:leader:{pbx}")
    async with instance(redis_client, "one") as one, instance(redis_client, "two") as two:
        await until(lambda: one.leading or two.leading, WAIT_S)
        leader, other = (one, two) if one.leading else (two, one)
        await until(lambda: leader.events == 6, WAIT_S)
        await asyncio.sleep(0.5)  # the other stays idle meanwhile
        assert (other.events, other.leading) == (0, False)
        assert leader.figures.queue_view("support", now + 6)["today"]["offered"] == 6
        assert await redis_client.get(WALLBOARD_LEASE) == leader.owner.encode()
    # Both gone; a third instance continues from the saved counts and cursor.
    await publisher.publish_many(
        [queued("c9", now + 9, "b")], "leader-b", lease_key="cti:ami:leader:b"
    )
    async with instance(redis_client, "three") as three:
        await until(lambda: three.events == 1, WAIT_S)
        await until(lambda: three.frames >= 1, WAIT_S)
        assert three.figures.queue_view("support", now + 9)["today"]["offered"] == 7
