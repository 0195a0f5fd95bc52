"""The interactions table: one row per routed call, written in batches off the call path.

Batches go in with COPY, several times cheaper per row than INSERT. COPY has no
``ON CONFLICT``, so when a batch is retried after a failure that in fact committed
(the connection died before the acknowledgement), the unique violation sends that
batch through the INSERT ... ON CONFLICT DO NOTHING path instead.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from cti.router import RouteOutcome

INSERT_SQL = """
INSERT INTO interactions (call_id, routed_at, channel, uniqueid, ani, ani_e164, dnis,
    customer_id, service, route, queue, priority, rule, tier, ivr, decision_us,
    fail_open_reason)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15::jsonb, $16, $17)
ON CONFLICT (call_id) DO NOTHING
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
        try:
            await pool.copy_records_to_table(
                "interactions", records=rows, columns=COLUMNS, timeout=10
            )
        except asyncpg.UniqueViolationError:
            await pool.executemany(INSERT_SQL, rows, timeout=10)

    return write_batch
