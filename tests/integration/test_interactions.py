"""The interactions writer: COPY in batches, and a retried batch never duplicates or jams."""

from __future__ import annotations

import asyncpg

from cti.interactions import interaction_batch_writer
from tests.integration.routes import route_outcomes


async def test_a_batch_written_twice_is_stored_once(database_url, db):
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as pool:
        outcomes = await route_outcomes(pool, 5)
        write = interaction_batch_writer(pool)
        await write(outcomes)
        await write(outcomes)  # a retry after a commit whose acknowledgement was lost
        await write([*outcomes, *await route_outcomes(pool, 1)])  # mixed with a new one
    assert await db.fetchval("SELECT count(*) FROM interactions") == 6
    row = await db.fetchrow("SELECT * FROM interactions WHERE channel = 'PJSIP/t-3'")
    assert (row["ani"], row["ani_e164"], row["queue"], row["ivr"]) == (
        "2120000003",
        "+12120000003",
        "default",
        "{}",
    )
