"""What the sidebar shows of a call besides its data: the customer's recent calls and
the call's own timeline, both from PostgreSQL (asked of the features that own them).

Both are context, not the call itself: when PostgreSQL is slow or away the sidebar still
gets the call data (from Redis) and empty lists, with ``partial`` set so it can say so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg

from cti.calldata.document import CallDocument
from cti.calldata.history import latest_dispositions
from cti.interactions import recent_interactions as interactions_of_customer
from cti.timeline.store import call_events

RECENT_LIMIT = 5
QUERY_TIMEOUT_S = 2


def customer_id_of(document: CallDocument | None) -> int | None:
    """The customer's id, if the route found one (a document restored from elsewhere is
    checked, not trusted)."""
    customer: object = document.get("customer") if document else None
    value = customer.get("id") if isinstance(customer, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def recent_interactions(
    pool: asyncpg.Pool, customer_id: int, call_id: str
) -> list[dict[str, Any]]:
    """The customer's last calls before this one, newest first, each with the
    disposition its agent gave it."""
    async with pool.acquire(timeout=QUERY_TIMEOUT_S) as conn:
        recent = await interactions_of_customer(
            conn, customer_id, call_id, RECENT_LIMIT, timeout_s=QUERY_TIMEOUT_S
        )
        dispositions = await latest_dispositions(
            conn, [str(r["call_id"]) for r in recent], timeout_s=QUERY_TIMEOUT_S
        )
    return [{**r, "disposition": dispositions.get(str(r["call_id"]))} for r in recent]


async def timeline(pool: asyncpg.Pool, call_key: str, call_id: str | None) -> list[dict[str, Any]]:
    """The call's events in timeline order."""
    return await call_events(pool, call_key, call_id, timeout_s=QUERY_TIMEOUT_S)
