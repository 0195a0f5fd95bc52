"""Customers: the router's lookup, and the import of a CRM's CSV export.

The lookup is one indexed query: by the account number an IVR collected when there
is one, else by the caller's E.164 number (the primary key of ``customer_phones``).

The import is for an operator's first hour as much as for a nightly job: every row is
checked on its own and a bad row never stops the good ones (each refusal names its
line, its column and why); a second import of the same file changes nothing and says
so; ``dry_run`` reports what would change and stores nothing.
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

import asyncpg

from cti.customer_csv import ImportReport, ImportRow, Problem, parse_file
from cti.routing.model import Customer

FIND_CUSTOMER_SQL = """
SELECT id, account_number, name, tier, status, language FROM (
    SELECT 0 AS precedence, c.* FROM customers c WHERE c.account_number = $2
    UNION ALL
    SELECT 1, c.* FROM customer_phones p JOIN customers c ON c.id = p.customer_id
    WHERE p.e164 = $1
) AS found ORDER BY precedence LIMIT 1
"""


async def find_customer(
    conn: asyncpg.Connection | asyncpg.Pool, e164: str | None, account: str | None
) -> Customer | None:
    if e164 is None and account is None:
        return None
    row = await conn.fetchrow(FIND_CUSTOMER_SQL, e164, account)
    return Customer(**dict(row)) if row else None


T = TypeVar("T")


class PgLookup:
    """The router's queries on the pool, cut off without asking the server anything.

    Why not ``pool.fetchrow``: when a query is cancelled (the route's deadline passed),
    asyncpg sends PostgreSQL a cancel request over a NEW connection and the pool's release
    waits for it, shielded from our cancellation. Against a partitioned server that new
    connection is never answered, so the caller waited the whole outage (10 s) instead of
    failing open at 150 ms. A connection whose query was cut off is of no further use to
    us: we terminate it (close the socket, no cancel request, no reset) and the pool opens
    a fresh one when next needed.
    """

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


# --- CSV import: what it changes --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Stored:
    id: int
    fields: tuple[str, str, str, str]  # name, tier, status, language
    phones: frozenset[str]


@dataclass(slots=True)
class _Changes:
    new: list[ImportRow] = field(default_factory=list)
    updated: list[tuple[int, ImportRow, frozenset[str]]] = field(default_factory=list)


def _plan(
    rows: list[ImportRow],
    stored: Mapping[str, _Stored],
    owners: Mapping[str, str],
    report: ImportReport,
) -> _Changes:
    """Sort the file's rows into new, updated and unchanged customers.

    A customer's phones become exactly those in the file (if it has a phone column). A
    phone that already belongs to another customer in the database refuses its row: we
    never move a number between customers behind an operator's back.
    """
    changes = _Changes()
    for row in rows:
        taken = next(
            (p for p in row.phones if owners.get(p, row.account_number) != row.account_number),
            None,
        )
        if taken is not None:
            report.refused.append(
                Problem(
                    row.line,
                    row.phone_column(taken),
                    f"phone {taken} belongs to account {owners[taken]}",
                )
            )
            continue
        before = stored.get(row.account_number)
        if before is not None and not row.has_phones:
            row = replace(row, phones=tuple(sorted(before.phones)))
        if before is None:
            changes.new.append(row)
        elif before.fields == (row.name, row.tier, row.status, row.language) and (
            before.phones == frozenset(row.phones)
        ):
            report.unchanged += 1
        else:
            changes.updated.append((before.id, row, before.phones))
    report.new, report.updated = len(changes.new), len(changes.updated)
    report.refused.sort(key=lambda p: p.line)
    return changes


async def import_customers(
    conn: asyncpg.Connection,
    text: Iterable[str] | str,
    region: str,
    *,
    dry_run: bool = False,
) -> ImportReport:
    """Load the good rows of a CSV export in one transaction; report the others.

    Unchanged customers are not written at all (their ``updated_at`` and row version
    stay), so a nightly import of the same export costs reads only.
    """
    report = ImportReport()
    lines = io.StringIO(text) if isinstance(text, str) else text
    rows = parse_file(lines, region, report)
    async with conn.transaction():
        if not dry_run:  # other imports wait; the router's reads do not
            await conn.execute("LOCK TABLE customers, customer_phones IN SHARE ROW EXCLUSIVE MODE")
        stored = await _stored(conn, [r.account_number for r in rows])
        owners = {
            r["e164"]: r["account_number"]
            for r in await conn.fetch(
                """SELECT p.e164, c.account_number FROM customer_phones p
                   JOIN customers c ON c.id = p.customer_id WHERE p.e164 = ANY($1::text[])""",
                [p for r in rows for p in r.phones],
            )
        }
        changes = _plan(rows, stored, owners, report)
        if not dry_run:
            await _write(conn, changes)
    return report


async def _stored(conn: asyncpg.Connection, accounts: list[str]) -> dict[str, _Stored]:
    rows = await conn.fetch(
        """SELECT c.id, c.account_number, c.name, c.tier, c.status, c.language,
                  array_remove(array_agg(p.e164), NULL) AS phones
           FROM customers c LEFT JOIN customer_phones p ON p.customer_id = c.id
           WHERE c.account_number = ANY($1::text[]) GROUP BY c.id""",
        accounts,
    )
    return {
        r["account_number"]: _Stored(
            r["id"], (r["name"], r["tier"], r["status"], r["language"]), frozenset(r["phones"])
        )
        for r in rows
    }


async def _write(conn: asyncpg.Connection, changes: _Changes) -> None:
    """Insert the new customers, update the changed ones; touch nothing else."""
    await conn.executemany(
        """INSERT INTO customers (account_number, name, tier, status, language)
           VALUES ($1, $2, $3, $4, $5)""",
        [(r.account_number, r.name, r.tier, r.status, r.language) for r in changes.new],
    )
    await conn.executemany(
        """UPDATE customers SET name = $2, tier = $3, status = $4, language = $5,
               updated_at = now()
           WHERE id = $1""",
        [(id_, r.name, r.tier, r.status, r.language) for id_, r, _ in changes.updated],
    )
    await conn.executemany(
        "DELETE FROM customer_phones WHERE customer_id = $1 AND e164 = ANY($2::text[])",
        [
            (id_, sorted(before - set(r.phones)))
            for id_, r, before in changes.updated
            if before - set(r.phones)
        ],
    )
    await conn.executemany(
        """INSERT INTO customer_phones (e164, customer_id)
           SELECT $2, id FROM customers WHERE account_number = $1""",
        [(r.account_number, p) for r in changes.new for p in r.phones]
        + [
            (r.account_number, p)
            for _, r, before in changes.updated
            for p in r.phones
            if p not in before
        ],
    )
