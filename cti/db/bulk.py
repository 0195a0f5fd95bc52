"""Batched inserts: COPY, and INSERT ... ON CONFLICT DO NOTHING when a batch repeats.

COPY is several times cheaper per row than INSERT but has no ``ON CONFLICT``. A
:class:`cti.batch_writer.BatchWriter` retries a batch whose commit it did not hear
about (the connection died before the acknowledgement), so a retry may meet rows that
are already stored: the unique violation sends that batch through ``insert_sql``
instead, which must skip existing rows (``ON CONFLICT ... DO NOTHING``).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

TIMEOUT_S = 10


async def copy_or_insert(
    pool: asyncpg.Pool,
    table: str,
    columns: Sequence[str],
    rows: Sequence[tuple[object, ...]],
    insert_sql: str,
) -> None:
    """Store ``rows`` once each, however often the same batch is written."""
    try:
        await pool.copy_records_to_table(table, records=rows, columns=columns, timeout=TIMEOUT_S)
    except asyncpg.UniqueViolationError:
        await pool.executemany(insert_sql, rows, timeout=TIMEOUT_S)
