"""Which instances are alive, what PBXes each can reach and which leases it holds.

What :mod:`cti.calls.spread` decides from. Each instance announces itself about once a
lease renewal; an announcement lives one lease TTL, so an instance that died ages out
about when its leases expire. Two keys: a sorted set of the instances scored by when
their announcement expires, and a hash of what each announced. The expiry is counted
on Redis's clock (``TIME`` inside the script), so the instances' clocks may disagree.
One script announces, drops the expired ones and reads the live ones: one round trip.
"""

from __future__ import annotations

import json

import redis.asyncio as redis
import structlog

from cti.calls.spread import Peer

log = structlog.get_logger(__name__)

INSTANCES_KEY = "cti:ami:instances"
ANNOUNCED_KEY = "cti:ami:instances:announced"

_ANNOUNCE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, owner in ipairs(gone) do
    redis.call('HDEL', KEYS[2], owner)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], last[2])
redis.call('PEXPIREAT', KEYS[2], last[2])
local live = redis.call('ZRANGE', KEYS[1], 0, -1)
return {live, redis.call('HMGET', KEYS[2], unpack(live))}
"""


class Presence:
    """The instances' announcements in Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._announce = client.register_script(_ANNOUNCE)

    async def announce(self, me: Peer, ttl_s: float) -> list[Peer]:
        """Say who we are for ``ttl_s``; return every live instance (us included)."""
        state = json.dumps({"reach": sorted(me.reach), "holds": sorted(me.holds)})
        owners, states = await self._announce(
            keys=[INSTANCES_KEY, ANNOUNCED_KEY], args=[me.owner, state, int(ttl_s * 1000)]
        )
        peers = []
        for owner, raw in zip(owners, states, strict=True):
            peer = _peer(owner.decode(), raw)
            if peer is not None:
                peers.append(peer)
        return peers

    async def withdraw(self, owner: str) -> None:
        """A clean stop: the others need not wait for our announcement to expire."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(INSTANCES_KEY, owner)
            pipe.hdel(ANNOUNCED_KEY, owner)
            await pipe.execute()


def _peer(owner: str, raw: bytes | None) -> Peer | None:
    if raw is None:
        return None
    try:
        state = json.loads(raw)
        return Peer(owner, frozenset(state["reach"]), frozenset(state["holds"]))
    except (ValueError, KeyError, TypeError):
        log.warning("unreadable instance announcement", owner=owner)
        return None
