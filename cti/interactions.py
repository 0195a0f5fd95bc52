"""The interactions table: one row per routed call, written in batches off the call path.

Batches go in with COPY, several times cheaper per row than INSERT; a batch retried
after a failure that in fact committed goes through INSERT ... ON CONFLICT DO NOTHING
instead (:func:`cti.db.bulk.copy_or_insert`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from cti.db.bulk import copy_or_insert
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
        await copy_or_insert(pool, "interactions", COLUMNS, rows, INSERT_SQL)

    return write_batch
