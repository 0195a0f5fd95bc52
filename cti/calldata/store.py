"""Call-attached data in Redis, one JSON document per call id, every version kept in PostgreSQL.

The route creates the document; agents then edit it under a version check (like HTTP
``If-Match``): an edit names the version it was made against and is refused if the
document has moved on, so two agents never overwrite each other silently. The check
and the write are one Lua script, atomic in Redis even across daemon instances.

Creation uses SET NX so that a retried write after a Redis hiccup never overwrites
what an agent has since added. Each accepted version also goes to the history writer
(:mod:`cti.calldata.history`), and a read that misses in Redis (a restart, a flush)
reloads the latest version from there and puts it back, so edits continue from it.
A version still waiting in the history writer's queue when Redis loses its copy is
the one thing that can be lost; the writer's queue is short while PostgreSQL is up.

A read after the data expired also reloads it (PostgreSQL is the record; Redis is the
working copy), for the configured TTL again: wrap-up notes after the call still work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import redis.asyncio as redis

from cti.calldata.document import (
    CALL_ID,
    CallDocument,
    StaleVersion,
    apply_change,
    check_change,
    check_size,
    deserialize,
    serialize,
)
from cti.calldata.history import HistoryRecord, HistorySink, latest_version
from cti.errors import DomainError

KEY_PREFIX = "cti:call:"

#: Compare-and-set. KEYS[1]: the call's key; ARGV[1]: the version the edit was made
#: against; ARGV[2]: the new document. Returns 1 (stored, TTL kept), 0 (no such key)
#: or the current document (its version is not ARGV[1]).
_COMPARE_AND_SET = """
local raw = redis.call('GET', KEYS[1])
if not raw then
    return 0
end
if cjson.decode(raw)['version'] ~= tonumber(ARGV[1]) then
    return raw
end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
"""
#: Attempts of an update whose key vanished between its read and its write (expired,
#: or Redis restarted): the next read reloads it from PostgreSQL, or finds nothing.
_ATTEMPTS = 2


def call_key(call_id: str) -> str:
    return f"{KEY_PREFIX}{call_id}"


def check_call_id(call_id: object) -> str:
    """The canonical (lower-case) form of a call id, which is a UUID in its usual spelling."""
    if not isinstance(call_id, str) or not CALL_ID.match(call_id):
        raise DomainError("invalid", "call_id: must be a UUID", "call_id")
    return call_id.lower()


def check_version(if_version: object) -> int:
    """The version an edit was made against (HTTP's ``If-Match``): a whole number from 1.

    The one place this is checked; an API may call it early, to refuse a malformed
    request before anything else about it. JSON has one number type (and JSON Schema's
    integer includes 2.0), so 2.0 is the integer 2; 2.5 is refused."""
    if isinstance(if_version, float) and if_version.is_integer():
        if_version = int(if_version)
    if isinstance(if_version, bool) or not isinstance(if_version, int) or if_version < 1:
        raise DomainError(
            "invalid", "version: required, a whole number from 1 (the version you read)", "version"
        )
    return if_version


class CallDataStore:
    def __init__(
        self,
        client: redis.Redis,
        ttl_s: int,
        pool: asyncpg.Pool | None = None,
        history: HistorySink | None = None,
    ) -> None:
        self._redis = client
        self._ttl_s = ttl_s
        self._pool = pool
        self._history = history
        self._compare_and_set = client.register_script(_COMPARE_AND_SET)

    async def create_many(self, documents: Sequence[CallDocument]) -> None:
        """Create each document (keyed by its ``call_id``) unless it already exists."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for doc in documents:
                pipe.set(call_key(doc["call_id"]), serialize(doc), nx=True, ex=self._ttl_s)
            await pipe.execute()

    async def get(self, call_id: str) -> CallDocument | None:
        """The current document; on a Redis miss, the latest one in PostgreSQL (if a pool
        was given), put back in Redis unless someone did so meanwhile."""
        call_id = check_call_id(call_id)
        key = call_key(call_id)
        raw = await self._redis.get(key)
        if raw is not None:
            return deserialize(raw)
        if self._pool is None:
            return None
        document = await latest_version(self._pool, call_id)
        if document is None:
            return None
        if await self._redis.set(key, serialize(document), nx=True, ex=self._ttl_s):
            return document
        raw = await self._redis.get(key)  # restored (or created) by someone else meanwhile
        return document if raw is None else deserialize(raw)

    async def current(self, call_id: str) -> CallDocument | None:
        """The document as Redis holds it, or None: one GET, never a write.

        For the ``attach`` script, which only asks "is this a call of ours, and who is
        the customer" on the caller's path: it must neither wait for PostgreSQL nor put
        anything back (the sidebar's :meth:`get` restores a lost copy when it reads)."""
        raw = await self._redis.get(call_key(check_call_id(call_id)))
        return None if raw is None else deserialize(raw)

    async def update(
        self,
        call_id: str,
        if_version: int,
        change: Mapping[str, Any],
        by: str,
        now: datetime | None = None,
    ) -> CallDocument:
        """Apply ``change`` to version ``if_version`` and return the new version.

        Raises :class:`~cti.errors.DomainError` (``invalid``, ``too_large``,
        ``unknown_call``) or :class:`StaleVersion` when the document is not (or no longer)
        at ``if_version``; nothing is stored then."""
        call_id = check_call_id(call_id)
        if_version = check_version(if_version)
        check_change(change, by)  # a malformed edit is refused before any I/O
        now = now or datetime.now(UTC)
        key = call_key(call_id)
        for _ in range(_ATTEMPTS):
            current = await self.get(call_id)
            if current is None:
                break
            if current["version"] != if_version:
                raise StaleVersion(if_version, current)
            new = apply_change(current, change, by, now)
            raw = check_size(new)
            result = await self._compare_and_set(keys=[key], args=[if_version, raw])
            if isinstance(result, bytes | str):  # str: a client with decode_responses
                raise StaleVersion(if_version, deserialize(result))
            if result == 1:
                if self._history is not None:
                    self._history.submit(
                        HistoryRecord(call_id, new["version"], raw.decode(), by, now)
                    )
                return new
        raise DomainError("unknown_call", f"call_id: no call data for {call_id}", "call_id")

    async def expire_after_end(self, call_id: str, seconds: int) -> bool:
        """Let the call's data expire ``seconds`` from now, unless it would expire sooner.

        Called when the call ends; never lengthens the lifetime (``EXPIRE ... LT``,
        Redis 7; 0 deletes it now). False when nothing changed: no such key, it already
        expires sooner, or ``call_id`` is no UUID (the call id comes from a channel
        variable; raising would make the caller's batch writer retry it for ever)."""
        if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 0:
            raise ValueError(f"seconds must be a whole number from 0, not {seconds!r}")
        if not isinstance(call_id, str) or not CALL_ID.match(call_id):
            return False
        return bool(await self._redis.expire(call_key(call_id.lower()), seconds, lt=True))
