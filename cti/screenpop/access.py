"""May this agent read or write this call? It depends on their part in it (cti.calls.part).

An agent who talked on the call (**connected**) may read and write it; one whose phone
**rings** may read it (the screen pop) and nothing more; once it stopped ringing for
them unanswered it is not theirs (403, as for any call not theirs). The publisher keeps
who talked and who rang per call in Redis (:func:`cti.calls.publisher.agents_connected`,
:func:`~cti.calls.publisher.agents_on_call`) and whether it still rings is the tail of
the agent's own stream (:mod:`cti.screenpop.presence`); after the call's keys expire, or
with Redis away, the timeline in PostgreSQL says the same
(:func:`cti.timeline.store.agent_event_kinds`).

Call control (transfer, hang up) needs any part in the call, rang or talked: it acts on
the agent's live leg, which call control checks itself (409 ``not_on_call``).

A supervisor may read every call; writing its data, for them as for agents, needs them
to have been connected to it: a call has the authors who handled it, and a supervisor who
wants to correct one does it by talking to its agent, not behind their back. A refusal
is a :class:`~cti.errors.DomainError` ``forbidden``.

Calls are named by their key as the events give it: the route's call id (a UUID) or,
for a call that never went through the route, ``L:<linkedid>``.
"""

from __future__ import annotations

import re

import asyncpg
import redis.asyncio as redis
import structlog
from redis.exceptions import RedisError

from cti.calldata.store import CALL_ID
from cti.calls.events import LINKEDID_PREFIX
from cti.calls.part import Part, part_from_events
from cti.calls.publisher import agents_connected, agents_on_call
from cti.errors import DomainError
from cti.screenpop import presence
from cti.screenpop.auth import Claims
from cti.timeline.store import agent_event_kinds

log = structlog.get_logger(__name__)

#: A Linkedid, and the PBX it is from when that is not the home PBX (cti.calls.events).
_LINKEDID = re.compile(r"[0-9A-Za-z._-]{1,64}(@[a-z][a-z0-9_]{0,15})?")
QUERY_TIMEOUT_S = 5


def forbidden() -> DomainError:
    """Not this agent's call (or no such call: an agent is not told which)."""
    return DomainError("forbidden", "this call is not yours")


def parse_call_key(raw: str) -> str | None:
    """The canonical call key (a lower-case UUID, or ``L:<linkedid>``, ``L:<linkedid>@<pbx>``
    on a PBX other than the home one); None if neither."""
    if CALL_ID.match(raw):
        return raw.lower()
    if raw.startswith(LINKEDID_PREFIX) and _LINKEDID.fullmatch(raw[len(LINKEDID_PREFIX) :]):
        return raw
    return None


def is_call_id(call_key: str) -> bool:
    return not call_key.startswith(LINKEDID_PREFIX)


class Access:
    def __init__(self, pool: asyncpg.Pool, client: redis.Redis) -> None:
        self._pool = pool
        self._redis = client

    async def part(self, call_key: str, endpoint: str) -> Part:
        """``endpoint``'s part in the call: Redis first, then PostgreSQL."""
        try:
            if endpoint in await agents_connected(self._redis, call_key):
                return Part.CONNECTED
            if endpoint in await agents_on_call(self._redis, call_key):
                calls = await presence.read_current_calls(self._redis, endpoint)
                if calls.get(call_key) == "ringing":
                    return Part.RINGING
                # Rang, or a call published before who-talked was kept: the timeline says.
        except (RedisError, OSError) as exc:
            log.warning("call's agent sets unreadable; asking PostgreSQL", error=repr(exc))
        kinds = await agent_event_kinds(self._pool, call_key, endpoint, timeout_s=QUERY_TIMEOUT_S)
        return part_from_events(kinds)

    async def check_read(self, who: Claims, call_key: str) -> None:
        if who.is_supervisor:
            return
        if not (await self.part(call_key, who.endpoint)).may_read:
            raise forbidden()

    async def check_write(self, who: Claims, call_key: str) -> None:
        """The call's data (disposition, tags, notes): only those who talked on it."""
        if not (await self.part(call_key, who.endpoint)).may_write:
            raise forbidden()

    async def check_control(self, who: Claims, call_key: str) -> None:
        """Transfer, hang up: anyone who rang or talked on it; call control refuses
        (409 ``not_on_call``) an agent with no live leg on the call."""
        if await self.part(call_key, who.endpoint) is Part.NONE:
            raise forbidden()
