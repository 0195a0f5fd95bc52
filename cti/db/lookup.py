"""The router's queries on the pool, cut off without asking the server anything.

Why not ``pool.fetchrow``: when a query is cancelled (the route's deadline passed),
asyncpg sends PostgreSQL a cancel request over a NEW connection and the pool's release
waits for it, shielded from our cancellation. Against a partitioned server that new
connection is never answered, so the caller waited the whole outage (10 s) instead of
failing open at 150 ms. A connection whose query was cut off is of no further use to
us: we terminate it (close the socket, no cancel request, no reset) and the pool opens
a fresh one when next needed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from cti.customers import find_customer
from cti.routing.model import Customer

T = TypeVar("T")


class PgLookup:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def find_customer(self, e164: str | None, account: str | None) -> Customer | None:
        return await self._run(lambda conn: find_customer(conn, e164, account))

    async def ping(self) -> None:
        """The breaker's probe: one cheap round trip."""
        await self._run(lambda conn: conn.fetchval("SELECT 1"))

    async def _run(self, query: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        # Waiting for a free connection (or for a new one to open) is cut off by the
        # caller's deadline like the query itself.
        conn = await self._pool.acquire()
        try:
            return await query(conn)
        except asyncpg.PostgresError:
            raise  # the server answered: the connection is fine
        except BaseException:
            conn.terminate()  # cut off or broken: no cancel request, no reset
            raise
        finally:
            await self._pool.release(conn)
