"""The supervisor's actions on agents and the plan's pause reasons, as JSON routes
(docs/screenpop-api.md "Supervisors"): parse, check, call :mod:`cti.agents.supervision`.

Who is asking is checked before the body is read: an agent gets 403 ``forbidden`` for
every supervisor route, whatever it sends. The agent acted on is named by user name in
the path (404 ``unknown_agent``); the supervisor's own phone is the endpoint of their
agent record, which their token carries (a changed record revokes the token).
"""

from __future__ import annotations

import re
from typing import Any

import structlog
from aiohttp import web

from cti.agents.supervision import SPY_MODES, Person, Supervision
from cti.calls.control import check_pause_reason
from cti.errors import DomainError
from cti.routing.plan import NAME
from cti.routing.table import RoutingTable
from cti.screenpop.agents import USERNAME, find_agent
from cti.screenpop.auth import Claims
from cti.screenpop.context import Context, authenticate, context
from cti.screenpop.errors import invalid, only_fields, read_json_object

log = structlog.get_logger(__name__)

MAX_QUEUE_CHARS = 64
MAX_REASON_CHARS = 64
DEFAULT_AUDIT_ROWS = 50
MAX_AUDIT_ROWS = 500
_DIGITS = re.compile(r"[0-9]{1,4}")


def _supervisor(request: web.Request) -> Claims:
    who = authenticate(request)
    if not who.is_supervisor:
        raise DomainError("forbidden", "for supervisors only")
    return who


async def _target(ctx: Context, request: web.Request) -> Person:
    username = request.match_info["username"]
    found = await find_agent(ctx.pool, username) if USERNAME.fullmatch(username) else None
    if found is None:
        raise DomainError("unknown_agent", f"no agent {username[:64]!r}")
    return Person(found[0].username, found[0].endpoint)


def _supervision(ctx: Context) -> Supervision:
    if ctx.supervision is None:
        raise DomainError(
            "ami_unavailable", "supervisor actions need the AMI connection, which is off here"
        )
    return ctx.supervision


def _optional_string(body: dict[str, Any], name: str, max_chars: int) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(name, "a string")
    if not 1 <= len(value) <= max_chars:
        raise invalid(name, f"1 to {max_chars} characters")
    return value


def _queue_name(body: dict[str, Any]) -> str | None:
    """A queue name as the plan spells them (whether the plan has it is the service's
    question, and its refusal is recorded)."""
    queue = _optional_string(body, "queue", MAX_QUEUE_CHARS)
    if queue is not None and not NAME.match(queue):
        raise invalid("queue", "a queue name: letters, digits, '_', '.' or '-'")
    return queue


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if not isinstance(value, bool):
        raise invalid(name, "required, true or false")
    return value


async def pause_agent(request: web.Request) -> web.Response:
    """QueuePause on the agent's device, in every queue or in ``queue``."""
    ctx = context(request)
    who = _supervisor(request)
    body = await read_json_object(request)
    only_fields(body, {"paused", "reason", "queue"})
    paused = _flag(body, "paused")
    reason = check_pause_reason(_optional_string(body, "reason", MAX_REASON_CHARS))
    queue = _queue_name(body)
    target = await _target(ctx, request)
    await _supervision(ctx).pause(Person(who.username, who.endpoint), target, paused, reason, queue)
    return web.json_response({"paused": paused})


async def queue_member(request: web.Request) -> web.Response:
    """QueueAdd / QueueRemove of the agent's device in a queue of the plan."""
    ctx = context(request)
    who = _supervisor(request)
    body = await read_json_object(request)
    only_fields(body, {"queue", "logged_in"})
    queue = _queue_name(body)
    if queue is None:
        raise invalid("queue", "required, a string")
    logged_in = _flag(body, "logged_in")
    target = await _target(ctx, request)
    await _supervision(ctx).queue_member(
        Person(who.username, who.endpoint), target, queue, logged_in
    )
    return web.json_response({"queue": queue, "logged_in": logged_in})


async def spy(request: web.Request) -> web.Response:
    """The supervisor's phone rings; answered, it listens, whispers or barges."""
    ctx = context(request)
    who = _supervisor(request)
    body = await read_json_object(request)
    only_fields(body, {"mode"})
    mode = body.get("mode")
    if mode not in SPY_MODES:
        raise invalid("mode", "required, 'listen', 'whisper' or 'barge'")
    target = await _target(ctx, request)
    call = await _supervision(ctx).spy(Person(who.username, who.endpoint), target, mode)
    return web.json_response({"mode": mode, "call_key": call}, status=202)


async def audit(request: web.Request) -> web.Response:
    """The newest supervisor actions first (``?agent=`` one agent's, ``?limit=``)."""
    ctx = context(request)
    _supervisor(request)
    for key in request.query:
        if key not in ("limit", "agent"):
            raise invalid(key[:64], "unknown parameter; allowed: agent, limit")
    raw_limit = request.query.get("limit", str(DEFAULT_AUDIT_ROWS))
    if not _DIGITS.fullmatch(raw_limit) or not 1 <= int(raw_limit) <= MAX_AUDIT_ROWS:
        raise invalid("limit", f"a whole number from 1 to {MAX_AUDIT_ROWS}")
    agent = request.query.get("agent")
    if agent is not None and not USERNAME.fullmatch(agent):
        raise invalid("agent", "a user name")
    rows = await ctx.audit.recent(int(raw_limit), agent) if ctx.audit is not None else []
    return web.json_response({"entries": [row.as_json() for row in rows]})


def _reasons(table: RoutingTable) -> list[dict[str, Any]]:
    return [
        {"name": r.name, "productive": r.productive, "max_minutes": r.max_minutes}
        for r in table.pause_reasons
    ]


async def pause_reasons(request: web.Request) -> web.Response:
    """The plan's pause reasons, for the Pause button (any agent)."""
    authenticate(request)
    return web.json_response({"pause_reasons": _reasons(context(request).table())})


async def plan(request: web.Request) -> web.Response:
    """What the supervisor's actions may name: the plan's queues and pause reasons."""
    _supervisor(request)
    table = context(request).table()
    queues = [{"name": q.name, "description": q.description} for q in table.queues.values()]
    return web.json_response({"queues": queues, "pause_reasons": _reasons(table)})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/pause-reasons", pause_reasons)
    app.router.add_post("/api/supervisor/agents/{username}/pause", pause_agent)
    app.router.add_post("/api/supervisor/agents/{username}/queue", queue_member)
    app.router.add_post("/api/supervisor/agents/{username}/spy", spy)
    app.router.add_get("/api/supervisor/audit", audit)
    app.router.add_get("/api/supervisor/plan", plan)
