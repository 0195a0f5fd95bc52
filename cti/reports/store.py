"""The reports' tables (``report_offers``, ``report_legs``, migration 010): written as
calls end, read by the reports.

:func:`store_segments` runs inside the timeline writer's transaction that summarises
ended calls (:mod:`cti.timeline.store`), so a call's segments are replaced whenever a
late event re-summarises it. :func:`offer_totals` aggregates a span of offers per
interval and group inside PostgreSQL with the SQL of :mod:`cti.reports.definitions`
(a month of a million calls is one index range scan, not a million rows to Python);
:func:`call_rows` and :func:`agent_totals` list what the ``calls`` and ``agents``
reports show.

Wrap-up and agent state time are read from the agents feature's state log
(migration 006) through the SQL its owner writes (:func:`cti.agents.store.wrapup_by_call_sql`,
:func:`cti.agents.store.state_time_sql`), joined here when a report is made: wrap-up ends
after the call, so it cannot be in the segments written at the call's end.

Why stored segments rather than deriving them from ``interaction_events`` on demand:
a call has about ten events, so a month's report would read and replay some ten
million rows each time (measured in bench/report_bench.py); the segments are written
once, in the transaction that already reads the call's events.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from cti.agents.store import state_time_sql, wrapup_by_call_sql
from cti.reports.definitions import MEASURES, Thresholds, sql_select
from cti.reports.segments import CallSegments
from cti.routing.model import TIERS, UNKNOWN_TIER

TIMEOUT_S = 10
#: A report's query may scan a month of offers.
REPORT_TIMEOUT_S = 60
#: Calls one ``calls`` report lists at most.
MAX_CALLS = 10_000

#: The groups a report may be by: report kind → column of ``report_offers``.
GROUPS = {
    "queues": "queue",
    "tiers": "tier",
    "rules": "rule",
    "dnis": "dnis",
    "services": "service",
}

_OFFER_COLUMNS = (
    "call_id, kind, seq, queue, entered_at, left_at, wait_s, outcome, position, agent,"
    " talk_s, hold_s, wrapup_s, transfers, pbx"
)
_LEG_COLUMNS = (
    "call_id, seq, agent, channel, queue, rang_at, answered_at, ended_at, talk_s, hold_s,"
    " wrapup_s, how, to_whom, started_at, pbx"
)


def _at(seconds: float | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, tz=UTC) if seconds is not None else None


def offer_rows(call_id: str, segments: CallSegments) -> list[tuple[Any, ...]]:
    key = uuid.UUID(call_id)
    rows: list[tuple[Any, ...]] = []
    for seq, v in enumerate(segments.visits):
        rows.append(
            (key, "queue", seq, v.queue, _at(v.entered), _at(v.left), v.wait_s, v.outcome,
             v.position, v.agent, v.talk_s, v.hold_s, v.wrapup_s, int(v.transferred), v.pbx)
        )  # fmt: skip
    j = segments.journey
    if j is not None:
        rows.append(
            (key, "call", 0, j.queue, _at(j.entered), _at(j.left), j.wait_s, j.outcome,
             None, None, j.talk_s, j.hold_s, j.wrapup_s, j.transfers, j.pbx)
        )  # fmt: skip
    return rows


def leg_rows(call_id: str, segments: CallSegments) -> list[tuple[Any, ...]]:
    key = uuid.UUID(call_id)
    return [
        (key, seq, leg.agent[:128], leg.channel[:256], leg.queue, _at(leg.rang),
         _at(leg.answered), _at(leg.ended), leg.talk_s, leg.hold_s, leg.wrapup_s, leg.how,
         (leg.to or "")[:128] or None, _at(leg.rang if leg.rang is not None else leg.answered)
         or _at(leg.ended), leg.pbx)
        for seq, leg in enumerate(segments.legs)
    ]  # fmt: skip


async def fill_routes(
    pool: asyncpg.Pool | asyncpg.Connection, call_ids: Sequence[str], timeout_s: float = TIMEOUT_S
) -> int:
    """Give the stored offers of these calls the tier, rule, dialled number and service of
    their route record. For a route record written after its call ended (the interactions
    writer was behind, or retried): the segments then went in without them. Idempotent:
    an offer that already holds its route's values is not rewritten. Returns how many
    offers changed."""
    if not call_ids:
        return 0
    status = await pool.execute(
        """UPDATE report_offers o SET tier = i.tier, rule = i.rule, dnis = i.dnis,
                  service = i.service
           FROM interactions i
           WHERE o.call_id = ANY($1::uuid[]) AND i.call_id = o.call_id
             AND (o.tier, o.rule, o.dnis, o.service)
                 IS DISTINCT FROM (i.tier, i.rule, i.dnis, i.service)""",
        [uuid.UUID(str(c)) for c in call_ids],
        timeout=timeout_s,
    )
    return int(status.split()[-1])


async def store_segments(
    conn: asyncpg.Connection, segments: Mapping[str, CallSegments], timeout_s: float = TIMEOUT_S
) -> None:
    """Replace the stored segments of these calls (in the caller's transaction)."""
    ids = [uuid.UUID(call_id) for call_id in segments]
    await conn.execute("DELETE FROM report_offers WHERE call_id = ANY($1)", ids, timeout=timeout_s)
    await conn.execute("DELETE FROM report_legs WHERE call_id = ANY($1)", ids, timeout=timeout_s)
    offers = [row for call_id, s in segments.items() for row in offer_rows(call_id, s)]
    legs = [row for call_id, s in segments.items() for row in leg_rows(call_id, s)]
    if offers:
        columns = [list(c) for c in zip(*offers, strict=True)]
        await conn.execute(
            f"""INSERT INTO report_offers ({_OFFER_COLUMNS}, tier, rule, dnis, service)
                SELECT r.*, i.tier, i.rule, i.dnis, i.service
                FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::timestamptz[],
                            $6::timestamptz[], $7::float8[], $8::text[], $9::int[], $10::text[],
                            $11::float8[], $12::float8[], $13::float8[], $14::int[],
                            $15::text[])
                     AS r({_OFFER_COLUMNS})
                LEFT JOIN interactions i USING (call_id)""",
            *columns,
            timeout=timeout_s,
        )
    if legs:
        columns = [list(c) for c in zip(*legs, strict=True)]
        await conn.execute(
            f"""INSERT INTO report_legs ({_LEG_COLUMNS})
                SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[],
                    $6::timestamptz[], $7::timestamptz[], $8::timestamptz[], $9::float8[],
                    $10::float8[], $11::float8[], $12::text[], $13::text[], $14::timestamptz[],
                    $15::text[])""",
            *columns,
            timeout=timeout_s,
        )


async def offer_totals(
    conn: asyncpg.Connection,
    kind: str,
    edges: Sequence[datetime],
    thresholds: Mapping[str, Thresholds],
    queues: Sequence[str] = (),
) -> dict[tuple[int, str], dict[str, float]]:
    """The measures of the offers that entered in ``[edges[0], edges[-1])``, per row
    (interval index, group value): ``kind`` is a key of :data:`GROUPS`. A queue not in
    ``thresholds`` has the defaults. ``queues`` limits to offers of those queues."""
    column = GROUPS[kind]
    offer_kind = "queue" if kind == "queues" else "call"
    names = list(thresholds)
    default = Thresholds()
    # Wrap-up is known after the call (agent states, migration 006): added here, from
    # the agent's wrap_up intervals of the call (a visit: its answering agent's).
    by_agent = offer_kind == "queue"
    sql = f"""
    SELECT width_bucket(o.entered_at, $1::timestamptz[]) - 1 AS bucket,
           coalesce(o.{column}, '') AS grp,
           {sql_select()}
    FROM (SELECT r.{column}, r.entered_at, r.wait_s, r.outcome, r.talk_s, r.hold_s,
                 r.transfers, r.wrapup_s + coalesce(w.secs, 0) AS wrapup_s,
                 coalesce(t.sl, $5) AS sl, coalesce(t.short, $6) AS short
          FROM report_offers r
          LEFT JOIN unnest($2::text[], $3::float8[], $4::float8[]) AS t(queue, sl, short)
               USING (queue)
          LEFT JOIN {wrapup_by_call_sql("$8", "$9::timestamptz", by_agent=by_agent)} w
               ON w.call_id = r.call_id::text {"AND w.agent = r.agent" if by_agent else ""}
          WHERE r.kind = $7 AND r.entered_at >= $8 AND r.entered_at < $9
            AND (cardinality($10::text[]) = 0 OR r.queue = ANY($10))) o
    GROUP BY 1, 2
    """
    records = await conn.fetch(
        sql,
        list(edges),
        names,
        [thresholds[n].sl_threshold_s for n in names],
        [thresholds[n].short_abandon_s for n in names],
        default.sl_threshold_s,
        default.short_abandon_s,
        offer_kind,
        edges[0],
        edges[-1],
        list(queues),
        timeout=REPORT_TIMEOUT_S,
    )
    return {(r["bucket"], r["grp"]): {m.name: float(r[m.name]) for m in MEASURES} for r in records}


#: Where the values a group can take are listed, so that a quiet one still gets its rows.
_GROUP_VALUES_SQL = {
    "queues": "SELECT name AS v FROM queues",
    "rules": "SELECT name AS v FROM routing_rules",
    "dnis": "SELECT dnis AS v FROM dialled_numbers",
    "services": "SELECT DISTINCT service AS v FROM dialled_numbers",
}


async def group_values(conn: asyncpg.Connection, kind: str) -> list[str]:
    """The values a group can take today (the plan's queues, rules, numbers, services;
    the tiers); history's other values come with their rows."""
    if kind == "tiers":
        return [*TIERS, UNKNOWN_TIER]
    records = await conn.fetch(_GROUP_VALUES_SQL[kind], timeout=TIMEOUT_S)
    return sorted(str(r["v"]) for r in records)


async def call_rows(
    conn: asyncpg.Connection,
    start: datetime,
    end: datetime,
    queues: Sequence[str] = (),
    limit: int = MAX_CALLS,
) -> list[dict[str, Any]]:
    """The calls whose journey began in ``[start, end)`` (that visited one of ``queues``,
    if given), oldest first, each with its visits and legs."""
    records = await conn.fetch(
        """WITH c AS (
               SELECT c.call_id, c.entered_at, c.wait_s, c.outcome, c.tier, c.rule, c.dnis,
                      c.service
               FROM report_offers c
               WHERE c.kind = 'call' AND c.entered_at >= $1 AND c.entered_at < $2
                 AND (cardinality($3::text[]) = 0 OR EXISTS (
                      SELECT 1 FROM report_offers v WHERE v.call_id = c.call_id
                      AND v.kind = 'queue' AND v.queue = ANY($3)))
               ORDER BY c.entered_at LIMIT $4)
           SELECT c.*,
                  (SELECT json_agg(json_build_array(v.queue, v.outcome, v.wait_s) ORDER BY v.seq)
                   FROM report_offers v WHERE v.call_id = c.call_id AND v.kind = 'queue')
                      AS visits,
                  (SELECT json_agg(json_build_array(g.agent, g.answered_at IS NOT NULL, g.talk_s,
                                                    g.hold_s, g.how, g.to_whom) ORDER BY g.seq)
                   FROM report_legs g WHERE g.call_id = c.call_id) AS legs
           FROM c ORDER BY c.entered_at""",
        start,
        end,
        list(queues),
        limit,
        timeout=REPORT_TIMEOUT_S,
    )
    return [
        {
            "call_id": str(r["call_id"]),
            "entered_at": r["entered_at"],
            "tier": r["tier"] or "",
            "rule": r["rule"] or "",
            "dnis": r["dnis"] or "",
            "service": r["service"] or "",
            "outcome": r["outcome"],
            "wait_s": round(r["wait_s"], 1),
            "visits": " ".join(
                f"{queue}:{outcome}:{wait:.0f}s" for queue, outcome, wait in _json(r["visits"])
            ),
            "legs": " ".join(_leg_text(*leg) for leg in _json(r["legs"])),
        }
        for r in records
    ]


def _json(text: str | None) -> list[list[Any]]:
    return json.loads(text) if text else []


def _leg_text(
    agent: str, answered: bool, talk: float, hold: float, how: str, to: str | None
) -> str:
    if not answered:
        return f"{agent}:rang"
    return f"{agent}:{talk:.0f}+{hold:.0f}s:{how}" + (f">{to}" if to else "")


async def agent_totals(
    conn: asyncpg.Connection, edges: Sequence[datetime], queues: Sequence[str] = ()
) -> dict[tuple[int, str], dict[str, float]]:
    """Per interval (of the leg's ring, else answer) and agent: legs offered, answered,
    talk, hold, wrap-up and transfers made."""
    records = await conn.fetch(
        f"""SELECT width_bucket(g.started_at, $1::timestamptz[]) - 1 AS bucket, g.agent,
                  count(*) AS presented,
                  count(*) FILTER (WHERE g.answered_at IS NOT NULL) AS answered,
                  coalesce(sum(g.talk_s), 0) AS talk, coalesce(sum(g.hold_s), 0) AS hold,
                  coalesce(sum(g.wrapup_s + coalesce(w.secs, 0)), 0) AS wrapup,
                  count(*) FILTER (WHERE g.how IN ('blind', 'attended')) AS transfers
           FROM report_legs g
           LEFT JOIN {wrapup_by_call_sql("$2", "$3::timestamptz", by_agent=True)} w
                ON w.call_id = g.call_id::text AND w.agent = g.agent
                   AND g.answered_at IS NOT NULL
           WHERE g.started_at >= $2 AND g.started_at < $3
             AND (cardinality($4::text[]) = 0 OR g.queue = ANY($4))
           GROUP BY 1, 2""",
        list(edges),
        edges[0],
        edges[-1],
        list(queues),
        timeout=REPORT_TIMEOUT_S,
    )
    return {
        (r["bucket"], r["agent"]): {
            k: float(r[k]) for k in ("presented", "answered", "talk", "hold", "wrapup", "transfers")
        }
        for r in records
    }


async def agent_states(
    conn: asyncpg.Connection, edges: Sequence[datetime]
) -> dict[tuple[int, str], dict[str, float]]:
    """Per interval and agent: seconds in each overall state (the agents feature's state
    log), a state interval split at the interval boundaries it spans; a pause also as
    ``paused:<reason>``."""
    records = await conn.fetch(state_time_sql("$1"), list(edges), timeout=REPORT_TIMEOUT_S)
    out: dict[tuple[int, str], dict[str, float]] = {}
    for r in records:
        states = out.setdefault((r["bucket"], r["agent"]), {})
        secs = float(r["secs"])
        states[r["state"]] = states.get(r["state"], 0.0) + secs
        if r["state"] == "paused":
            key = f"paused:{r['reason'] or 'none'}"
            states[key] = states.get(key, 0.0) + secs
    return out


async def prune(conn: asyncpg.Connection, before: datetime) -> dict[str, int]:
    """Delete the detail older than ``before``: the timeline's events, the call data's
    history and the agent legs. The offers stay: every report but ``calls`` and
    ``agents`` still answers for the pruned span."""
    counts: dict[str, int] = {}
    async with conn.transaction():
        for table, column in (
            ("interaction_events", "at"),
            ("call_data_history", "changed_at"),
            ("report_legs", "ended_at"),
        ):
            status = await conn.execute(
                f"DELETE FROM {table} WHERE {column} < $1", before, timeout=3600
            )
            counts[table] = int(status.split()[-1])
    return counts
