"""May this agent read or write this call? Only if it is or was theirs.

"Theirs" means their endpoint rang or talked on it. The event publisher keeps that set
per call in Redis (``cti:callev:<call_key>:agents``, for as long as the call's events
live); after that, or with Redis away, the timeline in PostgreSQL says the same
(``ringing``/``connected`` rows). A supervisor may read every call; writing, for them
as for agents, needs the call to be theirs.

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
from cti.calls.publisher import call_agents_key
from cti.screenpop.auth import Claims

log = structlog.get_logger(__name__)

_LINKEDID = re.compile(r"[0-9A-Za-z._-]{1,64}")
QUERY_TIMEOUT_S = 5

INVOLVED_SQL = """
SELECT EXISTS (
    SELECT 1 FROM interaction_events
    WHERE call_key = $1 AND agent = $2 AND kind IN ('ringing', 'connected')
)
"""


class Forbidden(Exception):
    """Not this agent's call (or no such call: an agent is not told which)."""


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
            if await self._redis.sismember(call_agents_key(call_key), endpoint):
                return True
        except (RedisError, OSError) as exc:
            log.warning("call's agent set unreadable; asking PostgreSQL", error=repr(exc))
        return bool(
            await self._pool.fetchval(INVOLVED_SQL, call_key, endpoint, timeout=QUERY_TIMEOUT_S)
        )

    async def check_read(self, who: Claims, call_key: str) -> None:
        if who.is_supervisor:
            return
        await self.check_write(who, call_key)

    async def check_write(self, who: Claims, call_key: str) -> None:
        if not await self.involved(call_key, who.endpoint):
            raise Forbidden(call_key)
