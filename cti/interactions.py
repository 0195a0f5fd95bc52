"""The interactions table: one row per routed call, the routing record, and its readers.

Rows are written in batches off the call path. Batches go in with COPY, several times
cheaper per row than INSERT; a batch retried after a failure that in fact committed
goes through INSERT ... ON CONFLICT DO NOTHING instead (:func:`cti.db.bulk.copy_or_insert`).

Once a call has ended, the timeline writer puts its summary (waits, talk time, agents)
on its row with :func:`store_summaries`, inside the timeline's own transaction
(:mod:`cti.timeline.store` says why). :func:`recent_interactions` is the customer's
history the sidebar shows; :func:`routing_results` what a load test made of routing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from cti.db.bulk import copy_or_insert
from cti.router import RouteOutcome
from cti.timeline.summary import CallSummary

INSERT_SQL = """
INSERT INTO interactions (call_id, routed_at, channel, uniqueid, ani, ani_e164, dnis,
    customer_id, service, route, queue, priority, rule, tier, ivr, decision_us,
    fail_open_reason)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15::jsonb, $16, $17)
ON CONFLICT (call_id) DO NOTHING
"""

UPDATE_SUMMARY_SQL = """
UPDATE interactions SET queued_at = $2, answered_at = $3, ended_at = $4, wait_s = $5,
    talk_s = $6, hold_s = $7, transfers = $8, agents = $9, abandoned = $10, end_cause = $11
WHERE call_id = $1
  AND (queued_at, answered_at, ended_at, wait_s, talk_s, hold_s, transfers, agents,
       abandoned, end_cause)
      IS DISTINCT FROM ($2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
"""

RECENT_SQL = """
SELECT call_id, routed_at, queue, rule, agents FROM interactions
WHERE customer_id = $1 AND call_id <> $2
ORDER BY routed_at DESC
LIMIT $3
"""


def interaction_row(outcome: RouteOutcome) -> tuple[object, ...]:
    request, decision = outcome.request, outcome.decision
    return (
        outcome.call_id,
        outcome.routed_at,
        request.channel,
        request.uniqueid,
        outcome.caller.raw,
        outcome.caller.e164,
        request.dnis,
        decision.customer_id,
        decision.service,
        decision.route.value,
        decision.queue,
        decision.priority,
        decision.rule,
        decision.tier,
        json.dumps(dict(request.ivr)),  # COPY's binary format takes jsonb as text
        outcome.decision_us,
        outcome.fail_open_reason,
    )


COLUMNS = (
    "call_id", "routed_at", "channel", "uniqueid", "ani", "ani_e164", "dnis", "customer_id",
    "service", "route", "queue", "priority", "rule", "tier", "ivr", "decision_us",
    "fail_open_reason",
)  # fmt: skip


def interaction_batch_writer(
    pool: asyncpg.Pool,
) -> Callable[[Sequence[RouteOutcome]], Awaitable[None]]:
    """``write_batch`` for a :class:`cti.batch_writer.BatchWriter` of route outcomes."""

    async def write_batch(outcomes: Sequence[RouteOutcome]) -> None:
        rows = [interaction_row(o) for o in outcomes]
        await copy_or_insert(pool, "interactions", COLUMNS, rows, INSERT_SQL)

    return write_batch


def summary_row(call_id: str, summary: CallSummary) -> tuple[object, ...]:
    return (
        call_id,
        summary.queued_at,
        summary.answered_at,
        summary.ended_at,
        summary.wait_s,
        summary.talk_s,
        summary.hold_s,
        summary.transfers,
        list(summary.agents),
        summary.abandoned,
        summary.end_cause,
    )


async def store_summaries(
    conn: asyncpg.Connection, summaries: Mapping[str, CallSummary], timeout_s: float
) -> None:
    """Put each call's summary on its row (a call with no row yet gets none); a row that
    already holds the same summary is not rewritten."""
    rows = [summary_row(call_id, summary) for call_id, summary in summaries.items()]
    await conn.executemany(UPDATE_SUMMARY_SQL, rows, timeout=timeout_s)


async def recent_interactions(
    pool: asyncpg.Pool | asyncpg.Connection,
    customer_id: int,
    except_call_id: str,
    limit: int,
    timeout_s: float,
) -> list[dict[str, object]]:
    """The customer's last ``limit`` calls but ``except_call_id``, newest first."""
    records = await pool.fetch(
        RECENT_SQL, customer_id, uuid.UUID(except_call_id), limit, timeout=timeout_s
    )
    return [
        {
            "call_id": str(r["call_id"]),
            "routed_at": _iso(r["routed_at"]),
            "queue": r["queue"],
            "rule": r["rule"],
            "agents": list(r["agents"] or []),
        }
        for r in records
    ]


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


@dataclass
class RoutingResult:
    """The routing decisions of a time window, counted (what ``cti loadtest`` reports)."""

    decisions: int = 0
    fail_open: int = 0
    fail_open_reasons: dict[str, int] = field(default_factory=dict)
    by_rule: dict[str, int] = field(default_factory=dict)
    by_queue: dict[str, int] = field(default_factory=dict)
    decision_us_p50: float | None = None
    decision_us_p99: float | None = None
    decision_us_max: int | None = None


async def routing_results(
    conn: asyncpg.Connection, since: datetime, until: datetime
) -> RoutingResult:
    """What routing made of the calls routed in ``[since, until)`` (a load test's report)."""
    window = (since, until)
    summary = await conn.fetchrow(
        """SELECT count(*) AS decisions,
                  count(*) FILTER (WHERE rule = 'fail-open' OR fail_open_reason IS NOT NULL)
                      AS fail_open,
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY decision_us) AS p50,
                  percentile_cont(0.99) WITHIN GROUP (ORDER BY decision_us) AS p99,
                  max(decision_us) AS max_us
           FROM interactions WHERE routed_at >= $1 AND routed_at < $2""",
        *window,
    )
    result = RoutingResult(
        decisions=summary["decisions"],
        fail_open=summary["fail_open"],
        decision_us_p50=summary["p50"],
        decision_us_p99=summary["p99"],
        decision_us_max=summary["max_us"],
    )
    for column, target in (("rule", result.by_rule), ("queue", result.by_queue)):
        rows = await conn.fetch(
            f"""SELECT coalesce({column}, '-') AS k, count(*) AS n FROM interactions
                WHERE routed_at >= $1 AND routed_at < $2 GROUP BY 1 ORDER BY 2 DESC""",
            *window,
        )
        target.update({r["k"]: r["n"] for r in rows})
    rows = await conn.fetch(
        """SELECT fail_open_reason AS k, count(*) AS n FROM interactions
           WHERE routed_at >= $1 AND routed_at < $2 AND fail_open_reason IS NOT NULL
           GROUP BY 1 ORDER BY 2 DESC""",
        *window,
    )
    result.fail_open_reasons = {r["k"]: r["n"] for r in rows}
    return result


async def decisions_since(conn: asyncpg.Connection, since: datetime) -> int:
    """How many calls were routed from ``since`` on (as far as written yet)."""
    return int(
        await conn.fetchval("SELECT count(*) FROM interactions WHERE routed_at >= $1", since)
    )
