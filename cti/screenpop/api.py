"""The sidebar's JSON routes (docs/screenpop-api.md): parse, check, call a service, answer.

Thin on purpose: what a call's data may hold is cti.calldata's business, what a call
control action does is cti.calls.control's, who may see a call is
:mod:`cti.screenpop.access`'s. Each handler checks who is asking before it reads the
body, and refuses a malformed body before it touches any store, so a refused request
changes nothing. Refusals are :class:`cti.errors.DomainError`, whoever raises them;
the error middleware (cti.screenpop.errors) gives them their HTTP status.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable
from typing import Any

import asyncpg
import structlog
from aiohttp import web
from redis.exceptions import RedisError

from cti.agents.store import AgentStore
from cti.agents.supervision import check_plan_reason
from cti.calldata.document import CallDocument
from cti.calldata.store import check_version
from cti.calls.control import CallControl, check_pause_reason
from cti.calls.publisher import agents_on_call
from cti.errors import DomainError
from cti.screenpop import callview, presence
from cti.screenpop.access import forbidden, is_call_id, parse_call_key
from cti.screenpop.agents import Agent, end_sessions, find_agent, list_agents
from cti.screenpop.auth import MAX_PASSWORD_CHARS, Claims, dummy_hash
from cti.screenpop.context import Context, authenticate, context
from cti.screenpop.errors import invalid, only_fields, read_json_object
from cti.screenpop.password_checks import RETRY_AFTER_S, Busy
from cti.screenpop.throttle import Throttled

log = structlog.get_logger(__name__)

MAX_USERNAME_CHARS = 64


def _unknown_call(who: Claims) -> DomainError:
    """An agent is not told whether a call exists, so that call ids cannot be probed."""
    if who.is_supervisor:
        return DomainError("unknown_call", "no such call")
    return forbidden()


def _call_key(request: web.Request, who: Claims) -> str:
    key = parse_call_key(request.match_info["call_id"])
    if key is None:
        raise _unknown_call(who)
    return key


async def _readable_call(request: web.Request, who: Claims) -> str:
    key = _call_key(request, who)
    await context(request).access.check_read(who, key)
    return key


async def _writable_call(request: web.Request, who: Claims, *, control: bool = False) -> str:
    """Writing the call's data needs the caller, supervisor or not, to have talked on it;
    controlling it (``control``) to have rung or talked on it (call control then checks
    the live leg itself: 409 ``not_on_call``). A supervisor (who may know that calls
    exist) hears 404 for an unknown one."""
    ctx = context(request)
    key = _call_key(request, who)
    try:
        if control:
            await ctx.access.check_control(who, key)
        else:
            await ctx.access.check_write(who, key)
    except DomainError:
        if who.is_supervisor and not await _known(ctx, key):
            raise _unknown_call(who) from None
        raise
    return key


async def _known(ctx: Context, key: str) -> bool:
    if await agents_on_call(ctx.redis, key):
        return True
    return is_call_id(key) and await ctx.call_data.get(key) is not None


def _string(body: dict[str, Any], name: str, max_chars: int) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise invalid(name, "required, a string")
    if len(value) > max_chars:
        raise invalid(name, f"at most {max_chars} characters")
    return value


# -- who is asking ---------------------------------------------------------------------
async def _not_throttled(ctx: Context, username: str, address: str) -> None:
    """429 if this name or address must wait: asked before the login takes a place in
    the password-check queue, so a throttled flood holds none of its places."""
    if ctx.throttle is not None:
        try:
            await ctx.throttle.check(username, address)
        except Throttled as exc:
            log.info("login throttled", username=username, address=address)
            ctx.metrics.login_throttled.inc()
            raise DomainError(
                "too_many_attempts",
                "too many failed logins; try again later",
                retry_after_s=exc.retry_after_s,
            ) from None


async def _check_password(ctx: Context, username: str, password: str, address: str) -> Agent:
    """The agent these credentials are, or 401 (the same answer for an unknown user as
    for a wrong password); the caller holds a place in the password-check queue."""
    found = await find_agent(ctx.pool, username)
    stored = found[1] if found is not None else dummy_hash()
    ok = await ctx.password_checks.verify(password, stored)
    if found is None or not ok:
        log.info("login refused", username=username, address=address)
        if ctx.throttle is not None:
            await ctx.throttle.failed(username, address)
        raise DomainError("bad_credentials", "wrong user name or password")
    if ctx.throttle is not None:
        await ctx.throttle.succeeded(username, address)
    return found[0]


async def login(request: web.Request) -> web.Response:
    ctx = context(request)
    body = await read_json_object(request)
    only_fields(body, {"username", "password"})
    username = _string(body, "username", MAX_USERNAME_CHARS)
    password = _string(body, "password", MAX_PASSWORD_CHARS)
    address = request.remote or "unknown"
    await _not_throttled(ctx, username, address)
    try:
        async with ctx.password_checks.place(address, username):
            found = await _check_password(ctx, username, password, address)
    except Busy:
        raise DomainError(
            "busy", "too many logins at once; try again shortly", retry_after_s=RETRY_AFTER_S
        ) from None
    agent = found
    token, claims = ctx.sessions.issue(
        username=agent.username,
        display_name=agent.display_name,
        endpoint=agent.endpoint,
        role=agent.role,
        token_version=agent.token_version,
    )
    log.info("login", username=agent.username, endpoint=agent.endpoint)
    expires_at = dt.datetime.fromtimestamp(claims.expires_at, dt.UTC).isoformat()
    return web.json_response({"token": token, "expires_at": expires_at, "agent": agent.as_json()})


async def logout(request: web.Request) -> web.Response:
    """End every session of the caller: the version bump revokes all their tokens (one
    agent, one desk; the sidebars of one browser share a token anyway), and their open
    sockets close 4401 within seconds."""
    ctx = context(request)
    who = authenticate(request)
    await end_sessions(ctx.pool, who.username)
    if ctx.token_versions is not None:
        ctx.token_versions.forget(who.username)
    log.info("logout", username=who.username)
    return web.json_response({})


async def me(request: web.Request) -> web.Response:
    who = authenticate(request)
    answer: dict[str, Any] = {"agent": who.agent_json()}
    client = context(request).redis
    try:
        answer["calls"] = list(await presence.read_current_calls(client, who.endpoint))
        # The agent's state as the AMI leader keeps it (cti.agents): wrapup_until drives
        # the sidebar's wrap-up countdown until the next agent_state event.
        states = await AgentStore(client).read_states([who.endpoint])
        answer["agent_state"] = states.get(who.endpoint)
    except (RedisError, OSError) as exc:
        log.warning("current calls unreadable", error=repr(exc))
        answer["calls"], answer["partial"] = [], True
        answer["agent_state"] = None
    return web.json_response(answer)


# -- calls -----------------------------------------------------------------------------
#: The pop can beat the route's call data to Redis: the ringing event travels AMI ->
#: daemon -> Redis -> WebSocket -> browser in a few ms, while the route's writer batches
#: for 20 ms. A read of a call the agent is on waits this long for its data.
DOCUMENT_WAIT_S = 1.0
DOCUMENT_POLL_S = 0.05


async def _document_soon(ctx: Context, call_id: str) -> CallDocument | None:
    """Polling, not an event: the data is written by another process (the route's)."""
    for _ in range(int(DOCUMENT_WAIT_S / DOCUMENT_POLL_S)):
        if (document := await ctx.call_data.get(call_id)) is not None:
            return document
        await asyncio.sleep(DOCUMENT_POLL_S)
    return await ctx.call_data.get(call_id)


async def get_call(request: web.Request) -> web.Response:
    ctx = context(request)
    who = authenticate(request)
    key = await _readable_call(request, who)
    call_id = key if is_call_id(key) else None
    document = await _document_soon(ctx, call_id) if call_id else None
    answer: dict[str, Any] = {"call": document, "recent": [], "timeline": []}
    try:
        answer["timeline"] = await callview.timeline(ctx.pool, key, call_id)
        customer_id = callview.customer_id_of(document)
        if customer_id is not None and call_id is not None:
            answer["recent"] = await callview.recent_interactions(ctx.pool, customer_id, call_id)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        # Context only: the call itself (from Redis) still shows.
        log.warning("call context unreadable", call_key=key, error=repr(exc))
        answer["partial"] = True
    if document is None and not answer["timeline"] and not await agents_on_call(ctx.redis, key):
        raise _unknown_call(who)
    return web.json_response(answer)


async def patch_call(request: web.Request) -> web.Response:
    ctx = context(request)
    who = authenticate(request)
    key = await _writable_call(request, who)
    body = await read_json_object(request)
    only_fields(body, {"version", "change"})
    version = check_version(body.get("version"))  # refused before anything else is looked at
    change = body.get("change")
    if not isinstance(change, dict):
        raise invalid("change", "required, an object")
    if not is_call_id(key):
        raise DomainError("unknown_call", "this call has no call data")
    document = await ctx.call_data.update(key, version, change, by=who.username, agent=who.endpoint)
    return web.json_response({"call": document})


def _control(ctx: Context, what: str = "call control") -> CallControl:
    if ctx.control is None:
        raise DomainError("ami_unavailable", f"{what} needs the AMI connection, which is off here")
    return ctx.control


async def _act(action: Awaitable[None]) -> web.Response:
    await action
    return web.json_response({}, status=202)


async def transfer(request: web.Request) -> web.Response:
    ctx = context(request)
    who = authenticate(request)
    key = await _writable_call(request, who, control=True)
    body = await read_json_object(request)
    only_fields(body, {"kind", "target"})
    kind = body.get("kind")
    if kind not in ("blind", "attended"):
        raise invalid("kind", "required, 'blind' or 'attended'")
    target = _string(body, "target", 64)
    control = _control(ctx)
    if kind == "blind":
        return await _act(control.blind_transfer(key, who.endpoint, target))
    return await _act(control.attended_transfer(key, who.endpoint, target))


async def complete_transfer(request: web.Request) -> web.Response:
    who = authenticate(request)
    key = await _writable_call(request, who, control=True)
    return await _act(_control(context(request)).complete_transfer(key, who.endpoint))


async def cancel_transfer(request: web.Request) -> web.Response:
    who = authenticate(request)
    key = await _writable_call(request, who, control=True)
    return await _act(_control(context(request)).cancel_transfer(key, who.endpoint))


async def hangup(request: web.Request) -> web.Response:
    who = authenticate(request)
    key = await _writable_call(request, who, control=True)
    return await _act(_control(context(request)).hangup(key, who.endpoint))


# -- the agent -------------------------------------------------------------------------
async def pause(request: web.Request) -> web.Response:
    """QueuePause without a queue: Asterisk pauses the member in every queue; the
    reason, if any, is one of the routing plan's pause reasons."""
    ctx = context(request)
    who = authenticate(request)
    body = await read_json_object(request)
    only_fields(body, {"paused", "reason"})
    paused = body.get("paused")
    if not isinstance(paused, bool):
        raise invalid("paused", "required, true or false")
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise invalid("reason", "required, a string")
    # Refused even where there is no AMI to send it to; one of the plan's reasons.
    reason = check_plan_reason(ctx.table(), reason) if paused else check_pause_reason(reason)
    await _control(ctx, "pausing").pause(who.endpoint, paused, reason)
    log.info("agent pause", username=who.username, endpoint=who.endpoint, paused=paused)
    return web.json_response({"paused": paused})


# -- supervisors -----------------------------------------------------------------------
async def supervisor_agents(request: web.Request) -> web.Response:
    ctx = context(request)
    who = authenticate(request)
    if not who.is_supervisor:
        raise DomainError("forbidden", "for supervisors only")
    agents = await list_agents(ctx.pool)
    try:
        calls = await presence.read_many(ctx.redis, [a.endpoint for a in agents])
    except (RedisError, OSError) as exc:
        log.warning("agent states unreadable", error=repr(exc))
        calls = None
    out = []
    for index, agent in enumerate(agents):
        entry: dict[str, Any] = {
            "username": agent.username,
            "display_name": agent.display_name,
            "endpoint": agent.endpoint,
            "state": "unknown",
        }
        if calls is not None:
            entry["state"], call_key = presence.state_of(calls[index])
            if call_key is not None:
                entry["call_key"] = call_key
        out.append(entry)
    return web.json_response({"agents": out})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/login", login)
    app.router.add_post("/api/logout", logout)
    app.router.add_get("/api/me", me)
    app.router.add_get("/api/calls/{call_id}", get_call)
    app.router.add_patch("/api/calls/{call_id}", patch_call)
    app.router.add_post("/api/calls/{call_id}/transfer", transfer)
    app.router.add_post("/api/calls/{call_id}/transfer/complete", complete_transfer)
    app.router.add_post("/api/calls/{call_id}/transfer/cancel", cancel_transfer)
    app.router.add_post("/api/calls/{call_id}/hangup", hangup)
    app.router.add_post("/api/agent/pause", pause)
    app.router.add_get("/api/supervisor/agents", supervisor_agents)
