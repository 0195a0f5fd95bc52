"""What an agent is doing now, read from the tail of their event stream in Redis.

Why the stream and not this instance's call model: any instance serves any agent (a
``cti screenpop`` process, a standby daemon), and only the stream is the same for all of
them. The last few dozen entries of ``cti:events:agent:<endpoint>`` replayed in order
give the calls still ringing or talking; an entry older than :data:`MAX_AGE_S` is not
trusted to still be true (its ``ended`` may have been trimmed or lost with Redis).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as redis

from cti.calls.publisher import agent_stream
from cti.screenpop.streams import entry_json

#: How many of the newest entries are replayed: an agent has a handful of calls an hour.
SCAN = 50
MAX_AGE_S = 4 * 3600

_LIVE = {"ringing": "ringing", "connected": "on_call"}
_OWN_END = {"ring_stopped", "left"}  # the end of this agent's own leg
_CALL_END = {"ended"}


def current_calls(entries: list[dict[str, object]], endpoint: str, now: float) -> dict[str, str]:
    """call key → ``ringing`` or ``on_call``, from the stream's entries (oldest first)."""
    calls: dict[str, str] = {}
    for event in entries:
        key = event.get("call_key")
        kind = event.get("event")
        at = event.get("at")
        if not isinstance(key, str) or not isinstance(at, int | float) or now - at > MAX_AGE_S:
            continue
        if kind in _LIVE and event.get("agent") == endpoint:
            # A ringing after connected is a new leg (a transfer back): the latest wins.
            calls[key] = _LIVE[str(kind)]
        elif (kind in _OWN_END and event.get("agent") == endpoint) or kind in _CALL_END:
            calls.pop(key, None)
    return calls


def state_of(calls: dict[str, str]) -> tuple[str, str | None]:
    """(``on_call`` | ``ringing`` | ``idle``, the key of the call that says so)."""
    for wanted in ("on_call", "ringing"):
        keys = [key for key, state in calls.items() if state == wanted]
        if keys:
            return wanted, keys[-1]
    return "idle", None


async def read_current_calls(
    client: redis.Redis, endpoint: str, clock: Callable[[], float] = time.time
) -> dict[str, str]:
    raw = await client.xrevrange(agent_stream(endpoint), count=SCAN)
    return current_calls(_events(raw or []), endpoint, clock())


async def read_many(
    client: redis.Redis, endpoints: Sequence[str], clock: Callable[[], float] = time.time
) -> list[dict[str, str]]:
    """:func:`read_current_calls` for many agents, in one round trip."""
    if not endpoints:
        return []
    async with client.pipeline(transaction=False) as pipe:
        for endpoint in endpoints:
            pipe.xrevrange(agent_stream(endpoint), count=SCAN)
        replies = await pipe.execute()
    now = clock()
    return [
        current_calls(_events(raw), endpoint, now)
        for endpoint, raw in zip(endpoints, replies, strict=True)
    ]


def _events(newest_first: list[Any]) -> list[dict[str, object]]:
    entries = []
    for _id, fields in reversed(newest_first):
        text = entry_json(fields)
        try:
            event = json.loads(text) if text is not None else None
        except ValueError:
            continue
        if isinstance(event, dict):
            entries.append(event)
    return entries
