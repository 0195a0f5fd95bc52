"""May this agent read or write this call? Only if it is or was theirs.

"Theirs" means their endpoint rang or talked on it. The event publisher keeps that set
per call in Redis (:func:`cti.calls.publisher.agents_on_call`, for as long as the call's
events live); after that, or with Redis away, the timeline in PostgreSQL says the same
(:func:`cti.timeline.store.agent_was_on_call`). A supervisor may read every call;
writing, for them as for agents, needs the call to be theirs. A refusal is a
:class:`~cti.errors.DomainError` ``forbidden``.

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
from cti.calls.publisher import agents_on_call
from cti.errors import DomainError
from cti.screenpop.auth import Claims
from cti.timeline.store import agent_was_on_call

log = structlog.get_logger(__name__)

_LINKEDID = re.compile(r"[0-9A-Za-z._-]{1,64}")
QUERY_TIMEOUT_S = 5


def forbidden() -> DomainError:
    """Not this agent's call (or no such call: an agent is not told which)."""
    return DomainError("forbidden", "this call is not yours")


def parse_call_key(raw: str) -> str | None:
    """The canonical call key (a lower-case UUID, or ``L:<linkedid>``); None if neither."""
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

    async def involved(self, call_key: str, endpoint: str) -> bool:
        """Whether ``endpoint`` rang or talked on the call: Redis first, then PostgreSQL."""
        try:
            if endpoint in await agents_on_call(self._redis, call_key):
                return True
        except (RedisError, OSError) as exc:
            log.warning("call's agent set unreadable; asking PostgreSQL", error=repr(exc))
        return await agent_was_on_call(self._pool, call_key, endpoint, timeout_s=QUERY_TIMEOUT_S)

    async def check_read(self, who: Claims, call_key: str) -> None:
        if who.is_supervisor:
            return
        await self.check_write(who, call_key)

    async def check_write(self, who: Claims, call_key: str) -> None:
        if not await self.involved(call_key, who.endpoint):
            raise forbidden()
