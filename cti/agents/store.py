"""Where agent states live: two Redis hashes and one PostgreSQL table, owned here.

Redis (read them through this module only):

* ``cti:agents:state`` — agent device -> its current status as JSON
  (:func:`cti.agents.state.status_to_json`), kept by the AMI leader;
* ``cti:agents:wrapup`` — agent device -> its pending wrap-up as JSON
  (``until``, ``call_id``, ``queue``, ``done``). The leader writes it when a wrap-up
  starts and removes it when it ends; the sidebar's disposition marks it ``done``
  (any instance, :meth:`AgentStore.disposition_saved`), and the leader ends it. A new
  leader reads it after a takeover, so it finishes every wrap-up on time.

Several PBXes (:mod:`cti.pbx`) share both hashes: an agent is its device as cti names
it (``PJSIP/2001`` on the home PBX, ``PJSIP/2001@b`` on PBX ``b``), so two PBXes' agents
never collide, and each PBX's leader touches only its own agents (the ``ours``
predicate: :meth:`cti.agents.state.AgentBoard.owns`), so leaders of different PBXes
never undo each other's writes.

PostgreSQL: ``agent_state_log`` (migration 006), one row per state interval, written
through a :class:`~cti.batch_writer.BatchWriter` (:func:`state_log_batch_writer`);
a row written twice (a retried batch, a handover) is stored once.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import redis.asyncio as redis

from cti.agents.news import StateInterval
from cti.agents.state import AgentStatus, WrapUp, status_to_json
from cti.db.bulk import TIMEOUT_S

STATE_KEY = "cti:agents:state"
WRAPUP_KEY = "cti:agents:wrapup"


@dataclass(frozen=True, slots=True)
class WrapUpRecord:
    """A pending wrap-up as Redis holds it; ``done``: the disposition was saved."""

    until: float
    call_id: str | None
    queue: str | None
    done: bool = False

    @property
    def wrap(self) -> WrapUp:
        return WrapUp(self.until, self.call_id, self.queue)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _record(raw: bytes | str) -> WrapUpRecord | None:
    try:
        data = json.loads(raw)
        return WrapUpRecord(
            float(data["until"]), data.get("call_id"), data.get("queue"), bool(data.get("done"))
        )
    except (ValueError, KeyError, TypeError):
        return None


def _record_json(record: WrapUpRecord) -> str:
    return json.dumps(
        {
            "until": record.until,
            "call_id": record.call_id,
            "queue": record.queue,
            "done": record.done,
        },
        separators=(",", ":"),
    )


# KEYS: wrap-up hash; ARGV: agent, call id ('' = any)
# Marks the agent's pending wrap-up done when it follows that call: 1 if it did.
_DONE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local record = cjson.decode(raw)
if ARGV[2] ~= '' and record['call_id'] ~= cjson.null and record['call_id'] ~= ARGV[2] then
    return 0
end
record['done'] = true
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(record))
return 1
"""

# KEYS: wrap-up hash; ARGV: agent, the record as read
# Removes the record only if nobody changed it since (a new wrap-up started meanwhile).
_DROP = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
    return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


class AgentStore:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._done = client.register_script(_DONE)
        self._drop = client.register_script(_DROP)

    # -- current states ---------------------------------------------------------------------
    async def write_states(
        self, statuses: Iterable[AgentStatus], *, replace: Callable[[str], bool] | None = None
    ) -> None:
        """Store these statuses; ``replace``: they are every agent of whom ``replace``
        says yes (a new leader's view of its PBX), so the others of those go."""
        mapping: dict[Any, Any] = {
            s.agent: json.dumps(status_to_json(s), separators=(",", ":")) for s in statuses
        }
        stale: list[str] = []
        if replace is not None:
            names = [_text(k) for k in await self._redis.hkeys(STATE_KEY)]
            stale = [n for n in names if replace(n) and n not in mapping]
        async with self._redis.pipeline(transaction=True) as pipe:
            if stale:
                pipe.hdel(STATE_KEY, *stale)
            if mapping:
                pipe.hset(STATE_KEY, mapping=mapping)
            await pipe.execute()

    async def read_states(self, agents: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """agent -> status JSON, for ``agents`` (or all)."""
        if agents is None:
            raw = await self._redis.hgetall(STATE_KEY)
            pairs = [(_text(k), v) for k, v in raw.items()]
        else:
            if not agents:
                return {}
            values = await self._redis.hmget(STATE_KEY, list(agents))
            pairs = [(a, v) for a, v in zip(agents, values, strict=True) if v is not None]
        out = {}
        for agent, value in pairs:
            try:
                out[agent] = json.loads(value)
            except ValueError:
                continue
        return out

    # -- wrap-ups --------------------------------------------------------------------------
    async def wrap_ups(
        self, ours: Callable[[str], bool] = lambda _agent: True
    ) -> dict[str, tuple[WrapUpRecord, str]]:
        """agent -> (its pending wrap-up, the raw value for :meth:`drop_wrap_up`), of
        the agents ``ours`` names (one PBX's: the module docstring)."""
        raw = await self._redis.hgetall(WRAPUP_KEY)
        out = {}
        for key, value in raw.items():
            agent = _text(key)
            if not ours(agent):
                continue
            record = _record(value)
            if record is not None:
                out[agent] = (record, _text(value))
        return out

    async def put_wrap_up(self, agent: str, wrap: WrapUp) -> None:
        record = WrapUpRecord(wrap.until, wrap.call_id, wrap.queue)
        await self._redis.hset(WRAPUP_KEY, agent, _record_json(record))

    async def drop_wrap_up(self, agent: str, raw: str) -> bool:
        """Remove the agent's wrap-up if it is still ``raw`` (as :meth:`wrap_ups` read)."""
        return bool(await self._drop(keys=[WRAPUP_KEY], args=[agent, raw]))

    async def disposition_saved(self, agent: str, call_id: str) -> bool:
        """The agent saved ``call_id``'s disposition: their wrap-up after that call (or
        after a call with no call id) is done. True if there was one."""
        return bool(await self._done(keys=[WRAPUP_KEY], args=[agent, call_id]))


# -- the state log (PostgreSQL) ----------------------------------------------------------------
COLUMNS = ("agent", "queue", "state", "reason", "started_at", "ended_at", "call_id")
INSERT_SQL = (
    "INSERT INTO agent_state_log (agent, queue, state, reason, started_at, ended_at, call_id)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7)"
    " ON CONFLICT (agent, (coalesce(queue, '')), started_at) DO NOTHING"
)


def _when(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def interval_row(interval: StateInterval) -> tuple[object, ...]:
    return (
        interval.agent[:128],
        interval.queue[:64] if interval.queue else None,
        interval.state,
        interval.reason[:64] if interval.reason else None,
        _when(interval.started_at),
        _when(max(interval.started_at, interval.ended_at)),
        interval.call_id[:128] if interval.call_id else None,
    )


def state_log_batch_writer(
    pool: asyncpg.Pool,
) -> Callable[[Sequence[StateInterval]], Awaitable[None]]:
    """``write_batch`` for a :class:`cti.batch_writer.BatchWriter` of state intervals.
    Always INSERT ... ON CONFLICT DO NOTHING: an interval may come twice (a handover)."""

    async def write_batch(intervals: Sequence[StateInterval]) -> None:
        rows = [interval_row(i) for i in intervals]
        await pool.executemany(INSERT_SQL, rows, timeout=TIMEOUT_S)

    return write_batch


async def state_log(
    pool: asyncpg.Pool | asyncpg.Connection, agent: str, since: float
) -> list[dict[str, Any]]:
    """The agent's logged intervals that started at or after ``since`` (tests, reports)."""
    records = await pool.fetch(
        "SELECT queue, state, reason, started_at, ended_at, call_id FROM agent_state_log"
        " WHERE agent = $1 AND started_at >= $2 ORDER BY started_at, queue NULLS FIRST",
        agent,
        _when(since),
        timeout=TIMEOUT_S,
    )
    return [dict(r) for r in records]


# -- for the reports (cti.reports.store): how to read the state log inside their SQL ----
def wrapup_by_call_sql(start: str, end: str, *, by_agent: bool) -> str:
    """A subquery of the wrap-up seconds per call (``call_id`` text) and, ``by_agent``,
    per agent (``agent``) as ``secs``, of wrap-ups that began in ``[start, end + 1
    day)``; ``start``/``end`` are the caller's SQL expressions (placeholders)."""
    keys = "call_id, agent" if by_agent else "call_id"
    return f"""(SELECT {keys}, sum(extract(epoch FROM ended_at - started_at)) AS secs
               FROM agent_state_log
               WHERE state = 'wrap_up' AND queue IS NULL AND call_id IS NOT NULL
                 AND started_at >= {start} AND started_at < {end} + interval '1 day'
               GROUP BY {keys})"""


#: A state interval that began this long before a report's span is still looked at.
STATE_LOOKBACK = "1 day"


def state_time_sql(edges: str) -> str:
    """A query of the seconds each agent spent in each overall state (and pause reason)
    per interval of ``edges`` (a ``timestamptz[]`` placeholder: ``bucket`` 0 is its
    first interval), a state interval split at the boundaries it spans; logged out is
    left out, and so is a state that began more than :data:`STATE_LOOKBACK` before."""
    return f"""WITH b AS (
                SELECT i - 1 AS bucket, e[i] AS s, e[i + 1] AS t
                FROM (SELECT {edges}::timestamptz[] AS e) x,
                     generate_series(1, cardinality({edges}::timestamptz[]) - 1) AS i)
            SELECT b.bucket, l.agent, l.state, coalesce(l.reason, '') AS reason,
                   sum(extract(epoch FROM least(l.ended_at, b.t) - greatest(l.started_at, b.s)))
                       AS secs
            FROM agent_state_log l JOIN b ON l.started_at < b.t AND l.ended_at > b.s
            WHERE l.queue IS NULL AND l.state <> 'logged_out'
              AND l.started_at >= ({edges}::timestamptz[])[1] - interval '{STATE_LOOKBACK}'
              AND l.started_at < ({edges}::timestamptz[])[cardinality({edges}::timestamptz[])]
            GROUP BY 1, 2, 3, 4"""
