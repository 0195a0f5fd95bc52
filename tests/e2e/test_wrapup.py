"""Wrap-up owned by cti, on the real Asterisk: SIPp callers through FastAGI to the support
queue (members 2001, 2002, 2003, strategy linear: 2001 is always tried first), SIPp agents.

Daemons of the test's own (``cti serve`` subprocesses) on a database of their own, where
support has ``wrapup_s`` > 0, and a private Redis; the dialplan's FastAGI address points
at the first of them, so the routed call's data is in that Redis. The session's daemon
(wrap-up 0 in its database) only watches. Everything asserted about Asterisk is read
from Asterisk: ``QueueStatus`` for the member's pause and its reason, ``AgentCalled``
for who rings.

* A answers and hangs up -> A is paused for ``wrap-up``; the next call rings B; A saves
  the disposition through the sidebar's API -> A is unpaused and rings again;
* the same with the time running out;
* A paused by choice during the call stays paused (with their reason) after it; A
  paused for lunch in one queue before a call of another keeps that pause;
* the leader is killed (SIGKILL) during A's wrap-up; the other daemon unpauses A on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as redis
from aiohttp import ClientSession

from cti.calls.lease import LEASE_KEY
from cti.screenpop.agents import add_agent
from tests.e2e.ami import Ami, Message, call_id_of, is_event
from tests.e2e.conftest import E2ESetup, daemon_env, demo_database
from tests.e2e.stack import Daemon, free_port
from tests.waiting import until

pytestmark = pytest.mark.e2e

GOLD = ("2120000002", "5550100", "", "")  # -> support, priority 10
A, B, C = "PJSIP/2001", "PJSIP/2002", "PJSIP/2003"
PASSWORD = "wrap-up e2e password"
LEASE_TTL_S = 3


@pytest.fixture
async def wrapup_db(template_db: str) -> AsyncIterator[str]:
    async def agent_2001(conn: asyncpg.Connection) -> None:
        await add_agent(conn, "agent2001", A, PASSWORD, replace=True)

    async with demo_database(template_db, "cti_e2e_wrapup", 20, agent_2001) as url:
        yield url


@contextlib.asynccontextmanager
async def wrapup_daemons(
    testbed: E2ESetup,
    workdir: Path,
    database_url: str,
    redis_url: str,
    wrapup_s: int,
    *names: str,
) -> AsyncIterator[list[tuple[Daemon, int]]]:
    """(daemon, HTTP port) per name, support's wrap-up set to ``wrapup_s`` first."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE queues SET wrapup_s = $1 WHERE name = 'support'", wrapup_s)
    finally:
        await conn.close()
    started: list[tuple[Daemon, int]] = []
    try:
        for name in names:
            cache, http = workdir / f"{name}-plan.toml", free_port()
            env = daemon_env(testbed, CTI_REDIS_URL=redis_url, CTI_INSTANCE_ID=name) | {
                "CTI_DATABASE_URL": database_url,
                "CTI_PLAN_CACHE": str(cache),
                "CTI_AMI_LEASE_TTL_S": str(LEASE_TTL_S),
                "CTI_SESSION_SECRET": secrets.token_hex(32),
                "CTI_HTTP_BIND": f"127.0.0.1:{http}",
            }
            daemon = await Daemon.start(
                port=free_port(), env=env, log=workdir / f"{name}.log", ready_file=cache
            )
            started.append((daemon, http))
        yield started
    finally:
        for daemon, _ in started:
            await daemon.stop()


async def member(ami: Ami, agent: str, queue: str = "support") -> Message:
    for item in await ami.list_action("QueueStatus", Queue=queue):
        if item.get("Event") == "QueueMember" and item.get("StateInterface") == agent:
            return item
    raise AssertionError(f"{agent} is not a member of {queue}")


def paused_for(reason: str | None):
    """Condition on a QueueMember: paused with ``reason`` (None: not paused)."""

    def check(item: Message) -> bool:
        if reason is None:
            return item.get("Paused") == "0"
        return item.get("Paused") == "1" and item.get("PausedReason") == reason

    return check


async def wait_member(ami: Ami, agent: str, condition, within_s: float = 20) -> Message:
    async def probe() -> Message | None:
        item = await member(ami, agent)
        return item if condition(item) else None

    return await until(probe, within_s=within_s, every_s=0.1)


async def set_pause(ami: Ami, agent: str, paused: bool, reason: str = "e2e", **queue: str):
    reply = await ami.action(
        "QueuePause",
        Interface=agent,
        Paused="true" if paused else "false",
        Reason=reason,
        **queue,
    )
    assert reply.get("Response") == "Success", reply


@pytest.fixture
async def quiet_queue(ami: Ami) -> AsyncIterator[None]:
    """Only A and B take support's calls (C paused); everyone unpaused afterwards."""
    await set_pause(ami, A, False)
    await set_pause(ami, B, False)
    await set_pause(ami, C, True, Queue="support")
    yield
    for agent in (A, B, C):
        await set_pause(ami, agent, False)


async def answered_by(ami: Ami, since: int, agent: str) -> tuple[Message, float]:
    """The AgentConnect of ``agent`` after ``since`` and the Timestamp of its AgentComplete."""
    connect = await ami.wait_event(
        is_event("AgentConnect", Interface=agent), since=since, within_s=20, what="AgentConnect"
    )
    complete = await ami.wait_event(
        is_event("AgentComplete", Interface=agent), since=since, within_s=30, what="AgentComplete"
    )
    return connect, float(complete.get("Timestamp") or time.time())


def rang(ami: Ami, since: int, agent: str) -> bool:
    return bool(ami.find(is_event("AgentCalled", Interface=agent), since=since))


async def save_disposition(http_port: int, call_id: str) -> None:
    async with ClientSession(f"http://127.0.0.1:{http_port}") as http:
        login = {"username": "agent2001", "password": PASSWORD}
        async with http.post("/api/login", json=login) as response:
            assert response.status == 200, await response.text()
            token = (await response.json())["token"]
        auth = {"Authorization": f"Bearer {token}"}
        async with http.get("/api/me", headers=auth) as response:
            me = await response.json()
            assert me["agent_state"]["state"] == "wrap_up", me
            assert me["agent_state"]["wrapup_until"] > time.time()
        async with http.get(f"/api/calls/{call_id}", headers=auth) as response:
            assert response.status == 200, await response.text()
            version = (await response.json())["call"]["version"]
        edit = {"version": version, "change": {"disposition": "resolved"}}
        async with http.patch(f"/api/calls/{call_id}", json=edit, headers=auth) as response:
            assert response.status == 200, await response.text()


async def test_wrap_up_holds_a_until_the_disposition(
    sandbox, ami, agents, place_calls, agi_target, quiet_queue, wrapup_db, private_redis, tmp_path
):
    async with wrapup_daemons(sandbox, tmp_path, wrapup_db, private_redis.url, 120, "w1") as [
        (daemon, http)
    ]:
        await agi_target(daemon.addr)
        await agents.start(2001, 2002)
        since = ami.mark()
        first = await place_calls([GOLD], hold_ms=2000)
        join = await ami.wait_event(is_event("QueueCallerJoin", Queue="support"), since=since)
        await answered_by(ami, since, A)
        await first.wait(30)
        call_id = call_id_of(join)
        assert uuid.UUID(call_id)
        item = await wait_member(ami, A, paused_for("wrap-up"))
        assert item["PausedReason"] == "wrap-up"

        since = ami.mark()
        second = await place_calls([GOLD], hold_ms=1000)
        await answered_by(ami, since, B)
        assert not rang(ami, since, A)
        await second.wait(30)

        await save_disposition(http, call_id)
        await wait_member(ami, A, paused_for(None), within_s=10)

        since = ami.mark()
        await place_calls([GOLD], hold_ms=1000)
        await answered_by(ami, since, A)


async def test_wrap_up_ends_when_its_time_runs_out(
    sandbox, ami, agents, place_calls, agi_target, quiet_queue, wrapup_db, private_redis, tmp_path
):
    wrapup_s = 4
    async with wrapup_daemons(sandbox, tmp_path, wrapup_db, private_redis.url, wrapup_s, "w1") as [
        (daemon, _)
    ]:
        await agi_target(daemon.addr)
        await agents.start(2001, 2002)
        since = ami.mark()
        await place_calls([GOLD], hold_ms=2000)
        _, ended = await answered_by(ami, since, A)
        await wait_member(ami, A, paused_for("wrap-up"))
        await wait_member(ami, A, paused_for(None), within_s=wrapup_s + 15)
        unpaused = time.time()
        assert ended + wrapup_s - 0.5 <= unpaused < ended + wrapup_s + 5


async def test_an_agent_paused_during_the_call_stays_paused(
    sandbox, ami, agents, place_calls, agi_target, quiet_queue, wrapup_db, private_redis, tmp_path
):
    wrapup_s = 3
    async with wrapup_daemons(sandbox, tmp_path, wrapup_db, private_redis.url, wrapup_s, "w1") as [
        (daemon, _)
    ]:
        await agi_target(daemon.addr)
        await agents.start(2001, 2002)
        since = ami.mark()
        await place_calls([GOLD], hold_ms=4000)
        await ami.wait_event(is_event("AgentConnect", Interface=A), since=since, within_s=20)
        await set_pause(ami, A, True, "lunch")  # the agent's Pause, mid-call
        _, ended = await answered_by(ami, since, A)
        # Past the wrap-up's end (and a few ticks): still paused, for lunch.
        while time.time() < ended + wrapup_s + 3:
            item = await member(ami, A)
            assert paused_for("lunch")(item), item
            await asyncio.sleep(0.5)


async def test_the_leader_killed_during_wrap_up_the_other_unpauses_on_time(
    sandbox, ami, agents, place_calls, agi_target, quiet_queue, wrapup_db, private_redis, tmp_path
):
    wrapup_s = 8
    async with wrapup_daemons(
        sandbox, tmp_path, wrapup_db, private_redis.url, wrapup_s, "w1", "w2"
    ) as started:
        client = redis.from_url(private_redis.url)
        try:
            await until(lambda: client.get(LEASE_KEY), within_s=20)
            await agi_target(started[0][0].addr)
            await agents.start(2001, 2002)
            since = ami.mark()
            await place_calls([GOLD], hold_ms=2000)
            _, ended = await answered_by(ami, since, A)
            await wait_member(ami, A, paused_for("wrap-up"))
            owner = (await client.get(LEASE_KEY)).decode()
            leader = started[0][0] if owner == "w1" else started[1][0]
            os.killpg(leader.proc.pid, signal.SIGKILL)
            await wait_member(ami, A, paused_for(None), within_s=wrapup_s + 20)
            unpaused = time.time()
            # The lease of the dead leader runs out (LEASE_TTL_S) well before the deadline.
            assert ended + wrapup_s - 0.5 <= unpaused < ended + wrapup_s + 5
        finally:
            await client.aclose()


async def test_a_queue_paused_by_choice_before_the_call_stays_paused(
    sandbox, ami, agents, place_calls, agi_target, quiet_queue, wrapup_db, private_redis, tmp_path
):
    """A paused for lunch in ``default`` before a ``support`` call: the wrap-up pauses
    (and then unpauses) ``support`` only; ``default`` keeps A's own reason throughout."""
    wrapup_s = 4
    async with wrapup_daemons(sandbox, tmp_path, wrapup_db, private_redis.url, wrapup_s, "w1") as [
        (daemon, _)
    ]:
        await agi_target(daemon.addr)
        await agents.start(2001, 2002)
        await set_pause(ami, A, True, "lunch", Queue="default")
        since = ami.mark()
        await place_calls([GOLD], hold_ms=2000)
        _, ended = await answered_by(ami, since, A)
        await wait_member(ami, A, paused_for("wrap-up"))
        lunch = await member(ami, A, "default")
        assert paused_for("lunch")(lunch), lunch
        await wait_member(ami, A, paused_for(None), within_s=wrapup_s + 15)
        assert time.time() >= ended + wrapup_s - 0.5
        lunch = await member(ami, A, "default")
        assert paused_for("lunch")(lunch), lunch
