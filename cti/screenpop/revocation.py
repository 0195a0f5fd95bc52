"""Is this token still good? Its signature says who; the agents table says whether.

A token carries the agent's ``token_version`` at login; it stays valid while the row
still has that version. Logging out, a new password, a changed endpoint, role or name
bump the version, and removing the agent removes the row (cti/screenpop/agents.py),
so each ends every session of that agent: the API answers 401 at the next request and
every open WebSocket is closed 4401 within :attr:`WsLimits.revocation_check_s`.

**Cost.** The version is read from PostgreSQL at most once per ``ttl_s`` per agent per
instance (a few seconds), so a revocation takes effect within that.

**PostgreSQL away.** The last version read is trusted; an agent never read is admitted
on the signature alone (logged). The sidebar must keep working through a database
outage (calls, call data and events are in Redis), and a revocation made while the
database is down could not have been written anyway.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import asyncpg
import structlog

from cti.screenpop.agents import token_version
from cti.screenpop.auth import Claims

log = structlog.get_logger(__name__)

#: How long a version read from PostgreSQL is trusted.
CACHE_TTL_S = 2.0


class TokenVersions:
    """The agents' current token versions, read through a short cache."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        ttl_s: float = CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, int | None]] = {}

    async def revoked(self, who: Claims) -> bool:
        """Whether ``who``'s token has been revoked (the agent removed, or its version
        bumped since the token was issued)."""
        now = self._clock()
        cached = self._cache.get(who.username)
        # A token newer than the version read means the read is stale (the agent logged
        # in again, elsewhere, after a bump): it is read again, not refused.
        if (
            cached is not None
            and now - cached[0] < self._ttl_s
            and (cached[1] is None or who.token_version <= cached[1])
        ):
            return cached[1] != who.token_version
        try:
            current = await token_version(self._pool, who.username)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            log.warning("token version unreadable; trusting what is known", error=repr(exc))
            return cached is not None and cached[1] != who.token_version
        if len(self._cache) > 10_000:
            self._cache.clear()  # bounded: many distinct names cannot grow it without end
        self._cache[who.username] = (now, current)
        return current != who.token_version

    def forget(self, username: str) -> None:
        """Drop the cached version (this instance just changed it: logout)."""
        self._cache.pop(username, None)
