"""Two Asterisk servers behind one cti (issue 12), everything real: PBX a (the session's
sandbox) and PBX b (``scripts/asterisk-sandbox --pbx b``), joined by the inter-PBX
trunk the sandbox renders (endpoints pbx-a / pbx-b, context from-pbx), SIPp callers
and agents on both, and a ``cti serve`` that follows both (``CTI_PBXES``).

The daemon of this module is its own: a private redis-server and a fresh demo database,
so that the session daemon (which follows a alone) neither sees nor doubles what this
one publishes. For the module both PBXes' dialplans send FastAGI to it (AMI Setvar of
the global CTI_AGI_ADDR), and back to the session daemon afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import redis.asyncio as redis

from cti.calldata.store import call_key
from cti.calls.lease import lease_key
from cti.sandbox_pbxes import SECOND, cti_pbxes
from cti.screenpop.agents import add_agent
from tests.e2e.ami import Ami, call_id_of, is_event
from tests.e2e.conftest import (
    AMI_PORT,
    AMI_USER,
    DEMO_CUSTOMERS,
    E2ESetup,
    _no_wrapup,
    daemon_env,
    demo_database,
)
from tests.e2e.stack import CALLER_XML, Daemon, RedisServer, free_port, tail
from tests.e2e.test_call_tracking import Streams
from tests.fakes.tcp_proxy import TcpProxy
from tests.waiting import until

pytestmark = pytest.mark.e2e

GOLD = ("2120000002", "5550100", "", "")  # Alan Turing, gold -> support on a
PASSWORD = "two pbx sidebar password"
NOTE_A = "Card lost abroad; new one requested."
NOTE_B = "Replacement card sent by courier."


@dataclass(frozen=True)
class TwoPbx:
    """The module's daemon, following a (home) and b."""

    daemon: Daemon
    redis: RedisServer
    database_url: str
    http_port: int
    session_secret: str


async def point_agi(port: int, secret: str, addr: str) -> None:
    """Set a PBX's global CTI_AGI_ADDR (where its dialplan sends FastAGI)."""
    client = await Ami.connect("127.0.0.1", port, AMI_USER, secret)
    try:
        reply = await client.action("Setvar", Variable="CTI_AGI_ADDR", Value=addr)
        assert reply.get("Response") == "Success", reply
    finally:
        await client.close()


@pytest.fixture(scope="module")
async def two_pbx(sandbox_b: E2ESetup, template_db: str, tmp_path_factory) -> AsyncIterator[TwoPbx]:
    testbed = sandbox_b
    workdir = tmp_path_factory.mktemp("two-pbx")
    redis_server = RedisServer(free_port(), workdir)
    await redis_server.start()
    try:
        async with demo_database(template_db, "cti_2pbx", DEMO_CUSTOMERS, _no_wrapup) as url:
            port, http_port, session_secret = free_port(), free_port(), secrets.token_hex(32)
            plan_cache = workdir / "routing-plan.toml"
            env = daemon_env(testbed) | {
                "CTI_DATABASE_URL": url,
                "CTI_REDIS_URL": redis_server.url,
                "CTI_PLAN_CACHE": str(plan_cache),
                "CTI_PBXES": cti_pbxes("a", "b"),
                "CTI_AMI_SECRET_B": testbed.b_ami_secret,
                "CTI_SESSION_SECRET": session_secret,
                "CTI_HTTP_BIND": f"127.0.0.1:{http_port}",
            }
            try:
                daemon = await Daemon.start(
                    port=port, env=env, log=workdir / "daemon.log", ready_file=plan_cache
                )
            except RuntimeError as exc:
                pytest.fail(f"the two-PBX daemon did not start: {exc}", pytrace=False)
            try:
                await point_agi(AMI_PORT, testbed.ami_secret, daemon.addr)
                await point_agi(SECOND.ami_port, testbed.b_ami_secret, daemon.addr)
                yield TwoPbx(daemon, redis_server, url, http_port, session_secret)
            finally:
                session_agi = f"127.0.0.1:{testbed.agi_port}"
                await point_agi(AMI_PORT, testbed.ami_secret, session_agi)
                await point_agi(SECOND.ami_port, testbed.b_ami_secret, session_agi)
                await daemon.stop()
    finally:
        await redis_server.stop()


def agent_connect(queue: str):
    return lambda e: e.get("Event") == "AgentConnect" and e.get("Queue") == queue


async def test_a_blind_transfer_to_a_queue_on_b_carries_the_call_id(
    two_pbx: TwoPbx, ami: Ami, ami_b: Ami, agents, agents_b, place_calls, tmp_path: Path
):
    """A call routed on a, answered by a's agent 2001, blind-transferred (AMI
    BlindTransfer to b-support@agents) reaches queue support on b over trunk pbx-a,
    carrying a's CTI_CALL_ID in X-CTI-Call-ID; b's agent 2002 answers it."""
    await agents.start(2001)
    await agents_b.start(2002)
    since, since_b = ami.mark(), ami_b.mark()
    calls = await place_calls([GOLD], hold_ms=25_000, rate=1)

    answered = await ami.wait_event(
        agent_connect("support"), since=since, within_s=30, what="a's agent answering"
    )
    call_id = call_id_of(answered)
    assert uuid.UUID(call_id), f"CTI_CALL_ID not set on {answered['Channel']}"
    assert answered["Interface"] == "PJSIP/2001"

    reply = await ami.action(
        "BlindTransfer", Channel=answered["DestChannel"], Context="agents", Exten="b-support"
    )
    assert reply.get("Response") == "Success", reply

    # a: the caller dials b over the trunk, with the call id on the outgoing leg.
    dial = await ami.wait_event(
        lambda e: (
            e.get("Event") == "DialBegin" and e.get("DestChannel", "").startswith("PJSIP/pbx-b-")
        ),
        since=since,
        what="a dialling b over pbx-b",
    )
    assert dial["DialString"] == "support@pbx-b"
    assert call_id_of(dial) == call_id

    # b: the call arrives on trunk pbx-a and joins b's queue support with the header.
    join = await ami_b.wait_event(
        is_event("QueueCallerJoin", Queue="support"), since=since_b, what="b's QueueCallerJoin"
    )
    assert join["Channel"].startswith("PJSIP/pbx-a-"), join["Channel"]
    assert await ami_b.getvar(join["Channel"], "PJSIP_HEADER(read,X-CTI-Call-ID)") == call_id
    assert await ami_b.getvar(join["Channel"], "CHANNEL(endpoint)") == "pbx-a"

    connect_b = await ami_b.wait_event(
        is_event("AgentConnect", Uniqueid=join["Uniqueid"]), since=since_b, within_s=30
    )
    assert connect_b["Interface"] == "PJSIP/2002"
    await calls.wait(timeout_s=60)
    # b's AMI feed followed the arrival: attach kept a's call id on b's legs.
    assert call_id_of(join) == call_id, "attach: b's legs carry a's CTI_CALL_ID"


# -- the sidebar of an agent on either PBX -------------------------------------------
@dataclass
class Desk:
    """An agent signed in to the module daemon's HTTP API, with its WebSocket's frames
    (read by a task of its own, from the moment it opened)."""

    http: aiohttp.ClientSession
    auth: dict[str, str]
    username: str
    frames: list[dict] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            async with self.changed:
                self.frames.append(json.loads(message.data))
                self.changed.notify_all()

    async def event(self, kind: str, within_s: float = 30, **fields: object) -> dict:
        """The first event frame of ``kind`` whose fields equal ``fields``."""

        def match(frame: dict) -> bool:
            event = frame.get("event") if frame.get("type") == "event" else None
            return (
                bool(event)
                and event["event"] == kind
                and all(event.get(k) == v for k, v in fields.items())
            )

        try:
            async with asyncio.timeout(within_s), self.changed:
                await self.changed.wait_for(lambda: any(match(f) for f in self.frames))
        except TimeoutError:
            seen = [(f["event"]["event"], f["event"].get("agent")) for f in self.events()]
            raise AssertionError(
                f"{self.username}: no {kind} {fields} within {within_s}s; saw {seen}"
            ) from None
        return next(f["event"] for f in self.frames if match(f))

    def events(self) -> list[dict]:
        return [f for f in self.frames if f.get("type") == "event"]

    async def call(self, call_id: str) -> dict:
        async with self.http.get(f"/api/calls/{call_id}", headers=self.auth) as answer:
            assert answer.status == 200, (self.username, await answer.text())
            return await answer.json()

    async def note(self, call_id: str, text: str) -> dict:
        """Write this agent's note on the call; the new document."""
        version = (await self.call(call_id))["call"]["version"]
        body = {"version": version, "change": {"note": text}}
        async with self.http.patch(f"/api/calls/{call_id}", json=body, headers=self.auth) as r:
            assert r.status == 200, (self.username, await r.text())
            return (await r.json())["call"]

    async def post(self, path: str, body: dict) -> int:
        async with self.http.post(path, json=body, headers=self.auth) as answer:
            assert answer.status == 202, (self.username, path, await answer.text())
            return answer.status


@contextlib.asynccontextmanager
async def desk(two_pbx: TwoPbx, username: str, endpoint: str) -> AsyncIterator[Desk]:
    """Agent ``username`` on device ``endpoint`` (``PJSIP/2002@b`` on b), signed in, its
    WebSocket open from now on (the stream keeps earlier tests' events)."""
    db = await asyncpg.connect(two_pbx.database_url)
    try:
        await add_agent(db, username, endpoint, PASSWORD, replace=True)
    finally:
        await db.close()
    async with aiohttp.ClientSession(f"http://127.0.0.1:{two_pbx.http_port}") as http:
        login = await http.post("/api/login", json={"username": username, "password": PASSWORD})
        assert login.status == 200, await login.text()
        token = (await login.json())["token"]
        now = f"{int(time.time() * 1000)}-0"
        async with http.ws_connect(f"/ws?token={token}&after={now}") as ws:
            hello = await ws.receive_json(timeout=5)
            assert hello["type"] == "hello", hello
            seat = Desk(http, {"Authorization": f"Bearer {token}"}, username)
            reader = asyncio.create_task(seat.read(ws))
            try:
                yield seat
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)


def notes(document: dict) -> list[str]:
    return [note["text"] for note in document["call"]["notes"]]


async def one_call_on_both_pbxes(two_pbx: TwoPbx, call_id: str) -> None:
    """The timeline and the reports hold one call with legs on a and b (once both
    PBXes' parts ended and the writers flushed)."""
    db = await asyncpg.connect(two_pbx.database_url)
    try:
        cid = uuid.UUID(call_id)

        async def written() -> bool:
            legs = await db.fetch("SELECT agent, pbx FROM report_legs WHERE call_id = $1", cid)
            return {leg["pbx"] for leg in legs} >= {"a", "b"}

        try:
            await until(written, within_s=30, every_s=0.5)
        except TimeoutError:
            legs = await db.fetch("SELECT * FROM report_legs WHERE call_id = $1", cid)
            raise AssertionError(f"legs of {call_id}: {[dict(r) for r in legs]}") from None
        interactions = await db.fetch("SELECT * FROM interactions WHERE call_id = $1", cid)
        assert len(interactions) == 1, [dict(r) for r in interactions]
        pbxes = await db.fetch(
            "SELECT DISTINCT pbx FROM interaction_events WHERE call_id = $1", cid
        )
        assert {row["pbx"] for row in pbxes} >= {"a", "b"}
        legs = await db.fetch("SELECT agent, pbx FROM report_legs WHERE call_id = $1", cid)
        assert {(leg["agent"], leg["pbx"]) for leg in legs} >= {
            ("PJSIP/2001", "a"),
            ("PJSIP/2002@b", "b"),
        }
    finally:
        await db.close()


# -- the must-hold stories ------------------------------------------------------------
async def transfer_story(two_pbx: TwoPbx, agents, agents_b, place_calls, transfer: Callable) -> str:
    """A call enters a, is routed and answered by a's agent 2001 who writes a note, is
    transferred (``transfer(on_a, call_id)``) to queue support on b: b's agent 2002 gets
    the pop with the same call id and a's note, edits it, a's page sees the edit."""
    await agents.start(2001)
    await agents_b.start(2002)
    async with (
        desk(two_pbx, "a2001", "PJSIP/2001") as on_a,
        desk(two_pbx, "b2002", "PJSIP/2002@b") as on_b,
    ):
        calls = await place_calls([GOLD], hold_ms=40_000)
        connected = await on_a.event("connected", agent="PJSIP/2001")
        call_id = connected["call_id"]
        assert connected["pbx"] == "a", connected
        await on_a.note(call_id, NOTE_A)

        await transfer(on_a, call_id)

        ringing = await on_b.event("ringing", call_id=call_id, agent="PJSIP/2002@b")
        assert ringing["pbx"] == "b", ringing
        pop = await on_b.call(call_id)
        assert pop["call"]["customer"]["name"] == "Alan Turing", pop["call"]
        assert NOTE_A in notes(pop), pop["call"]["notes"]
        await on_b.event("connected", call_id=call_id, agent="PJSIP/2002@b")
        edited = await on_b.note(call_id, NOTE_B)
        await on_a.event("data_changed", call_id=call_id, version=edited["version"])
        assert NOTE_B in notes(await on_a.call(call_id))
        await calls.wait(timeout_s=90)
    await one_call_on_both_pbxes(two_pbx, call_id)
    return call_id


async def test_blind_transfer_to_b_keeps_the_call_its_note_and_the_edits(
    two_pbx: TwoPbx, ami: Ami, ami_b: Ami, agents, agents_b, place_calls
):
    async def blind(on_a: Desk, call_id: str) -> None:
        body = {"kind": "blind", "target": "b-support"}
        await on_a.post(f"/api/calls/{call_id}/transfer", body)

    await transfer_story(two_pbx, agents, agents_b, place_calls, blind)


async def test_attended_transfer_to_b_keeps_the_call_its_note_and_the_edits(
    two_pbx: TwoPbx, ami: Ami, ami_b: Ami, agents, agents_b, place_calls
):
    async def attended(on_a: Desk, call_id: str) -> None:
        since_b = ami_b.mark()
        # Atxfer dials its target as DTMF: b-support by number (8, b's position, 3001).
        body = {"kind": "attended", "target": "823001"}
        await on_a.post(f"/api/calls/{call_id}/transfer", body)
        # b's agent answers the consultation, then a's agent completes (hangs up).
        await ami_b.wait_event(
            lambda e: e.get("Event") == "AgentConnect" and e.get("Interface") == "PJSIP/2002",
            since=since_b,
            within_s=30,
            what="b's agent answering the consultation",
        )
        await on_a.post(f"/api/calls/{call_id}/transfer/complete", {})

    await transfer_story(two_pbx, agents, agents_b, place_calls, attended)


def with_call_id_header(workdir: Path) -> Path:
    """sipp/caller.xml sending ``X-CTI-Call-ID: [field4]`` as well."""
    xml = CALLER_XML.read_text()
    marker = "      X-IVR-Intent: [field3]\n"
    assert marker in xml
    scenario = workdir / "caller-with-call-id.xml"
    scenario.write_text(xml.replace(marker, marker + "      X-CTI-Call-ID: [field4]\n"))
    return scenario


async def test_a_public_caller_sending_another_calls_id_gets_a_new_call(
    two_pbx: TwoPbx, ami: Ami, agents, place_calls, tmp_path: Path
):
    """The public trunk (from-trunk) never reads X-CTI-Call-ID: a caller who sends the
    id of a call cti knows is routed as a new call, and that call's data is untouched."""
    client = redis.from_url(two_pbx.redis.url)
    try:
        await agents.start(2001, 2002)
        since = ami.mark()
        first = await place_calls([GOLD], hold_ms=3_000)
        join = await ami.wait_event(
            is_event("QueueCallerJoin", CallerIDNum=GOLD[0]), since=since, what="first call"
        )
        known = call_id_of(join)
        assert uuid.UUID(known)
        await first.wait(timeout_s=30)
        before = await client.get(call_key(known))

        since = ami.mark()
        forger = ("2120000004", "5550100", "", "", known)
        second = await place_calls([forger], hold_ms=3_000, scenario=with_call_id_header(tmp_path))
        join = await ami.wait_event(
            is_event("QueueCallerJoin", CallerIDNum=forger[0]), since=since, what="the forger"
        )
        assert await ami.getvar(join["Channel"], "PJSIP_HEADER(read,X-CTI-Call-ID)") == known
        new = call_id_of(join)
        assert uuid.UUID(new) and new != known, "the forger got the other call's id"
        document = json.loads(await until(lambda: client.get(call_key(new)), within_s=10))
        assert document["customer"]["name"] == "Edsger Dijkstra", "its own data, routed anew"
        await second.wait(timeout_s=30)
        assert await client.get(call_key(known)) == before, "the known call was touched"
    finally:
        await client.aclose()


# -- one PBX down, one instance killed ------------------------------------------------
@contextlib.asynccontextmanager
async def instances(
    two_pbx: TwoPbx, testbed: E2ESetup, workdir: Path, redis_url: str, *names: str, **env: str
) -> AsyncIterator[list[tuple[Daemon, int]]]:
    """``cti serve`` instances following a and b on ``redis_url`` (the module's
    database), each with its HTTP port; stopped on the way out."""
    started: list[tuple[Daemon, int]] = []
    try:
        for name in names:
            cache, http_port = workdir / f"{name}-plan.toml", free_port()
            daemon = await Daemon.start(
                port=free_port(),
                env=daemon_env(testbed)
                | {
                    "CTI_DATABASE_URL": two_pbx.database_url,
                    "CTI_REDIS_URL": redis_url,
                    "CTI_PLAN_CACHE": str(cache),
                    "CTI_INSTANCE_ID": name,
                    "CTI_AMI_LEASE_TTL_S": "3",
                    "CTI_PBXES": cti_pbxes("a", "b"),
                    "CTI_AMI_SECRET_B": testbed.b_ami_secret,
                    "CTI_SESSION_SECRET": two_pbx.session_secret,
                    "CTI_HTTP_BIND": f"127.0.0.1:{http_port}",
                }
                | env,
                log=workdir / f"{name}.log",
                ready_file=cache,
            )
            started.append((daemon, http_port))
        yield started
    finally:
        for daemon, _ in started:
            await daemon.stop()


async def readiness(http_port: int) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{http_port}/readyz") as answer,
    ):
        return answer.status, await answer.json()


def once_each(kinds: list[str], *expected: str) -> bool:
    return all(kinds.count(kind) == 1 for kind in expected)


async def test_with_b_s_ami_down_a_is_followed_and_readyz_names_b(
    two_pbx: TwoPbx, sandbox_b: E2ESetup, ami: Ami, agents, place_calls, private_redis, tmp_path
):
    """b's AMI unreachable (a proxy that refuses): the instance is ready (a works),
    /readyz names b; a's calls are published as usual; b back, b is followed again."""
    proxy = await TcpProxy("127.0.0.1", SECOND.ami_port).start()
    proxy.set_mode("refuse")
    client = redis.from_url(private_redis.url)
    try:
        async with instances(
            two_pbx,
            sandbox_b,
            tmp_path,
            private_redis.url,
            "b-down",
            CTI_PBXES=f"a=127.0.0.1:{AMI_PORT},b=127.0.0.1:{proxy.port}",
        ) as [(daemon, http_port)]:

            async def b_named_down() -> bool:
                status, body = await readiness(http_port)
                return (
                    status == 200
                    and body.get("pbxes") == {"a": True, "b": False}
                    and body.get("ami_down") == ["b"]
                )

            try:
                await until(b_named_down, within_s=30, every_s=0.2)
            except TimeoutError:
                raise AssertionError(f"/readyz: {await readiness(http_port)}") from None

            await agents.start(2001)
            streams = Streams(client)
            await streams.mark("PJSIP/2001")
            calls = await place_calls([GOLD], hold_ms=4_000)
            connected = await streams.wait("PJSIP/2001", "connected", within_s=30)
            assert connected["pbx"] == "a"
            await calls.wait(timeout_s=30)
            await streams.wait("PJSIP/2001", "ended", call_id=connected["call_id"])
            kinds = [e["event"] for e in await streams.events("PJSIP/2001", connected["call_id"])]
            assert once_each(kinds, "ringing", "connected", "ended"), kinds

            proxy.set_mode("forward")

            async def both_up() -> bool:
                status, body = await readiness(http_port)
                return status == 200 and body.get("pbxes") == {"a": True, "b": True}

            try:
                await until(both_up, within_s=60, every_s=0.5)
            except TimeoutError:
                raise AssertionError(
                    f"/readyz: {await readiness(http_port)}\n{tail(daemon.log)}"
                ) from None
    finally:
        await client.aclose()
        await proxy.close()


async def leaders(client: redis.Redis) -> dict[str, str | None]:
    found = {}
    for pbx in ("a", "b"):
        value = await client.get(lease_key(pbx))
        found[pbx] = value.decode() if value else None
    return found


async def test_the_instance_leading_b_killed_mid_call_another_takes_b(
    two_pbx: TwoPbx,
    sandbox_b: E2ESetup,
    ami: Ami,
    ami_b: Ami,
    agents,
    agents_b,
    place_calls,
    private_redis,
    tmp_path,
):
    """Two instances follow a and b, "one" leading a and "two" leading b (one reaches b
    through a proxy that refuses until two holds b's lease, then forwards: one is b's
    standby). The call is answered on a and blind-transferred to b; while it waits in b's
    queue, two is killed (SIGKILL): one takes b's lease within the TTL, a's lease never
    moves, and every event of the call reaches both agents' streams exactly once."""
    client = redis.from_url(private_redis.url)
    proxy = await TcpProxy("127.0.0.1", SECOND.ami_port).start()
    proxy.set_mode("refuse")
    try:
        async with instances(
            two_pbx,
            sandbox_b,
            tmp_path,
            private_redis.url,
            "one",
            CTI_PBXES=f"a=127.0.0.1:{AMI_PORT},b=127.0.0.1:{proxy.port}",
        ) as [one]:
            await until(lambda: _led(client, "a", "one"), within_s=20)
            async with instances(two_pbx, sandbox_b, tmp_path, private_redis.url, "two") as [two]:
                await until(lambda: _led(client, "b", "two"), within_s=20)
                assert (await leaders(client))["a"] == "one"
                proxy.set_mode("forward")  # one follows b too, as its standby

                async def one_follows_b() -> bool:
                    _status, body = await readiness(one[1])
                    return body.get("pbxes") == {"a": True, "b": True}

                await until(one_follows_b, within_s=30, every_s=0.2)
                # Routing and attach by the survivor: the call's data lives on.
                await point_agi(AMI_PORT, sandbox_b.ami_secret, one[0].addr)
                await point_agi(SECOND.ami_port, sandbox_b.b_ami_secret, one[0].addr)
                try:
                    await agents.start(2001)
                    await agents_b.start(2002, ring_ms=4_000)
                    streams = Streams(client)
                    await streams.mark("PJSIP/2001", "PJSIP/2002@b")
                    since, since_b = ami.mark(), ami_b.mark()
                    calls = await place_calls([GOLD], hold_ms=25_000)
                    connected = await streams.wait("PJSIP/2001", "connected", within_s=30)
                    call_id = connected["call_id"]
                    answered = await ami.wait_event(
                        is_event("AgentConnect", Interface="PJSIP/2001"), since=since
                    )
                    reply = await ami.action(
                        "BlindTransfer",
                        Channel=answered["DestChannel"],
                        Context="agents",
                        Exten="b-support",
                    )
                    assert reply.get("Response") == "Success", reply
                    await ami_b.wait_event(
                        is_event("QueueCallerJoin", Queue="support"), since=since_b
                    )
                    two[0].proc.kill()  # no goodbye: the lease must expire by itself
                    await two[0].proc.wait()
                    killed_at = time.monotonic()

                    await until(lambda: _led(client, "b", "one"), within_s=10, every_s=0.1)
                    took_s = time.monotonic() - killed_at
                    assert took_s < 3 + 2, f"b's lease taken {took_s:.1f}s after the kill"
                    assert (await leaders(client))["a"] == "one", "a's leader moved"

                    await streams.wait("PJSIP/2002@b", "connected", call_id=call_id, within_s=30)
                    await calls.wait(timeout_s=60)
                    await streams.wait("PJSIP/2001", "ended", call_id=call_id)
                    await streams.wait("PJSIP/2002@b", "ended", call_id=call_id)
                    assert (await leaders(client))["a"] == "one", "a's leader moved"
                finally:
                    await point_agi(AMI_PORT, sandbox_b.ami_secret, two_pbx.daemon.addr)
                    await point_agi(SECOND.ami_port, sandbox_b.b_ami_secret, two_pbx.daemon.addr)
                a = [e["event"] for e in await streams.events("PJSIP/2001", call_id)]
                b = [e["event"] for e in await streams.events("PJSIP/2002@b", call_id)]
                assert once_each(a, "ringing", "connected", "transferred", "ended"), a
                assert once_each(b, "ringing", "connected", "ended"), b
                b_pbx = {e["pbx"] for e in await streams.events("PJSIP/2002@b", call_id)}
                assert b_pbx <= {"b", None}, b_pbx
                print(f"b's lease taken over {took_s:.2f}s after the kill")
    finally:
        await client.aclose()
        await proxy.close()


async def _led(client: redis.Redis, pbx: str, instance: str) -> bool:
    return (await leaders(client))[pbx] == instance
