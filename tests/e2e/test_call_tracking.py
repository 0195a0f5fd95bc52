"""Attached data follows the call across transfers, through the real Asterisk.

A SIPp caller is routed to support and answered by agent A (2001). A writes a note; A
blind-transfers the caller to the sales queue and agent B (2004) answers; B
attended-transfers to agent C (2003), who answers, and B hangs up to complete it. At each
step the daemon (``cti serve`` following AMI) must have told the agent's event stream in
Redis (ringing, connected, for this call id), and the agent reading the call's data must
see the route's data and every earlier note. Then the timeline in PostgreSQL must tell
the same story. The same again with the daemon's Redis restarted mid-call (after A's
note): nothing is lost, because every version of the data is in PostgreSQL too.

The transfers are sent the way the sidebar will send them: :class:`CallControl` over a
second AMI connection with its own call model (any daemon instance can do it). A's note
goes through :class:`CallDataService` (store + ``data_changed`` event), as the sidebar's
API will.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as redis

from cti.ami import AmiClient, event_filter
from cti.batch_writer import BatchWriter
from cti.calldata.history import history_batch_writer
from cti.calldata.service import CallDataService
from cti.calldata.store import CallDataStore
from cti.calls.control import CallControl
from cti.calls.model import CALL_CENTRE_EVENTS
from cti.calls.publisher import EventPublisher, agent_stream
from cti.calls.sink import CallModelSink
from tests.e2e.ami import Ami, answered_dial
from tests.e2e.conftest import AMI_PORT, AMI_USER, E2ESetup, daemon_env
from tests.e2e.stack import Daemon, RedisServer, free_port
from tests.waiting import until

pytestmark = pytest.mark.e2e

A, B, C = "PJSIP/2001", "PJSIP/2004", "PJSIP/2003"
CALLER = ("2120000002", "5550100", "", "")  # gold -> support, priority 10


# -- helpers ---------------------------------------------------------------------------
class Streams:
    """The agents' event streams, read from where this test started (earlier tests'
    calls rang the same agents)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.start: dict[str, str] = {}

    async def mark(self, *agents: str) -> None:
        for agent in agents:
            last = await self.client.xrevrange(agent_stream(agent), count=1)
            self.start[agent] = "(" + last[0][0].decode() if last else "-"

    async def events(self, agent: str, call_id: str | None = None) -> list[dict]:
        entries = await self.client.xrange(agent_stream(agent), min=self.start.get(agent, "-"))
        events = [json.loads(fields[b"e"]) for _id, fields in entries]
        return [e for e in events if call_id is None or e.get("call_id") == call_id]

    async def wait(
        self, agent: str, kind: str, call_id: str | None = None, within_s: float = 20
    ) -> dict:
        """The first ``kind`` event in the agent's stream (for ``call_id`` when given)."""

        async def find() -> dict | None:
            try:
                events = await self.events(agent, call_id)
            except (redis.RedisError, OSError):  # Redis away (a failover): not yet
                return None
            for event in events:
                if event["event"] == kind:
                    return event
            return None

        try:
            return await until(find, within_s=within_s, every_s=0.05)
        except TimeoutError:
            seen = [e["event"] for e in await self.events(agent)]
            raise AssertionError(
                f"no {kind!r} for {agent} within {within_s}s; stream: {seen}"
            ) from None


@dataclass
class Sidebar:
    """What the sidebar's back end will hold: AMI control and the call data service."""

    control: CallControl
    data: CallDataService
    sink: CallModelSink


@contextlib.asynccontextmanager
async def sidebar(testbed: E2ESetup, client: redis.Redis) -> AsyncIterator[Sidebar]:
    pool = await asyncpg.create_pool(testbed.database_url, min_size=1, max_size=2)
    history = BatchWriter("history", history_batch_writer(pool))
    store = CallDataStore(client, 3600, pool=pool, history=history)
    sink = CallModelSink()
    ami = AmiClient(
        "127.0.0.1",
        AMI_PORT,
        AMI_USER,
        testbed.ami_secret,
        events_sink=sink,
        filters=(event_filter(CALL_CENTRE_EVENTS),),
    )
    stop = asyncio.Event()
    tasks = [asyncio.create_task(ami.run(stop)), asyncio.create_task(history.run(stop))]
    try:
        await until(lambda: sink.up, within_s=10)
        yield Sidebar(
            CallControl(ami, sink.model),
            CallDataService(store, EventPublisher(client, ttl_s=3600)),
            sink,
        )
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 15)
        await pool.close()


async def call_on(sb: Sidebar, call_id: str, agent: str) -> None:
    """Wait until the sidebar's own model sees ``agent`` talking on the call."""

    def talking() -> bool:
        try:
            return sb.control.agent_leg(call_id, agent).connected
        except Exception:
            return False

    await until(talking, within_s=15)


# -- the story ---------------------------------------------------------------------------
async def follow_the_call(
    testbed: E2ESetup,
    client: redis.Redis,
    ami: Ami,
    agents,
    place_calls,
    mid_call=None,
) -> str:
    """The story above; ``mid_call(call_id, version)`` runs after A's note. Whatever it
    does to Redis (empties it, fails it over), every agent ends up with each of its
    events once: a Redis that lost them gets the leader's recent events again
    (:mod:`cti.calls.recent`)."""
    await agents.start(2001, 2003, 2004)
    streams = Streams(client)
    await streams.mark(A, B, C)
    async with sidebar(testbed, client) as sb:
        calls = await place_calls([CALLER], hold_ms=25_000)

        # A answers: the daemon told A's stream, for a call it routed.
        ringing_a = await streams.wait(A, "ringing")
        call_id = ringing_a["call_id"]
        assert uuid.UUID(call_id) and ringing_a["queue"] == "support"
        await streams.wait(A, "connected", call_id=call_id)
        routed = await sb.data.get(call_id)
        assert routed is not None and routed["routing"]["queue"] == "support"
        assert routed["customer"]["tier"] == "gold"

        # A writes a note (saved in Redis and PostgreSQL, announced on the call's streams).
        noted = await sb.data.update(call_id, routed["version"], {"note": "wants a refund"}, A)
        assert noted["version"] == routed["version"] + 1
        changed = await streams.wait(A, "data_changed", call_id=call_id)
        assert changed["version"] == noted["version"]

        if mid_call is not None:
            await mid_call(call_id, noted["version"])

        # A blind-transfers to the sales queue; B answers and sees everything.
        await call_on(sb, call_id, A)
        await sb.control.blind_transfer(call_id, A, "sales")
        await streams.wait(B, "connected", call_id=call_id)
        transferred = await streams.wait(A, "transferred", call_id=call_id)
        assert (transferred["kind"], transferred["from"]) == ("blind", A)
        seen_by_b = await sb.data.get(call_id)
        assert seen_by_b is not None and seen_by_b["routing"] == routed["routing"]
        assert [(n["by"], n["text"]) for n in seen_by_b["notes"]] == [(A, "wants a refund")]
        b_noted = await sb.data.update(call_id, seen_by_b["version"], {"note": "refund ok"}, B)

        # B attended-transfers to agent C: consult, C answers, B hangs up to complete.
        await call_on(sb, call_id, B)
        since = ami.mark()
        await sb.control.attended_transfer(call_id, B, "2003")
        await ami.wait_event(
            answered_dial("PJSIP/2003"),
            since=since,
            within_s=20,
            what="agent 2003 answering the consult call",
        )
        await sb.control.complete_transfer(call_id, B)
        await streams.wait(C, "connected", call_id=call_id)
        seen_by_c = await sb.data.get(call_id)
        assert seen_by_c is not None and seen_by_c["version"] == b_noted["version"]
        assert [(n["by"], n["text"]) for n in seen_by_c["notes"]] == [
            (A, "wants a refund"),
            (B, "refund ok"),
        ]
        assert seen_by_c["customer"] == routed["customer"]

        # The caller hangs up: everyone who had the call hears it ended, once.
        await calls.wait(timeout_s=40)
        for agent in (A, B, C):
            await streams.wait(agent, "ended", call_id=call_id)
            kinds = [e["event"] for e in await streams.events(agent, call_id)]
            assert kinds.count("ended") == 1 and kinds.count("connected") == 1, (agent, kinds)
    return call_id


async def check_timeline(testbed: E2ESetup, call_id: str) -> None:
    db = await asyncpg.connect(testbed.database_url)
    try:
        row = await until(
            lambda: db.fetchrow(
                "SELECT * FROM interactions WHERE call_id = $1 AND ended_at IS NOT NULL",
                uuid.UUID(call_id),
            ),
            within_s=10,
        )
        assert row["agents"] == [A, B, C]
        assert row["transfers"] == 2 and row["abandoned"] is False
        assert row["queued_at"] <= row["answered_at"] <= row["ended_at"]
        assert row["talk_s"] > 5
        kinds = [
            r["kind"]
            for r in await db.fetch(
                "SELECT kind FROM interaction_events WHERE call_id = $1 ORDER BY at",
                uuid.UUID(call_id),
            )
        ]
        assert kinds[0] == "queued" and kinds[-1] in ("ended", "left")
        assert kinds.count("transferred") == 2 and kinds.count("ended") == 1
        versions = await db.fetch(
            "SELECT version, changed_by FROM call_data_history WHERE call_id = $1 ORDER BY version",
            uuid.UUID(call_id),
        )
        assert [r["changed_by"] for r in versions] == ["route", A, B]
        await check_report_segments(db, call_id)
    finally:
        await db.close()


async def check_report_segments(db: asyncpg.Connection, call_id: str) -> None:
    """The reports' segments of the same call (cti/reports): a visit to each queue, each
    answered; A's talk ends at the blind transfer, B's at the attended one; one journey."""
    key = uuid.UUID(call_id)
    visits = await db.fetch(
        "SELECT queue, outcome, agent, wait_s, transfers FROM report_offers"
        " WHERE call_id = $1 AND kind = 'queue' ORDER BY seq",
        key,
    )
    assert [(v["queue"], v["outcome"], v["agent"], v["transfers"]) for v in visits] == [
        ("support", "answered", A, 1),
        ("sales", "answered", B, 1),
    ]
    legs = await db.fetch(
        "SELECT agent, queue, how, to_whom, talk_s, answered_at, ended_at FROM report_legs"
        " WHERE call_id = $1 AND answered_at IS NOT NULL ORDER BY seq",
        key,
    )
    assert [(g["agent"], g["queue"], g["how"]) for g in legs] == [
        (A, "support", "blind"),
        (B, "sales", "attended"),
        (C, None, "hangup"),
    ]
    assert legs[1]["to_whom"] == C and all(g["talk_s"] > 0 for g in legs)
    assert legs[0]["ended_at"] <= legs[1]["answered_at"]  # the talk is split, not doubled
    (journey,) = await db.fetch(
        "SELECT queue, outcome, transfers, tier FROM report_offers"
        " WHERE call_id = $1 AND kind = 'call'",
        key,
    )
    assert (journey["queue"], journey["outcome"], journey["transfers"]) == (
        "support",
        "answered",
        2,
    )
    assert journey["tier"] == "gold"
    await compare_with_queue_log(db, call_id, visits, legs)


#: Asterisk's own queue statistics, in the sandbox's root (scripts/asterisk-sandbox).
QUEUE_LOG = (
    Path(os.environ.get("CTI_SANDBOX_CACHE", "/var/cache/cti"))
    / "asterisk-root/var/log/asterisk/queue_log"
)


async def compare_with_queue_log(
    db: asyncpg.Connection, call_id: str, visits: list, legs: list
) -> None:
    """Per queue, Asterisk's queue_log and our segments agree on offered, answered and
    abandoned. They differ where queue_log cannot follow the call: agent C, reached by
    an attended transfer outside any queue, has no line in it at all (no CONNECT, no
    COMPLETE), while our legs give C's talk to C (docs/reports.md)."""
    uniqueid = await db.fetchval(
        "SELECT uniqueid FROM interactions WHERE call_id = $1", uuid.UUID(call_id)
    )

    def lines() -> list[list[str]]:
        text = QUEUE_LOG.read_text(errors="replace") if QUEUE_LOG.exists() else ""
        fields = [line.split("|") for line in text.splitlines()]
        return [f for f in fields if len(f) > 4 and f[1] == uniqueid]

    def complete() -> list[list[str]] | None:
        found = lines()
        return found if any(f[4] == "ATTENDEDTRANSFER" for f in found) else None

    ours = await until(complete, within_s=10)
    for queue in ("support", "sales"):
        theirs = [f[4] for f in ours if f[2] == queue]
        mine = [v for v in visits if v["queue"] == queue]
        assert theirs.count("ENTERQUEUE") == len(mine) == 1, (queue, theirs)
        assert theirs.count("CONNECT") == sum(v["outcome"] == "answered" for v in mine) == 1
        assert theirs.count("ABANDON") == sum(v["outcome"] == "abandoned" for v in mine) == 0
    events = [(f[2], f[3], f[4]) for f in ours]
    assert ("support", "Agent 2001", "BLINDTRANSFER") in events, events
    assert ("sales", "Agent 2004", "ATTENDEDTRANSFER") in events, events
    assert not any("2003" in f[3] for f in ours), events  # C is nowhere in queue_log ...
    assert legs[2]["agent"] == C and legs[2]["talk_s"] > 0  # ... and talked, in ours


async def test_data_follows_blind_then_attended_transfer(
    sandbox: E2ESetup, e2e_redis, ami: Ami, agents, place_calls
):
    call_id = await follow_the_call(sandbox, e2e_redis, ami, agents, place_calls)
    await check_timeline(sandbox, call_id)


async def test_nothing_lost_when_redis_restarts_mid_call(
    sandbox: E2ESetup, ami: Ami, agents, place_calls, agi_target, private_redis: RedisServer
):
    """A second daemon, on a Redis of its own, routes and follows this call; its Redis is
    restarted (empty: no persistence) right after A's note. The call's data comes back
    from PostgreSQL, and A's events from before the restart from the leader (it
    publishes its recent events again when it finds its mark gone)."""
    workdir = sandbox.workdir / f"redis-restart-{uuid.uuid4().hex[:6]}"
    workdir.mkdir()
    port = free_port()
    env = daemon_env(sandbox, CTI_REDIS_URL=private_redis.url, CTI_INSTANCE_ID="restart")
    env["CTI_PLAN_CACHE"] = str(workdir / "plan.toml")
    second = await Daemon.start(
        port=port, env=env, log=workdir / "daemon.log", ready_file=workdir / "plan.toml"
    )
    client = redis.from_url(private_redis.url)
    try:
        await agi_target(f"127.0.0.1:{port}")
        db = await asyncpg.connect(sandbox.database_url)

        async def restart_redis(call_id: str, version: int) -> None:
            await until(
                lambda: db.fetchval(
                    "SELECT count(*) FROM call_data_history WHERE call_id = $1 AND version = $2",
                    uuid.UUID(call_id),
                    version,
                ),
                within_s=5,
            )
            await private_redis.stop()
            await private_redis.start()
            await until(RedisServer.answers(client), within_s=5)  # its old connection broke
            assert await client.get(f"cti:call:{call_id}") is None  # really gone

        try:
            call_id = await follow_the_call(
                sandbox, client, ami, agents, place_calls, mid_call=restart_redis
            )
        finally:
            await db.close()
        await check_timeline(sandbox, call_id)
    finally:
        await client.aclose()
        await second.stop()
