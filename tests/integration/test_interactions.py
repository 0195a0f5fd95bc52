"""The interactions writer: COPY in batches, and a retried batch never duplicates or jams."""

from __future__ import annotations

import asyncpg

from cti.customers import find_customer
from cti.interactions import interaction_batch_writer
from cti.router import Router, RouteRequest
from cti.routing.table import RoutingTable


class Keep:
    def __init__(self) -> None:
        self.items: list[object] = []

    def submit(self, item: object) -> bool:
        self.items.append(item)
        return True


async def _outcomes(pool: asyncpg.Pool, n: int):
    kept = Keep()
    router = Router(
        table=lambda: RoutingTable(loaded=True),
        find_customer=lambda e164, account: find_customer(pool, e164, account),
        default_queue="default",
        region="US",
        lookup_budget_s=5,
        interactions=kept,
        call_data=Keep(),
    )
    for i in range(n):
        await router.route(RouteRequest(f"PJSIP/t-{i}", f"1.{i}", f"21200000{i:02d}", "5550100"))
    return kept.items


async def test_a_batch_written_twice_is_stored_once(database_url, db):
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as pool:
        outcomes = await _outcomes(pool, 5)
        write = interaction_batch_writer(pool)
        await write(outcomes)
        await write(outcomes)  # a retry after a commit whose acknowledgement was lost
        await write([*outcomes, *await _outcomes(pool, 1)])  # mixed with a new one
    assert await db.fetchval("SELECT count(*) FROM interactions") == 6
    row = await db.fetchrow("SELECT * FROM interactions WHERE channel = 'PJSIP/t-3'")
    assert (row["ani"], row["ani_e164"], row["queue"], row["ivr"]) == (
        "2120000003",
        "+12120000003",
        "default",
        "{}",
    )
