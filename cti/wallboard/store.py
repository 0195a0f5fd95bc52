"""The wallboard's Redis keys: its counts, its last snapshot, and the channel of its frames.

Keys (nobody else reads them; ask this module):

* ``cti:wallboard:state`` — the leader's counts (:meth:`Figures.to_state`), the id of
  the last ``cti:events`` entry they include (``cursor``) and the frame number
  (``seq``). A standby that becomes the leader loads them and reads the stream on
  from ``cursor``: no reset, no event counted twice or missed;
* ``cti:wallboard:snapshot`` — every figure as of the last frame, a hash: ``meta``
  (``seq``, ``at``, ``day``, ``timezone``, ``formula``), ``q:<queue>`` and
  ``a:<agent>`` (each as in a frame, JSON). A frame rewrites only the fields it
  carries, so its cost follows what changed, not the size of the centre
  (``GET /api/wallboard`` and a relay that resynchronises read it whole);
* channel ``cti:wallboard`` — each frame (the figures that changed), published once;
  every web process relays it to its open wallboards.

* ``cti:wallboard:leader`` — the wallboard's own lease (:data:`LEASE_KEY`, a
  :class:`cti.calls.lease.Lease`): whoever holds it counts. It is not any PBX's AMI
  lease: with several PBXes (:mod:`cti.pbx`) every PBX's leader publishes to the one
  ``cti:events`` stream, and the wallboard must count all of them once, on one
  instance, whichever PBXes that instance leads (or none).

Every write goes through one Lua script that checks the wallboard lease's owner first
(the same fencing as the call events' publisher): an instance that lost the lease
cannot overwrite the new leader's counts or publish stale frames.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from redis.exceptions import NoScriptError

#: The wallboard's lease (module docstring).
LEASE_KEY = "cti:wallboard:leader"
STATE_KEY = "cti:wallboard:state"
SNAPSHOT_KEY = "cti:wallboard:snapshot"
CHANNEL = "cti:wallboard"
#: The largest state or snapshot read back (a runaway writer must not exhaust memory).
MAX_BYTES = 64 * 2**20

# KEYS: lease, state, snapshot. ARGV: owner, state ('' = unchanged), channel, frame
# ('' = none), '1' to empty the snapshot first, then field, value, field, value, ...
_SAVE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return -1
end
if ARGV[2] ~= '' then
    redis.call('SET', KEYS[2], ARGV[2])
end
if ARGV[5] == '1' then
    redis.call('DEL', KEYS[3])
end
if #ARGV > 5 then
    redis.call('HSET', KEYS[3], unpack(ARGV, 6))
end
if ARGV[4] ~= '' then
    redis.call('PUBLISH', ARGV[3], ARGV[4])
end
return 1
"""


class NotLeader(Exception):
    """The lease is someone else's: this instance must not write the wallboard."""


@dataclass(frozen=True, slots=True)
class SavedState:
    cursor: str
    seq: int
    figures: dict[str, Any]


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _loads(raw: bytes | str | None) -> Any:
    if raw is None or len(raw) > MAX_BYTES:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


class WallboardStore:
    def __init__(self, client: redis.Redis, *, lease_key: str = LEASE_KEY) -> None:
        self._redis = client
        self._lease_key = lease_key
        self._sha: str | None = None

    async def save(
        self,
        owner: str,
        *,
        meta: dict[str, Any],
        queues: dict[str, Any],
        agents: dict[str, Any],
        frame: str,
        state: SavedState | None = None,
        reset: bool = False,
    ) -> None:
        """Write these queues' and agents' figures into the snapshot (``reset``: and
        nothing else: the old fields go), save the counts when given and publish
        ``frame`` (``''``: none), if ``owner`` holds the lease; else :class:`NotLeader`."""
        args = [
            owner,
            _dumps({"cursor": state.cursor, "seq": state.seq, "figures": state.figures})
            if state is not None
            else "",
            CHANNEL,
            frame,
            "1" if reset else "",
            "meta",
            _dumps(meta),
        ]
        for name, view in queues.items():
            args += ("q:" + name, _dumps(view))
        for name, view in agents.items():
            args += ("a:" + name, _dumps(view))
        keys = [self._lease_key, STATE_KEY, SNAPSHOT_KEY]
        try:
            if self._sha is None:
                self._sha = await self._redis.script_load(_SAVE)
            result = await self._redis.evalsha(self._sha, len(keys), *keys, *args)
        except NoScriptError:  # Redis restarted since we loaded it
            self._sha = await self._redis.script_load(_SAVE)
            result = await self._redis.evalsha(self._sha, len(keys), *keys, *args)
        if result == -1:
            raise NotLeader("the wallboard lease belongs to another instance")

    async def load_state(self) -> SavedState | None:
        state = _loads(await self._redis.get(STATE_KEY))
        if not isinstance(state, dict) or not isinstance(state.get("figures"), dict):
            return None
        cursor, seq = str(state.get("cursor", "0-0")), int(state.get("seq", 0))
        return SavedState(cursor, seq, state["figures"])

    async def snapshot(self) -> dict[str, Any] | None:
        """The figures as of the last frame (with its ``seq``), or None before any."""
        fields = await self._redis.hgetall(SNAPSHOT_KEY)
        meta = _loads(fields.get(b"meta", fields.get("meta")))
        if not isinstance(meta, dict):
            return None
        snapshot: dict[str, Any] = {**meta, "queues": {}, "agents": {}}
        for raw_name, raw in fields.items():
            name = raw_name.decode() if isinstance(raw_name, bytes) else raw_name
            kind, _, key = name.partition(":")
            view = _loads(raw)
            if kind == "q" and isinstance(view, dict):
                snapshot["queues"][key] = view
            elif kind == "a" and isinstance(view, dict):
                snapshot["agents"][key] = view
        snapshot["queues"] = dict(sorted(snapshot["queues"].items()))
        snapshot["agents"] = dict(sorted(snapshot["agents"].items()))
        return snapshot
