"""Revoking sessions, over real HTTP and WebSocket on real PostgreSQL and Redis.

A token used to be good for its whole life (12 h): an agent removed from the database
still read /api/me and still got their endpoint's calls on /ws. Now logging out, the
CLI's passwd/remove/set each revoke the agent's tokens: the API answers 401 and an open
socket is closed 4401 within 5 s (CLI changes are seen through a cache of a few
seconds, so both are awaited with a deadline rather than checked at once).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis.asyncio as redis
from aiohttp import WSMsgType

from cti.screenpop.agents import end_sessions
from cti.screenpop.context import WsLimits
from cti.screenpop.ws import TOKEN_EXPIRED
from tests.integration.test_cli import cti
from tests.integration.test_screenpop_api import PASSWORDS, Stack, running_stack
from tests.waiting import until

REVOKED_WITHIN_S = 5.0


@pytest.fixture
async def stack(database_url: str, redis_client: redis.Redis) -> AsyncIterator[Stack]:
    async with running_stack(database_url, redis_client, ws_limits=WsLimits(block_ms=500)) as stack:
        yield stack


async def sidebar(stack: Stack, who: str) -> aiohttp.ClientWebSocketResponse:
    ws = await stack.client.ws_connect("/ws", params={"token": stack.tokens[who]})
    hello = await ws.receive_json(timeout=5)
    assert hello["type"] == "hello"
    return ws


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """The close code, once the server closes the socket (the close frame is the event)."""
    async with asyncio.timeout(REVOKED_WITHIN_S):
        while True:
            msg = await ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
                return ws.close_code


async def me_status(stack: Stack, who: str) -> int:
    return (await stack.request("GET", "/api/me", who))[0]


async def assert_revoked(stack: Stack, who: str, ws: aiohttp.ClientWebSocketResponse) -> None:
    assert await closed_with(ws) == TOKEN_EXPIRED
    await until(lambda: _is(me_status(stack, who), 401), within_s=REVOKED_WITHIN_S)
    status, body = await stack.request("GET", "/api/me", who)
    assert (status, body["error"]) == (401, "unauthorized")


async def _is(status: asyncio.Future[int] | object, wanted: int) -> bool:
    return await status == wanted  # type: ignore[misc]


async def login(stack: Stack, who: str, password: str) -> tuple[int, dict]:
    return await stack.request("POST", "/api/login", json={"username": who, "password": password})


async def test_logout_revokes_the_token_at_once_and_closes_the_sidebar(stack: Stack) -> None:
    ws = await sidebar(stack, "alice")
    bobs = await sidebar(stack, "bob")
    status, body = await stack.request("POST", "/api/logout", "alice")
    assert (status, body) == (200, {})
    assert await me_status(stack, "alice") == 401  # this instance knows at once
    assert await closed_with(ws) == TOKEN_EXPIRED
    # Nobody else is logged out; and logging in again gives a token that works.
    assert await me_status(stack, "bob") == 200 and not bobs.closed
    await bobs.close()
    status, body = await login(stack, "alice", PASSWORDS["alice"])
    assert status == 200
    stack.tokens["alice"] = body["token"]
    assert await me_status(stack, "alice") == 200


async def test_logout_needs_a_valid_token(stack: Stack) -> None:
    status, body = await stack.request(
        "POST", "/api/logout", headers={"Authorization": "Bearer nope"}
    )
    assert (status, body["error"]) == (401, "unauthorized")


async def test_removing_the_agent_revokes_their_token(stack: Stack, database_url: str) -> None:
    ws = await sidebar(stack, "alice")
    code, out, err = await cti("agents", "remove", "alice", database_url=database_url)
    assert code == 0, err
    assert "removed alice" in out
    await assert_revoked(stack, "alice", ws)
    assert (await login(stack, "alice", PASSWORDS["alice"]))[0] == 401
    code, _, err = await cti("agents", "remove", "alice", database_url=database_url)
    assert code != 0 and "no agent 'alice'" in err


async def test_a_new_password_revokes_the_token_and_replaces_the_old_one(
    stack: Stack, database_url: str
) -> None:
    ws = await sidebar(stack, "alice")
    code, _, err = await cti(
        "agents", "passwd", "alice", "--password-env", "NEW_PW",
        database_url=database_url, NEW_PW="a-brand-new-password",
    )  # fmt: skip
    assert code == 0, err
    await assert_revoked(stack, "alice", ws)
    assert (await login(stack, "alice", PASSWORDS["alice"]))[0] == 401
    assert (await login(stack, "alice", "a-brand-new-password"))[0] == 200


async def test_a_token_newer_than_the_version_cached_is_good_at_once(
    stack: Stack, database_url: str
) -> None:
    """Another instance (here: the table itself) ends alice's sessions, she logs in again
    at once: her new token must not be refused while this instance still holds the old
    version (it was, for up to the cache's 2 s: a page signed in and was thrown out)."""
    assert await me_status(stack, "alice") == 200  # the version is cached now
    assert await end_sessions(stack.pool, "alice")
    status, body = await login(stack, "alice", PASSWORDS["alice"])
    assert status == 200, body
    stack.tokens["alice"] = body["token"]
    assert await me_status(stack, "alice") == 200


async def test_passwd_reads_stdin_too(stack: Stack, database_url: str) -> None:
    code, _, err = await cti(
        "agents", "passwd", "bob", database_url=database_url, stdin=b"from-stdin-password\n"
    )
    assert code == 0, err
    assert (await login(stack, "bob", "from-stdin-password"))[0] == 200


async def test_changing_endpoint_or_role_revokes_the_token(stack: Stack, database_url: str) -> None:
    ws = await sidebar(stack, "alice")
    code, out, err = await cti(
        "agents", "set", "alice", "--endpoint", "PJSIP/2077", "--role", "supervisor",
        "--name", "Alice B", database_url=database_url,
    )  # fmt: skip
    assert code == 0, err
    assert "alice: supervisor on PJSIP/2077 (Alice B)" in out
    await assert_revoked(stack, "alice", ws)
    status, body = await login(stack, "alice", PASSWORDS["alice"])
    assert status == 200
    assert body["agent"] == {
        "username": "alice",
        "display_name": "Alice B",
        "endpoint": "PJSIP/2077",
        "role": "supervisor",
    }
    # A bad change is refused in words and changes nothing.
    code, _, err = await cti(
        "agents", "set", "alice", "--endpoint", "PJSIP/2002", database_url=database_url
    )
    assert code != 0 and "belongs to agent bob" in err
    code, _, err = await cti("agents", "set", "alice", database_url=database_url)
    assert code != 0 and "nothing to change" in err
    assert await me_status(stack, "bob") == 200
