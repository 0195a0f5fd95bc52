"""Call events into Redis Streams: one stream per agent, one for supervisors.

Why streams: a sidebar that reconnects asks for everything after the last entry id it
saw (``XRANGE``/``XREAD`` from that id) and misses nothing; any daemon instance can serve
any agent, whoever follows AMI. Streams keep a *time*, not a count: every ``XADD``
trims entries older than ``retention_s`` (``MINID ~ <now - retention>``: approximate,
so Redis drops whole internal nodes: up to one node, 100 entries, stays past it), and
each stream expires a day after its last entry (``ttl_s``, the call data's lifetime, or
the retention if longer: an agent who left leaves no stream behind, and one back from
lunch still finds the entry it saw last, so it resumes without a needless resync).
Older news is in PostgreSQL (the timeline). A client whose resume point was trimmed
is told so by the WebSocket (:mod:`cti.screenpop.ws`), never skipped.

Keys:

* ``cti:events`` — every event (supervisors, reports, tools);
* ``cti:events:agent:<agent>`` — the events for that agent's device (``PJSIP/2001``);
* ``cti:callev:<call_key>:agents`` — every agent who rang or talked on the call, so that
  news for "everyone on the call" (a transfer, a data change, the end) reaches them;
* ``cti:callev:<call_key>:connected`` — the agents who talked on the call (who may
  write it: cti.calls.part);
* ``cti:callev:<call_key>:seen`` — the fingerprints already published for the call.

Each event goes in with one Lua script, atomically: check the lease owner (a fencing
token: a leader that lost its lease cannot publish), skip the event if its fingerprint
was seen, else add it to every stream it belongs to. That makes publishing idempotent:
a retry after a Redis error, or a new leader re-publishing the events it buffered while
standing by, never doubles an event. The script builds the agent stream keys itself,
which a Redis Cluster would refuse: we run one Redis (or a replicated pair).

Several PBXes (:mod:`cti.pbx`): each PBX's events are published under that PBX's own
lease (:func:`cti.calls.lease.lease_key`), so the fencing check is against the lease of
the PBX the event came from. One publisher serves every PBX: the caller names the lease
with each batch (``publish_many(..., lease_key=)``; each PBX's
:class:`~cti.calls.leadership.Leadership` passes its own). The payload carries the
event's ``pbx``. Fingerprints and Linkedid call keys are already namespaced by PBX
(:mod:`cti.calls.events`), so the per-call sets of a call that crosses PBXes (one
``CTI_CALL_ID``) are shared by both PBXes' events, and nothing else is.

What to publish, and when, is :mod:`cti.calls.leadership`'s business (the outbox);
this module only knows how.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from redis.exceptions import NoScriptError

from cti.calls.events import CallEvent
from cti.calls.lease import LEASE_KEY

ALL_EVENTS_STREAM = "cti:events"
AGENT_STREAM_PREFIX = "cti:events:agent:"
#: How long the streams keep an event (seconds): CTI_STREAM_RETENTION_S.
STREAM_RETENTION_S = 3_600


def stream_entries(reply: Any) -> list[tuple[Any, Any]]:
    """The entries of a one-stream XREAD reply (RESP2 list or RESP3 map): the one
    reading of our streams' replies, for every reader (the sidebar, the wallboard)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return list(next(iter(reply.values())))
    return list(reply[0][1])


def agent_stream(agent: str) -> str:
    return AGENT_STREAM_PREFIX + agent


def call_agents_key(call_key: str) -> str:
    return f"cti:callev:{call_key}:agents"


def call_connected_key(call_key: str) -> str:
    return f"cti:callev:{call_key}:connected"


def call_seen_key(call_key: str) -> str:
    return f"cti:callev:{call_key}:seen"


async def agents_on_call(client: redis.Redis, call_key: str) -> frozenset[str]:
    """Who was on this call: every agent device that rang or talked on it, as published.

    The one way to read the set the publishing script keeps (so its key stays this
    module's business). Empty when the call is unknown here: never published, or its
    events expired (the timeline in PostgreSQL still knows, :mod:`cti.timeline.store`)."""
    members = await client.smembers(call_agents_key(call_key))
    return frozenset(m.decode() if isinstance(m, bytes) else m for m in members)


async def agents_connected(client: redis.Redis, call_key: str) -> frozenset[str]:
    """Who talked on this call (a ``connected`` event published for their device): the
    agents who may write it (cti.calls.part). Empty when unknown here, as above."""
    members = await client.smembers(call_connected_key(call_key))
    return frozenset(m.decode() if isinstance(m, bytes) else m for m in members)


# KEYS: lease, seen, agents, all-stream, connected, mark (cti.calls.recent)
# ARGV: owner ('' = unfenced), fingerprint, payload, ttl_s, min id ('<ms>-0': older
#       entries are trimmed), to_call_agents,
#       agent stream prefix, the connected agent ('' if not a connected event),
#       stream lifetime (ms: each stream expires this long after its last entry),
#       the mark the last batch left ('' = no check), recipients...
_PUBLISH = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return -1
end
if ARGV[10] ~= '' and redis.call('GET', KEYS[6]) ~= ARGV[10] then
    return -2
end
if redis.call('SADD', KEYS[2], ARGV[2]) == 0 then
    return 0
end
local ttl = tonumber(ARGV[4])
redis.call('EXPIRE', KEYS[2], ttl)
local to = {}
for i = 11, #ARGV do
    to[ARGV[i]] = true
    redis.call('SADD', KEYS[3], ARGV[i])
end
if #ARGV >= 11 then
    redis.call('EXPIRE', KEYS[3], ttl)
end
if ARGV[8] ~= '' then
    redis.call('SADD', KEYS[5], ARGV[8])
    redis.call('EXPIRE', KEYS[5], ttl)
end
if ARGV[6] == '1' then
    for _, agent in ipairs(redis.call('SMEMBERS', KEYS[3])) do
        to[agent] = true
    end
end
local keep_ms = tonumber(ARGV[9])
redis.call('XADD', KEYS[4], 'MINID', '~', ARGV[5], '*', 'e', ARGV[3])
redis.call('PEXPIRE', KEYS[4], keep_ms)
for agent, _ in pairs(to) do
    redis.call('XADD', ARGV[7] .. agent, 'MINID', '~', ARGV[5], '*', 'e', ARGV[3])
    redis.call('PEXPIRE', ARGV[7] .. agent, keep_ms)
end
return 1
"""


@dataclass(frozen=True, slots=True)
class Mark:
    """What a batch leaves in Redis, and what it expects the last one left
    (:class:`cti.calls.recent.PublishMarks`; None: no check)."""

    key: str
    value: str
    expected: str | None


class NotLeader(Exception):
    """The lease is someone else's: this instance must not publish."""


class EventPublisher:
    """Publishes :class:`CallEvent`\\ s in the order given, each at most once.

    ``publish_many`` raises :class:`NotLeader` (nothing after the refused event was
    written) or a Redis error (retry the same events: already published ones are
    skipped by their fingerprints)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        ttl_s: int,
        lease_key: str = LEASE_KEY,  # when publish_many is not told
        retention_s: float = STREAM_RETENTION_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = client
        self._sha: str | None = None  # the script's SHA once loaded into Redis
        self._ttl_s = ttl_s
        self._lease_key = lease_key
        self._retention_ms = int(retention_s * 1000)
        self._stream_life_ms = int(max(retention_s, ttl_s) * 1000)
        self._clock = clock
        self.published = 0
        self.duplicates = 0

    def _args(
        self, event: CallEvent, owner: str, min_id: str, lease_key: str, mark: Mark | None
    ) -> tuple[list[str], list[str]]:
        keys = [
            lease_key,
            call_seen_key(event.call_key),
            call_agents_key(event.call_key),
            ALL_EVENTS_STREAM,
            call_connected_key(event.call_key),
            lease_key if mark is None else mark.key,
        ]
        args = [
            owner,
            event.fingerprint,
            json.dumps(event.as_json(), separators=(",", ":")),
            str(self._ttl_s),
            min_id,
            "1" if event.to_call_agents else "0",
            AGENT_STREAM_PREFIX,
            event.agent if event.kind == "connected" and event.agent else "",
            str(self._stream_life_ms),
            (mark.expected or "") if mark is not None else "",
            *event.recipients,
        ]
        return keys, args

    async def publish_many(
        self,
        events: Sequence[CallEvent],
        owner: str,
        *,
        lease_key: str | None = None,
        mark: Mark | None = None,
    ) -> str | None:
        """One round trip for the batch. ``owner=''`` publishes without the lease check
        (edits of call data, which any instance may make). ``lease_key``: the lease
        ``owner`` must hold, that of the PBX the events came from (default: the one
        given at construction, the single PBX's).

        ``mark`` (:mod:`cti.calls.recent`): each event goes in only if the mark key
        holds ``mark.expected`` (when given), and the pipeline ends with ``SET key
        value GET``; the value found there before is returned. When it is not
        ``expected``, nothing of the batch was written (Redis lost the last batches:
        the caller publishes those first, then this batch again). None without a mark."""
        if not events:
            return None
        key = self._lease_key if lease_key is None else lease_key
        try:
            results = await self._run(events, owner, key, mark)
        except NoScriptError:  # Redis restarted (or SCRIPT FLUSH) since we loaded it
            self._sha = None
            results = await self._run(events, owner, key, mark)
        found = _text(results.pop()) if mark is not None else None
        for result in results:
            if result == -1:
                raise NotLeader(f"the AMI lease {key} belongs to another instance")
            if result == 1:
                self.published += 1
            elif result == 0:
                self.duplicates += 1
        return found

    async def read_mark(self, key: str) -> str | None:
        """The mark the last batch left (``publish_many(..., mark=)``), if any."""
        return _text(await self._redis.get(key))

    async def _run(
        self,
        events: Sequence[CallEvent],
        owner: str,
        lease_key: str,
        mark: Mark | None,
    ) -> list[object]:
        """EVALSHA in one pipeline. Not redis-py's Script object: with a pipeline it sends
        SCRIPT EXISTS first, a second round trip for every batch."""
        if self._sha is None:
            self._sha = await self._redis.script_load(_PUBLISH)
        # Stream ids are Redis's clock in ms; ours may differ by the hosts' skew, which is
        # seconds against a retention of an hour.
        min_id = f"{max(int(self._clock() * 1000) - self._retention_ms, 0)}-0"
        async with self._redis.pipeline(transaction=False) as pipe:
            for event in events:
                keys, args = self._args(event, owner, min_id, lease_key, mark)
                pipe.evalsha(self._sha, len(keys), *keys, *args)
            if mark is not None:  # last: it vouches for everything before it
                pipe.set(mark.key, mark.value, get=True, px=self._stream_life_ms)
            return list(await pipe.execute())


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
