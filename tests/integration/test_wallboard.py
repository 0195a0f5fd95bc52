"""The wallboard end to end over real sockets and real Redis: the leader's engine reads
the published call events, saves its counts and publishes frames; the web process's
relay pushes them to every open wallboard; supervisors only."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
import redis.asyncio as redis

from cti.calls.events import CallEvent
from cti.screenpop.ws import reader_factory
from cti.wallboard.engine import WallboardEngine
from cti.wallboard.figures import Figures
from cti.wallboard.store import LEASE_KEY, STATE_KEY, NotLeader, WallboardStore
from tests.integration.test_screenpop_api import ALICE, OWNER, Stack, running_stack
from tests.waiting import until

WAIT_S = 20
UTC = ZoneInfo("UTC")


@pytest.fixture
async def stack(database_url: str, redis_client: redis.Redis) -> AsyncIterator[Stack]:
    async with running_stack(database_url, redis_client) as stack:
        yield stack


@contextlib.asynccontextmanager
async def engine_running(client: redis.Redis) -> AsyncIterator[WallboardEngine]:
    await client.set(LEASE_KEY, OWNER)  # the wallboard's own lease
    engine = WallboardEngine(
        WallboardStore(client),
        reader_factory(client, 500),
        OWNER,
        Figures(UTC),
        is_leader=lambda: True,
        flush_s=0.01,
        state_every_s=0.05,
        block_ms=500,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(engine.run(stop))
    try:
        await until(lambda: engine.leading, WAIT_S)
        yield engine
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_S)


def call_event(kind: str, key: str, at: float, **data: Any) -> CallEvent:
    agent = data.pop("agent", None)
    return CallEvent(
        kind=kind,
        call_key=key,
        call_id=key,
        linkedid="1795410950.10",
        fingerprint=f"{kind}|{uuid.uuid4().hex}",
        at=at,
        agent=agent,
        data=data,
    )


def agent_state(agent: str, at: float, state: str) -> CallEvent:
    """As cti.agents.news.agent_event makes it."""
    member = {"queue": "support", "state": state, "reason": None, "since": at, "paused": False}
    return dataclasses.replace(
        call_event("agent_state", f"agent:{agent}", at, agent=agent),
        call_id=None,
        data={"state": state, "reason": None, "since": at, "memberships": [member]},
    )


def queued(key: str, at: float, tier: str = "gold") -> CallEvent:
    return call_event("queued", key, at, queue="support", tier=tier, rule="r1")


def connected(key: str, at: float) -> CallEvent:
    return call_event("connected", key, at, queue="support", agent=ALICE)


async def frame_where(
    ws: aiohttp.ClientWebSocketResponse, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    async with asyncio.timeout(WAIT_S):
        while True:
            frame = await ws.receive_json()
            if check(frame):
                return frame


def support(frame: dict[str, Any]) -> dict[str, Any]:
    body = frame["snapshot"] if frame["type"] == "snapshot" else frame
    return body.get("queues", {}).get("support") or {}


async def test_agents_are_refused_the_wallboard(stack: Stack) -> None:
    status, body = await stack.request("GET", "/api/wallboard", "alice")
    assert (status, body["error"]) == (403, "forbidden")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await stack.client.ws_connect("/ws/wallboard", params={"token": stack.tokens["alice"]})
    assert refused.value.status == 403
    status, _ = await stack.request("GET", "/api/wallboard")
    assert status == 401


async def test_a_supervisor_gets_the_snapshot_then_each_change(stack: Stack) -> None:
    now = time.time()
    async with engine_running(stack.redis):
        await stack.publish(agent_state(ALICE, now, "available"))
        ws = await stack.client.ws_connect("/ws/wallboard", params={"token": stack.tokens["boss"]})
        first = await ws.receive_json(timeout=WAIT_S)
        assert first["type"] == "snapshot" and "Service level" in first["snapshot"]["formula"]
        second = await stack.client.ws_connect(
            "/ws/wallboard", params={"token": stack.tokens["boss"]}
        )
        await second.receive_json(timeout=WAIT_S)
        await stack.publish(queued("c1", now), queued("c2", now + 1, tier="bronze"))
        frame = await frame_where(ws, lambda f: support(f).get("waiting") == 2)
        assert support(frame)["oldest_wait_since"] == pytest.approx(now)
        assert support(frame)["tiers"]["bronze"]["waiting"] == 1
        await stack.publish(connected("c1", now + 3))
        frame = await frame_where(ws, lambda f: support(f).get("today", {}).get("answered") == 1)
        assert frame["type"] == "wallboard"
        assert support(frame)["today"]["service_level"] == 1.0
        assert support(frame)["agents"]["available"] == 1
        assert frame["agents"][ALICE]["call"]["tier"] == "gold"
        # The other wallboard got the very same frames.
        same = await frame_where(second, lambda f: f.get("seq") == frame["seq"])
        assert same == frame
        status, body = await stack.request("GET", "/api/wallboard", "boss")
        assert status == 200
        assert body["seq"] >= frame["seq"]
        assert body["queues"]["support"]["today"]["answered"] == 1
        assert body["agents"][ALICE]["handled_today"] == 1
        assert {"day", "timezone", "formula", "queues", "agents"} <= set(body)
        metrics = await (await stack.client.get("/metrics")).text()
        assert 'cti_wallboard_waiting{queue="support"} 1.0' in metrics
        assert 'cti_wallboard_service_level{period="today",queue="support"} 1.0' in metrics
        await ws.close()
        await second.close()


async def test_a_new_leader_continues_the_counts_without_a_reset(stack: Stack) -> None:
    now = time.time()
    async with engine_running(stack.redis) as first:
        await stack.publish(queued("c1", now), connected("c1", now + 2), queued("c2", now + 3))
        await until(lambda: first.events == 3, WAIT_S)
    assert await stack.redis.exists(STATE_KEY)
    # The old leader is gone; events it never counted are in the stream already.
    await stack.publish(call_event("abandoned", "c2", now + 30, queue="support"))
    async with engine_running(stack.redis) as second:
        await until(lambda: second.events == 1, WAIT_S)
        await until(lambda: second.frames >= 1, WAIT_S)
        view = second.figures.queue_view("support", now + 31)
    today = view["today"]
    assert (today["offered"], today["answered"], today["abandoned"]) == (2, 1, 1)
    assert view["waiting"] == 0


async def test_a_former_leader_cannot_write(stack: Stack) -> None:
    store = WallboardStore(stack.redis)
    await stack.redis.set(LEASE_KEY, "someone-else")
    with pytest.raises(NotLeader):
        await store.save(OWNER, meta={"seq": 9}, queues={}, agents={}, frame="{}")
    assert await store.snapshot() is None
