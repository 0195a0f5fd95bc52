"""What the sidebar shows of a call besides its data: the customer's recent calls and
the call's own timeline, both from PostgreSQL.

Both are context, not the call itself: when PostgreSQL is slow or away the sidebar still
gets the call data (from Redis) and empty lists, with ``partial`` set so it can say so.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from cti.calls.timeline import order_key

log = structlog.get_logger(__name__)

RECENT_LIMIT = 5
QUERY_TIMEOUT_S = 2

RECENT_SQL = """
SELECT i.call_id, i.routed_at, i.queue, i.rule, i.agents,
       (SELECT h.document->>'disposition' FROM call_data_history h
        WHERE h.call_id = i.call_id ORDER BY h.version DESC LIMIT 1) AS disposition
FROM interactions i
WHERE i.customer_id = $1 AND i.call_id <> $2
ORDER BY i.routed_at DESC
LIMIT $3
"""

TIMELINE_SQL = """
SELECT kind, at, agent FROM interaction_events
WHERE call_key = $1 OR (call_id IS NOT NULL AND call_id = $2::uuid)
"""


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def customer_id_of(document: Mapping[str, Any] | None) -> int | None:
    customer = document.get("customer") if document else None
    value = customer.get("id") if isinstance(customer, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def recent_interactions(
    pool: asyncpg.Pool, customer_id: int, call_id: str
) -> list[dict[str, Any]]:
    """The customer's last calls before this one, newest first."""
    records = await pool.fetch(
        RECENT_SQL, customer_id, uuid.UUID(call_id), RECENT_LIMIT, timeout=QUERY_TIMEOUT_S
    )
    return [
        {
            "call_id": str(r["call_id"]),
            "routed_at": _iso(r["routed_at"]),
            "queue": r["queue"],
            "rule": r["rule"],
            "agents": list(r["agents"] or []),
            "disposition": r["disposition"],
        }
        for r in records
    ]


async def timeline(pool: asyncpg.Pool, call_key: str, call_id: str | None) -> list[dict[str, Any]]:
    """The call's events in timeline order."""
    records = await pool.fetch(
        TIMELINE_SQL,
        call_key,
        uuid.UUID(call_id) if call_id else None,
        timeout=QUERY_TIMEOUT_S,
    )
    records = sorted(records, key=lambda r: order_key(r["at"].timestamp(), r["kind"]))
    return [{"kind": r["kind"], "at": _iso(r["at"]), "agent": r["agent"]} for r in records]
