"""The sidebar's HTTP API (cti.screenpop) over real HTTP, on real PostgreSQL and Redis.

What must hold (issue 5): only a logged-in agent gets anything, and only of their own
calls (a supervisor reads all); a wrong or expired token, another agent's call, an
oversized or malformed body are each refused with the contract's code and change
nothing in Redis or PostgreSQL; an edit made against an old version is refused with the
current document; call control without AMI says so (503); health and metrics answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
import redis.asyncio as redis
from aiohttp.test_utils import TestClient, TestServer

from cti.ami import AmiClient
from cti.calldata.service import CallDataService
from cti.calldata.store import CallDataStore
from cti.calldata.store import call_key as data_key
from cti.calls.control import CallControl
from cti.calls.effects import AgentConnected
from cti.calls.events import CallEvent
from cti.calls.lease import LEASE_KEY
from cti.calls.publisher import ALL_EVENTS_STREAM, EventPublisher, agent_stream
from cti.calls.sink import CallModelSink
from cti.config import HostPort
from cti.routing.table import RoutingTable
from cti.screenpop.agents import add_agent
from cti.screenpop.app import build_app
from cti.screenpop.auth import Sessions
from cti.screenpop.context import WsLimits
from cti.screenpop.metrics import Metrics
from cti.screenpop.password_checks import PasswordChecks
from cti.screenpop.throttle import LoginThrottle
from tests.conftest import REDIS_URL
from tests.fakes.ami_server import FakeAmi
from tests.plans import PLAN
from tests.unit.ami_replay import load, parse
from tests.waiting import until

SECRET = b"integration-test-secret-not-a-real-one"
OWNER = "test-owner"  # the AMI lease holder the tests publish as
ALICE, BOB, BOSS = "PJSIP/2001", "PJSIP/2002", "PJSIP/2009"
PASSWORDS = {"alice": "alice-password", "bob": "bob-password", "boss": "boss-password"}


@dataclasses.dataclass
class Stack:
    client: TestClient
    pool: asyncpg.Pool
    redis: redis.Redis
    sessions: Sessions
    metrics: Metrics
    publisher: EventPublisher
    store: CallDataStore
    tokens: dict[str, str] = dataclasses.field(default_factory=dict)

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def request(
        self, method: str, path: str, who: str | None = None, **kw: Any
    ) -> tuple[int, Any]:
        headers = {**(self.auth(who) if who else {}), **kw.pop("headers", {})}
        async with self.client.request(method, path, headers=headers, **kw) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text

    async def ring(self, call_id: str, endpoint: str, at: float | None = None) -> None:
        """Make the call ``endpoint``'s, as the AMI leader does when it rings them."""
        await self.publish(ringing(call_id, endpoint, at))

    async def answer(self, call_id: str, endpoint: str, at: float | None = None) -> None:
        """``endpoint`` talks on the call: from now on they may write it."""
        event = ringing(call_id, endpoint, at)
        await self.publish(
            dataclasses.replace(event, kind="connected", fingerprint=f"connected|{endpoint}")
        )

    async def publish(self, *events: CallEvent) -> None:
        await self.publisher.publish_many(events, OWNER)

    async def new_call(self, *endpoints: str, customer_id: int | None = None) -> str:
        call_id = str(uuid.uuid4())
        await self.store.create_many([document(call_id, customer_id)])
        for endpoint in endpoints:
            await self.ring(call_id, endpoint)
        return call_id


def ringing(call_id: str, endpoint: str, at: float | None = None) -> CallEvent:
    """Stamped now by default: what an agent is doing is read from recent events only."""
    at = time.time() if at is None else at
    channel = f"{endpoint}-{uuid.uuid4().hex[:8]}"
    return CallEvent(
        kind="ringing",
        call_key=call_id,
        call_id=call_id,
        linkedid="1795410950.10",
        fingerprint=f"ringing|{channel}",
        at=at,
        agent=endpoint,
        data={"queue": "support", "member_name": endpoint, "channel": channel},
        recipients=(endpoint,),
    )


def document(call_id: str, customer_id: int | None = None) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "version": 1,
        "uniqueid": "1795410950.10",
        "ani": "+12120000001",
        "customer": None if customer_id is None else {"id": customer_id, "name": "Grace"},
        "notes": [],
        "disposition": None,
        "tags": [],
        "attributes": {},
    }


async def start_stack(
    pool: asyncpg.Pool,
    client: redis.Redis,
    *,
    control: CallControl | None = None,
    ami: AmiClient | None = None,
    ws_limits: WsLimits | None = None,
    sessions: Sessions | None = None,
    open_reader: Callable[[], redis.Redis] | None = None,
    metrics: Metrics | None = None,
    throttle: LoginThrottle | None = None,
    password_checks: PasswordChecks | None = None,
    table: Callable[[], RoutingTable] = lambda: PLAN,
) -> Stack:
    store = CallDataStore(client, 3600, pool=pool)
    publisher = EventPublisher(client, ttl_s=3600)
    metrics = metrics or Metrics()
    sessions = sessions or Sessions(SECRET, 3600)
    app = build_app(
        pool=pool,
        redis_client=client,
        call_data=CallDataService(store, publisher),
        sessions=sessions,
        metrics=metrics,
        control=control,
        ami=ami,
        ws_limits=ws_limits or WsLimits(block_ms=500),
        open_reader=open_reader,
        throttle=throttle,
        password_checks=password_checks,
        table=table,
    )
    http = TestClient(TestServer(app))
    await http.start_server()
    await client.set(LEASE_KEY, OWNER)
    return Stack(http, pool, client, sessions, metrics, publisher, store)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=5)
    yield pool
    await pool.close()


async def add_agents(pool: asyncpg.Pool) -> None:
    await asyncio.gather(
        add_agent(pool, "alice", ALICE, PASSWORDS["alice"], display_name="Alice"),
        add_agent(pool, "bob", BOB, PASSWORDS["bob"], display_name="Bob"),
        add_agent(pool, "boss", BOSS, PASSWORDS["boss"], display_name="Boss", role="supervisor"),
    )


@pytest.fixture
async def agents(pool: asyncpg.Pool) -> None:
    await add_agents(pool)


async def log_in(stack: Stack) -> None:
    for who, password in PASSWORDS.items():
        status, body = await stack.request(
            "POST", "/api/login", json={"username": who, "password": password}
        )
        assert status == 200, body
        stack.tokens[who] = body["token"]


@contextlib.asynccontextmanager
async def running_stack(
    database_url: str, client: redis.Redis, **options: Any
) -> AsyncIterator[Stack]:
    """A stack on its own pool, with the three agents logged in (for other test files)."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=5)
    try:
        await add_agents(pool)
        stack = await start_stack(pool, client, **options)
        try:
            await log_in(stack)
            yield stack
        finally:
            await stack.client.close()
    finally:
        await pool.close()


@pytest.fixture
async def stack(pool, redis_client, agents) -> AsyncIterator[Stack]:
    stack = await start_stack(pool, redis_client)
    await log_in(stack)
    yield stack
    await stack.client.close()


async def snapshot(stack: Stack, call_id: str) -> tuple[object, ...]:
    """Everything a refused request must leave as it was."""
    streams = {
        key: await stack.redis.xlen(key)
        for key in (ALL_EVENTS_STREAM, agent_stream(ALICE), agent_stream(BOB))
    }
    return (
        await stack.redis.get(data_key(call_id)),
        streams,
        await stack.pool.fetchval("SELECT count(*) FROM call_data_history"),
        await stack.pool.fetchval("SELECT count(*) FROM agents"),
    )


# -- logging in ------------------------------------------------------------------------
async def test_login_gives_a_token_for_the_agent(stack: Stack) -> None:
    status, body = await stack.request(
        "POST", "/api/login", json={"username": "alice", "password": "alice-password"}
    )
    assert status == 200
    assert body["agent"] == {
        "username": "alice",
        "display_name": "Alice",
        "endpoint": ALICE,
        "role": "agent",
    }
    assert body["expires_at"].endswith("+00:00")
    status, me = await stack.request(
        "GET", "/api/me", headers={"Authorization": f"Bearer {body['token']}"}
    )
    assert status == 200 and me["agent"] == body["agent"] and me["calls"] == []


async def test_a_wrong_password_and_an_unknown_user_get_the_same_answer(stack: Stack) -> None:
    answers = []
    for username, password in [
        ("alice", "bob-password"),
        ("alice", ""),
        ("nobody", "alice-password"),
        ("ALICE", "alice-password"),
        ("x" * 64, "whatever"),
    ]:
        answers.append(
            await stack.request(
                "POST", "/api/login", json={"username": username, "password": password}
            )
        )
    assert all(status == 401 for status, _ in answers)
    assert {json.dumps(body, sort_keys=True) for _, body in answers} == {
        json.dumps({"error": "bad_credentials", "message": "wrong user name or password"})
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"username": "alice"}, "password"),
        ({"password": "x"}, "username"),
        ({"username": 1, "password": "x"}, "username"),
        ({"username": "alice", "password": "alice-password", "remember": True}, "remember"),
        ({"username": "a" * 65, "password": "x"}, "username"),
    ],
)
async def test_a_malformed_login_is_invalid(stack: Stack, body: dict, field: str) -> None:
    status, answer = await stack.request("POST", "/api/login", json=body)
    assert (status, answer["error"]) == (400, "invalid")
    assert answer["message"].startswith(f"{field}:")


async def test_wrong_forged_or_expired_tokens_are_unauthorized(stack: Stack) -> None:
    call_id = await stack.new_call(ALICE)
    before = await snapshot(stack, call_id)
    expired_sessions = Sessions(SECRET, 60, clock=lambda: 1_000_000.0)
    expired, _ = expired_sessions.issue(
        username="alice", display_name="Alice", endpoint=ALICE, role="agent"
    )
    forged, _ = Sessions(b"somebody-elses-secret-somebody-elses", 3600).issue(
        username="alice", display_name="Alice", endpoint=ALICE, role="supervisor"
    )
    good = stack.tokens["alice"]
    headers = [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": f"Basic {good}"},
        {"Authorization": f"Bearer {good[:-2]}"},
        {"Authorization": f"Bearer {expired}"},
        {"Authorization": f"Bearer {forged}"},
    ]
    patch = {"version": 1, "change": {"note": "sneaky"}}
    for header in headers:
        for method, path, body in [
            ("GET", "/api/me", None),
            ("GET", f"/api/calls/{call_id}", None),
            ("PATCH", f"/api/calls/{call_id}", patch),
            ("POST", f"/api/calls/{call_id}/hangup", None),
            ("POST", "/api/agent/pause", {"paused": True}),
            ("GET", "/api/supervisor/agents", None),
        ]:
            status, answer = await stack.request(method, path, headers=header, json=body)
            assert (status, answer["error"]) == (401, "unauthorized"), (header, path)
    assert await snapshot(stack, call_id) == before


# -- calls -----------------------------------------------------------------------------
async def test_an_agent_reads_their_own_call(stack: Stack) -> None:
    call_id = await stack.new_call(ALICE, customer_id=42)
    status, body = await stack.request("GET", f"/api/calls/{call_id}", "alice")
    assert status == 200, body
    assert body["call"] == document(call_id, 42)
    assert body["recent"] == [] and body["timeline"] == []
    status, me = await stack.request("GET", "/api/me", "alice")
    assert me["calls"] == [call_id]
    # upper case is the same call id
    status, _ = await stack.request("GET", f"/api/calls/{call_id.upper()}", "alice")
    assert status == 200


async def test_a_pop_that_beats_the_routes_data_still_gets_it(stack: Stack) -> None:
    """The ringing event can reach the page before the route's writer stored the call's
    data (seen on the real test bed): the read waits a moment for it."""
    call_id = str(uuid.uuid4())
    await stack.ring(call_id, ALICE)

    async def route_writes_late() -> None:
        await asyncio.sleep(0.3)
        await stack.store.create_many([document(call_id, 42)])

    writer = asyncio.create_task(route_writes_late())
    status, body = await stack.request("GET", f"/api/calls/{call_id}", "alice")
    await writer
    assert status == 200 and body["call"] == document(call_id, 42), body


async def test_the_call_shows_the_customers_recent_calls_and_its_timeline(
    stack: Stack, db: asyncpg.Connection
) -> None:
    call_id = await stack.new_call(ALICE, customer_id=7)
    earlier = [str(uuid.uuid4()) for _ in range(7)]
    for n, old in enumerate(earlier):
        await db.execute(
            """INSERT INTO interactions (call_id, routed_at, channel, uniqueid, ani, dnis,
                   customer_id, route, queue, priority, rule, tier, decision_us, agents)
               VALUES ($1, now() - make_interval(days => $2), 'c', 'u', 'a', 'd', 7,
                   'queue', 'support', 1, 'gold', 'gold', 10, $3)""",
            uuid.UUID(old), 7 - n, [BOB],
        )  # fmt: skip
    await db.execute(
        """INSERT INTO call_data_history VALUES ($1, 2, '{"disposition": "sold"}', 'bob', now())""",
        uuid.UUID(earlier[-1]),
    )
    await db.execute(
        """INSERT INTO interaction_events VALUES
           ($1, $2, 'l', 'connected|x', to_timestamp(1795410952), 'connected', $3, '{}'),
           ($1, $2, 'l', 'ringing|x', to_timestamp(1795410950), 'ringing', $3, '{}')""",
        call_id, uuid.UUID(call_id), ALICE,
    )  # fmt: skip
    status, body = await stack.request("GET", f"/api/calls/{call_id}", "alice")
    assert status == 200
    assert [r["call_id"] for r in body["recent"]] == earlier[::-1][:5]
    assert body["recent"][0] == {
        "call_id": earlier[-1],
        "routed_at": body["recent"][0]["routed_at"],
        "queue": "support",
        "rule": "gold",
        "agents": [BOB],
        "disposition": "sold",
    }
    assert [(e["kind"], e["agent"]) for e in body["timeline"]] == [
        ("ringing", ALICE),
        ("connected", ALICE),
    ]
    assert body["timeline"][0]["at"].startswith("2026-11-23T")


async def test_a_call_that_was_theirs_in_postgresql_only_is_still_theirs(
    stack: Stack, db: asyncpg.Connection
) -> None:
    """Once the call's agent set has expired from Redis, the timeline decides."""
    call_id = str(uuid.uuid4())
    await stack.store.create_many([document(call_id)])
    await db.execute(
        """INSERT INTO interaction_events VALUES
           ($1, $2, 'l', 'ringing|x', now(), 'ringing', $3, '{}')""",
        call_id, uuid.UUID(call_id), ALICE,
    )  # fmt: skip
    assert (await stack.request("GET", f"/api/calls/{call_id}", "alice"))[0] == 200
    assert (await stack.request("GET", f"/api/calls/{call_id}", "bob"))[0] == 403


async def test_an_agent_cannot_read_or_write_another_agents_call(stack: Stack) -> None:
    call_id = await stack.new_call(BOB)
    before = await snapshot(stack, call_id)
    forbidden = [
        ("GET", f"/api/calls/{call_id}", None),
        ("PATCH", f"/api/calls/{call_id}", {"version": 1, "change": {"note": "mine now"}}),
        ("POST", f"/api/calls/{call_id}/transfer", {"kind": "blind", "target": "2003"}),
        ("POST", f"/api/calls/{call_id}/transfer/complete", None),
        ("POST", f"/api/calls/{call_id}/transfer/cancel", None),
        ("POST", f"/api/calls/{call_id}/hangup", None),
    ]
    for method, path, body in forbidden:
        status, answer = await stack.request(method, path, "alice", json=body)
        assert (status, answer["error"]) == (403, "forbidden"), path
    assert await snapshot(stack, call_id) == before


async def test_unknown_calls_are_forbidden_to_agents_and_unknown_to_supervisors(
    stack: Stack,
) -> None:
    for call_id in (str(uuid.uuid4()), "not-a-call-id", "L:1795410950.99"):
        status, answer = await stack.request("GET", f"/api/calls/{call_id}", "alice")
        assert (status, answer["error"]) == (403, "forbidden")
        status, answer = await stack.request("GET", f"/api/calls/{call_id}", "boss")
        assert (status, answer["error"]) == (404, "unknown_call")
    status, answer = await stack.request(
        "PATCH", f"/api/calls/{uuid.uuid4()}", "boss", json={"version": 1, "change": {"note": "x"}}
    )
    assert (status, answer["error"]) == (404, "unknown_call")


async def test_a_supervisor_reads_every_call_but_writes_only_their_own(stack: Stack) -> None:
    call_id = await stack.new_call(BOB)
    status, body = await stack.request("GET", f"/api/calls/{call_id}", "boss")
    assert status == 200 and body["call"]["call_id"] == call_id
    status, answer = await stack.request(
        "PATCH", f"/api/calls/{call_id}", "boss", json={"version": 1, "change": {"note": "x"}}
    )
    assert (status, answer["error"]) == (403, "forbidden")


async def test_an_edit_with_the_current_version_is_stored_and_announced(stack: Stack) -> None:
    call_id = await stack.new_call(ALICE, BOB)
    await stack.answer(call_id, ALICE)  # a transfer: alice, then bob talked
    await stack.answer(call_id, BOB)
    change = {"note": "wants a callback", "tags": ["vip"], "attributes": {"order": "A-1"}}
    status, body = await stack.request(
        "PATCH", f"/api/calls/{call_id}", "alice", json={"version": 1, "change": change}
    )
    assert status == 200, body
    new = body["call"]
    assert new["version"] == 2 and new["updated_by"] == "alice"
    assert new["notes"][0]["text"] == "wants a callback" and new["tags"] == ["vip"]
    assert json.loads(await stack.redis.get(data_key(call_id))) == new
    for endpoint in (ALICE, BOB):
        entries = await stack.redis.xrange(agent_stream(endpoint))
        last = json.loads(entries[-1][1][b"e"])
        assert last["event"] == "data_changed" and last["version"] == 2, endpoint
        assert last["call_key"] == call_id and last["by"] == "alice"
    status, body = await stack.request("GET", f"/api/calls/{call_id}", "bob")
    assert body["call"]["version"] == 2


async def test_a_version_written_with_a_fraction_of_zero_is_that_integer(stack: Stack) -> None:
    """JSON has one number type (JSON Schema's integer includes 1.0); 1.5 is not a version."""
    call_id = await stack.new_call(ALICE)
    await stack.answer(call_id, ALICE)
    status, body = await stack.request(
        "PATCH", f"/api/calls/{call_id}", "alice", json={"version": 1.0, "change": {"note": "a"}}
    )
    assert (status, body["call"]["version"]) == (200, 2)
    status, body = await stack.request(
        "PATCH", f"/api/calls/{call_id}", "alice", json={"version": 2.5, "change": {"note": "b"}}
    )
    assert (status, body["error"], body["field"]) == (400, "invalid", "version")


async def test_a_stale_version_is_refused_with_the_current_document(stack: Stack) -> None:
    call_id = await stack.new_call(ALICE, BOB)
    await stack.answer(call_id, ALICE)  # a transfer: alice, then bob talked
    await stack.answer(call_id, BOB)
    status, body = await stack.request(
        "PATCH", f"/api/calls/{call_id}", "bob", json={"version": 1, "change": {"note": "b"}}
    )
    assert status == 200
    before = await snapshot(stack, call_id)
    status, body = await stack.request(
        "PATCH", f"/api/calls/{call_id}", "alice", json={"version": 1, "change": {"note": "a"}}
    )
    assert status == 409
    assert body["error"] == "stale_version"
    assert body["current"]["version"] == 2 and body["current"]["notes"][0]["by"] == "bob"
    assert await snapshot(stack, call_id) == before


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        pytest.param(b"{not json", 400, "invalid", id="not-json"),
        pytest.param(b"\xff\xfe\x00", 400, "invalid", id="not-utf8"),
        pytest.param(b"[1, 2]", 400, "invalid", id="a-list"),
        pytest.param(b'"version"', 400, "invalid", id="a-string"),
        pytest.param(b"[" * 50_000, 400, "invalid", id="deep-nesting"),
        pytest.param(b"", 400, "invalid", id="empty"),
        pytest.param(
            json.dumps({"change": {"note": "x"}}).encode(), 400, "invalid", id="no-version"
        ),
        pytest.param(
            json.dumps({"version": "1", "change": {"note": "x"}}).encode(),
            400,
            "invalid",
            id="version-string",
        ),
        pytest.param(
            json.dumps({"version": True, "change": {"note": "x"}}).encode(),
            400,
            "invalid",
            id="version-bool",
        ),
        pytest.param(
            json.dumps({"version": 1, "change": ["note"]}).encode(),
            400,
            "invalid",
            id="change-list",
        ),
        pytest.param(
            json.dumps({"version": 1, "change": {"note": "x"}, "x": 1}).encode(),
            400,
            "invalid",
            id="unknown-field",
        ),
        pytest.param(
            json.dumps({"version": 1, "change": {"customer": "me"}}).encode(),
            400,
            "invalid",
            id="route-field",
        ),
        pytest.param(
            json.dumps({"version": 1, "change": {"note": 5}}).encode(),
            400,
            "invalid",
            id="note-number",
        ),
        pytest.param(
            json.dumps({"version": 1, "change": {"note": "a\x00b"}}).encode(),
            400,
            "invalid",
            id="note-nul",
        ),
        pytest.param(
            json.dumps({"version": 1, "change": {"note": "n" * 4001}}).encode(),
            413,
            "too_large",
            id="note-too-long",
        ),
        pytest.param(
            json.dumps({"version": 1, "change": {"tags": ["t"] * 21}}).encode(),
            413,
            "too_large",
            id="too-many-tags",
        ),
        pytest.param(
            json.dumps({"version": 1, "change": {"note": "n" * 70_000}}).encode(),
            413,
            "too_large",
            id="body-over-64k",
        ),
    ],
)
async def test_malformed_or_oversized_edits_change_nothing(
    stack: Stack, body: bytes, status: int, code: str
) -> None:
    call_id = await stack.new_call(ALICE)
    await stack.answer(call_id, ALICE)
    before = await snapshot(stack, call_id)
    got, answer = await stack.request(
        "PATCH",
        f"/api/calls/{call_id}",
        "alice",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert (got, answer["error"]) == (status, code), answer
    assert answer["message"]
    assert await snapshot(stack, call_id) == before


async def test_an_oversized_body_is_refused_without_a_length_too(stack: Stack) -> None:
    """A chunked body (no Content-Length) is cut off at the limit as it is read."""
    call_id = await stack.new_call(ALICE)
    await stack.answer(call_id, ALICE)
    before = await snapshot(stack, call_id)

    async def chunks():
        payload = json.dumps({"version": 1, "change": {"note": "n" * 100_000}}).encode()
        for start in range(0, len(payload), 8192):
            yield payload[start : start + 8192]

    status, answer = await stack.request("PATCH", f"/api/calls/{call_id}", "alice", data=chunks())
    assert (status, answer["error"]) == (413, "too_large")
    status, answer = await stack.request("POST", "/api/login", data=b"x" * 70_000)
    assert (status, answer["error"]) == (413, "too_large")
    assert await snapshot(stack, call_id) == before


# -- call control and pausing ----------------------------------------------------------
async def test_call_control_without_ami_is_unavailable(stack: Stack) -> None:
    call_id = await stack.new_call(ALICE)
    for path, body in [
        ("/transfer", {"kind": "blind", "target": "2003"}),
        ("/transfer", {"kind": "attended", "target": "sales"}),
        ("/transfer/complete", None),
        ("/transfer/cancel", None),
        ("/hangup", None),
    ]:
        status, answer = await stack.request(
            "POST", f"/api/calls/{call_id}{path}", "alice", json=body
        )
        assert (status, answer["error"]) == (503, "ami_unavailable"), path
    status, answer = await stack.request("POST", "/api/agent/pause", "alice", json={"paused": True})
    assert (status, answer["error"]) == (503, "ami_unavailable")


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "warm", "target": "2003"},
        {"target": "2003"},
        {"kind": "blind"},
        {"kind": "blind", "target": 2003},
        {"kind": "blind", "target": "2003", "now": True},
    ],
)
async def test_a_malformed_transfer_is_invalid(stack: Stack, body: dict) -> None:
    call_id = await stack.new_call(ALICE)
    status, answer = await stack.request(
        "POST", f"/api/calls/{call_id}/transfer", "alice", json=body
    )
    assert (status, answer["error"]) == (400, "invalid")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"paused": "yes"},
        {"paused": 1},
        {"paused": True, "reason": 5},
        {"paused": True, "reason": "r" * 65},
        {"paused": True, "reason": "lunch\r\nAction: Hangup"},
        {"paused": True, "reason": "lunch\x9b"},  # C1 CSI
        {"paused": True, "reason": "lunch\ud800"},  # a lone surrogate
        {"paused": True, "why": "lunch"},
    ],
)
async def test_a_malformed_pause_is_invalid(stack: Stack, body: dict) -> None:
    status, answer = await stack.request("POST", "/api/agent/pause", "alice", json=body)
    assert (status, answer["error"]) == (400, "invalid")


@contextlib.asynccontextmanager
async def ami_on_a_call() -> AsyncIterator[
    tuple[FakeAmi, AmiClient, CallModelSink, AgentConnected]
]:
    """A fake Asterisk and an AMI client on it whose call model has replayed the recorded
    ``answered_call`` up to agent 2001 (alice) answering: (fake, client, sink, her
    AgentConnected)."""
    fake = await FakeAmi().start()
    sink = CallModelSink()
    ami = AmiClient("127.0.0.1", fake.port, "cti", "s3cret", events_sink=sink)
    stop = asyncio.Event()
    task = asyncio.create_task(ami.run(stop))
    try:
        await until(lambda: sink.up)
        for msg in parse(load("answered_call")):
            sink.apply(msg)
            connected = [e for e in sink.effects if isinstance(e, AgentConnected)]
            if connected:
                break
        assert connected[0].agent == ALICE and connected[0].call_id
        yield fake, ami, sink, connected[0]
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await fake.close()


@pytest.fixture
async def with_ami(pool, redis_client, agents) -> AsyncIterator[tuple[Stack, FakeAmi, str, str]]:
    """A stack whose call control talks to a fake Asterisk, where agent 2001 is talking
    on a recorded call: (stack, fake, call id, agent leg)."""
    async with ami_on_a_call() as (fake, ami, sink, connected):
        stack = await start_stack(pool, redis_client, control=CallControl(ami, sink.model), ami=ami)
        await log_in(stack)
        await stack.ring(connected.call_id, ALICE)
        yield stack, fake, connected.call_id, connected.channel
        await stack.client.close()


async def test_a_blind_transfer_goes_out_on_the_agents_leg(with_ami) -> None:
    stack, fake, call_id, leg = with_ami
    fake.responses["BlindTransfer"] = {"Message": "Transfer succeeded"}
    status, answer = await stack.request(
        "POST", f"/api/calls/{call_id}/transfer", "alice", json={"kind": "blind", "target": "2003"}
    )
    assert (status, answer) == (202, {})
    (action,) = fake.actions("BlindTransfer")
    assert (action.get("Channel"), action.get("Exten")) == (leg, "2003")
    status, answer = await stack.request(
        "POST", f"/api/calls/{call_id}/transfer", "alice", json={"kind": "blind", "target": "x;y"}
    )
    assert (status, answer["error"]) == (400, "invalid")
    assert len(fake.actions("BlindTransfer")) == 1


async def test_call_control_errors_keep_their_codes(with_ami) -> None:
    stack, _fake, call_id, _leg = with_ami
    other = await stack.new_call(ALICE)  # theirs, but not a live call on this Asterisk
    status, answer = await stack.request("POST", f"/api/calls/{other}/hangup", "alice")
    assert (status, answer["error"]) == (404, "unknown_call")
    await stack.ring(call_id, BOB)  # bob rang on it, but is not on it now
    status, answer = await stack.request("POST", f"/api/calls/{call_id}/hangup", "bob")
    assert (status, answer["error"]) == (409, "not_on_call")
    status, answer = await stack.request("POST", f"/api/calls/{call_id}/hangup", "alice")
    assert (status, answer["error"]) == (502, "refused")  # the fake knows no Hangup


async def test_pause_goes_to_every_queue_of_the_agent(with_ami) -> None:
    stack, fake, _call_id, _leg = with_ami
    fake.responses["QueuePause"] = {"Message": "Interface paused successfully"}
    status, answer = await stack.request(
        "POST", "/api/agent/pause", "alice", json={"paused": True, "reason": "lunch"}
    )
    assert (status, answer) == (200, {"paused": True})
    status, answer = await stack.request(
        "POST", "/api/agent/pause", "alice", json={"paused": False}
    )
    assert (status, answer) == (200, {"paused": False})
    first, second = fake.actions("QueuePause")
    assert (first.get("Interface"), first.get("Paused"), first.get("Reason")) == (
        ALICE,
        "true",
        "lunch",
    )
    assert first.get("Queue") is None  # no queue: every queue
    assert (second.get("Paused"), second.get("Reason")) == ("false", None)


async def test_a_pause_reason_is_one_of_the_plans(with_ami) -> None:
    """The sidebar offers the plan's reasons; anything else is refused before Asterisk
    hears of it (and a reason already refused for its characters stays refused)."""
    stack, fake, _call_id, _leg = with_ami
    fake.responses["QueuePause"] = {"Message": "Interface paused successfully"}
    status, answer = await stack.request("GET", "/api/pause-reasons", "alice")
    assert (status, answer) == (
        200,
        {
            "pause_reasons": [
                {"name": "lunch", "productive": False, "max_minutes": 60},
                {"name": "training", "productive": True, "max_minutes": None},
            ]
        },
    )
    for reason in ["caf\u00e9\u00a0break", "Lunch", "wrap-up", "lunch "]:
        status, answer = await stack.request(
            "POST", "/api/agent/pause", "alice", json={"paused": True, "reason": reason}
        )
        assert (status, answer["error"], answer["field"]) == (422, "not_in_plan", "reason")
    status, answer = await stack.request(
        "POST", "/api/agent/pause", "alice", json={"paused": True, "reason": "training"}
    )
    assert (status, answer) == (200, {"paused": True})
    assert [a.get("Reason") for a in fake.actions("QueuePause")] == ["training"]


# -- supervisors -----------------------------------------------------------------------
async def test_a_supervisor_lists_the_agents_and_what_they_do(stack: Stack) -> None:
    import time

    now = time.time()
    talking = await stack.new_call()
    await stack.ring(talking, BOB, at=now)
    connected = dataclasses.replace(
        ringing(talking, BOB, at=now + 1), kind="connected", fingerprint="connected|bob"
    )
    await stack.publish(connected)
    ringing_call = await stack.new_call()
    await stack.ring(ringing_call, ALICE, at=now)
    status, body = await stack.request("GET", "/api/supervisor/agents", "boss")
    assert status == 200
    assert body["agents"] == [
        {
            "username": "alice",
            "display_name": "Alice",
            "endpoint": ALICE,
            "state": "ringing",
            "call_key": ringing_call,
        },
        {
            "username": "bob",
            "display_name": "Bob",
            "endpoint": BOB,
            "state": "on_call",
            "call_key": talking,
        },
        {"username": "boss", "display_name": "Boss", "endpoint": BOSS, "state": "idle"},
    ]
    status, answer = await stack.request("GET", "/api/supervisor/agents", "alice")
    assert (status, answer["error"]) == (403, "forbidden")


# -- health and metrics ----------------------------------------------------------------
async def test_health_and_readiness(stack: Stack) -> None:
    assert await stack.request("GET", "/healthz") == (200, {"status": "ok"})
    assert await stack.request("GET", "/readyz") == (
        200,
        {"postgres": True, "redis": True, "ami": None},
    )


async def test_not_ready_while_redis_is_away(pool, agents) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    away = redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=0.5)
    # Not start_stack: it writes the lease key, which an absent Redis refuses.
    store = CallDataStore(away, 3600, pool=pool)
    app = build_app(
        pool=pool,
        redis_client=away,
        call_data=CallDataService(store, EventPublisher(away, ttl_s=3600)),
        sessions=Sessions(SECRET, 3600),
    )
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/readyz")
        assert response.status == 503
        assert await response.json() == {"postgres": True, "redis": False, "ami": None}
        assert (await client.get("/healthz")).status == 200
        # Who may see a call falls back to PostgreSQL; the call's data is in Redis only:
        # reading it says so, cleanly.
        call_id = str(uuid.uuid4())
        await pool.execute(
            """INSERT INTO interaction_events VALUES
               ($1, $2, 'l', 'ringing|x', now(), 'ringing', $3, '{}')""",
            call_id, uuid.UUID(call_id), ALICE,
        )  # fmt: skip
        login = await client.post(
            "/api/login", json={"username": "alice", "password": "alice-password"}
        )
        auth = {"Authorization": f"Bearer {(await login.json())['token']}"}
        response = await client.get(f"/api/calls/{call_id}", headers=auth)
        assert response.status == 503
        assert (await response.json())["error"] == "unavailable"
        response = await client.get(f"/api/calls/{uuid.uuid4()}", headers=auth)
        assert response.status == 403
        response = await client.get("/api/me", headers=auth)
        assert (response.status, (await response.json())["partial"]) == (200, True)
    await away.aclose()


async def test_metrics_name_every_metric(stack: Stack) -> None:
    async with stack.client.get("/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    for name in (
        "cti_routes_total",
        "cti_route_decision_seconds",
        "cti_ami_connected",
        "cti_ami_events_total",
        "cti_ami_leader",
        "cti_standby_window_events",
        "cti_standby_overflow_events_total",
        "cti_pops_total",
        "cti_pop_latency_seconds",
        "cti_websocket_clients",
        "cti_websocket_resyncs_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in text, name


async def test_the_daemon_serves_the_api_and_counts_routes(seeded, tmp_path, redis_client) -> None:
    from cti.config import Config
    from tests.integration.conftest import start_daemon

    config = Config(
        database_url=seeded,
        redis_url=REDIS_URL,
        agi_bind=HostPort("127.0.0.1", 0),
        http_bind=HostPort("127.0.0.1", 0),
        plan_cache=str(tmp_path / "plan-cache.toml"),
        http_enabled=True,
        session_secret=SECRET.decode(),
    )
    running = await start_daemon(config)
    try:
        assert running.daemon.http is not None
        port = running.daemon.http.port
        result = await running.call(callerid="2120000001", dnid="5550100")
        assert result.var("CTI_ROUTE") == "queue"
        from aiohttp import ClientSession

        async with ClientSession(f"http://127.0.0.1:{port}") as http:
            async with http.get("/metrics") as response:
                text = await response.text()
            assert 'cti_routes_total{fail_open="no",route="queue"} 1.0' in text
            assert "cti_route_decision_seconds_count 1.0" in text
            async with http.get("/readyz") as response:
                assert response.status == 200
            async with http.post(
                f"/api/calls/{uuid.uuid4()}/hangup", headers={"Authorization": "Bearer x"}
            ) as response:
                assert response.status == 401
    finally:
        await running.daemon.shutdown(writer_grace_s=2)


# -- who may write a call --------------------------------------------------------------
def ring_stopped(call_id: str, endpoint: str) -> CallEvent:
    return dataclasses.replace(
        ringing(call_id, endpoint), kind="ring_stopped", fingerprint=f"ring_stopped|{endpoint}"
    )


async def test_an_agent_whose_phone_only_rang_cannot_overwrite_who_took_the_call(
    stack: Stack,
) -> None:
    """Queue rings alice and bob; bob answers. Alice may read the pop while it rings,
    neither read nor write the call afterwards; bob writes it."""
    call_id = await stack.new_call(ALICE, BOB)
    status, _ = await stack.request("GET", f"/api/calls/{call_id}", "alice")
    assert status == 200  # the screen pop while it rings
    edit = {"version": 1, "change": {"disposition": "sale", "tags": ["mine"]}}
    status, answer = await stack.request("PATCH", f"/api/calls/{call_id}", "alice", json=edit)
    assert (status, answer["error"]) == (403, "forbidden")  # ringing is not handling
    await stack.publish(ring_stopped(call_id, ALICE))
    await stack.answer(call_id, BOB)
    status, body = await stack.request("PATCH", f"/api/calls/{call_id}", "bob", json=edit)
    assert status == 200, body
    for method, kw in (("GET", {}), ("PATCH", {"json": {**edit, "version": 2}})):
        status, answer = await stack.request(method, f"/api/calls/{call_id}", "alice", **kw)
        assert (status, answer["error"]) == (403, "forbidden"), method
    assert json.loads(await stack.redis.get(data_key(call_id)))["updated_by"] == "bob"


async def test_who_talked_is_known_from_postgresql_once_redis_has_forgotten(
    stack: Stack,
) -> None:
    """The call's keys in Redis expired: the timeline decides, the same way."""
    call_id = str(uuid.uuid4())
    await stack.store.create_many([document(call_id)])
    await stack.pool.execute(
        """INSERT INTO interaction_events VALUES
           ($1, $2, 'l', 'ringing|a', to_timestamp(1795410950), 'ringing', $3, '{}'),
           ($1, $2, 'l', 'ringing|b', to_timestamp(1795410950), 'ringing', $4, '{}'),
           ($1, $2, 'l', 'ring_stopped|a', to_timestamp(1795410951), 'ring_stopped', $3, '{}'),
           ($1, $2, 'l', 'connected|b', to_timestamp(1795410952), 'connected', $4, '{}')""",
        call_id, uuid.UUID(call_id), ALICE, BOB,
    )  # fmt: skip
    edit = {"version": 1, "change": {"note": "x"}}
    status, answer = await stack.request("PATCH", f"/api/calls/{call_id}", "alice", json=edit)
    assert (status, answer["error"]) == (403, "forbidden")
    assert (await stack.request("GET", f"/api/calls/{call_id}", "alice"))[0] == 403
    status, body = await stack.request("PATCH", f"/api/calls/{call_id}", "bob", json=edit)
    assert status == 200, body


async def test_a_supervisor_writes_a_call_they_talked_on(stack: Stack) -> None:
    call_id = await stack.new_call(BOB)
    await stack.answer(call_id, BOSS)  # bob escalated the caller to his supervisor
    status, body = await stack.request(
        "PATCH", f"/api/calls/{call_id}", "boss", json={"version": 1, "change": {"note": "ok"}}
    )
    assert status == 200, body
