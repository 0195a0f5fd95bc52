"""Every version of every call's data, in PostgreSQL (``call_data_history``).

Redis holds the live copy only; this table is what survives a Redis restart (the store
reloads the latest version from here on a miss) and what reports read. Versions are
written in batches off the caller's path by a :class:`cti.batch_writer.BatchWriter`;
``(call_id, version)`` is the key, so a retried batch stores nothing twice.

A record holds the document either as a dict (the route's version 1: serialising it
on the call path would cost the route time for nothing) or already serialised (an
edit, which the store serialised anyway to check its size); either way it is made
text only when the batch is written, which is what COPY's binary format wants for
``jsonb``. Whoever submits a dict must not change it afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import NamedTuple, Protocol

import asyncpg

from cti.calldata.document import CallDocument, deserialize
from cti.db.bulk import copy_or_insert

COLUMNS = ("call_id", "version", "document", "changed_by", "changed_at")
INSERT_SQL = """
INSERT INTO call_data_history (call_id, version, document, changed_by, changed_at)
VALUES ($1, $2, $3::jsonb, $4, $5)
ON CONFLICT (call_id, version) DO NOTHING
"""
LATEST_SQL = """
SELECT document FROM call_data_history WHERE call_id = $1 ORDER BY version DESC LIMIT 1
"""
DISPOSITIONS_SQL = """
SELECT DISTINCT ON (call_id) call_id, document->>'disposition' AS disposition
FROM call_data_history WHERE call_id = ANY($1::uuid[])
ORDER BY call_id, version DESC
"""
QUERY_TIMEOUT_S = 5


class HistoryRecord(NamedTuple):
    call_id: str
    version: int
    document: CallDocument | str  # str: already serialised JSON
    changed_by: str
    changed_at: datetime


class HistorySink(Protocol):
    """Where versions go: a :class:`cti.batch_writer.BatchWriter` of :class:`HistoryRecord`."""

    def submit(self, item: HistoryRecord) -> bool: ...


def history_record(document: CallDocument, by: str, at: datetime) -> HistoryRecord:
    """The record of ``document``'s version (build :class:`HistoryRecord` for text)."""
    return HistoryRecord(document["call_id"], document["version"], document, by, at)


def _row(record: HistoryRecord) -> tuple[object, ...]:
    document = record.document
    text = document if isinstance(document, str) else json.dumps(document, ensure_ascii=False)
    return (record.call_id, record.version, text, record.changed_by, record.changed_at)


def history_batch_writer(
    pool: asyncpg.Pool,
) -> Callable[[Sequence[HistoryRecord]], Awaitable[None]]:
    """``write_batch`` for a :class:`cti.batch_writer.BatchWriter` of history records."""

    async def write_batch(records: Sequence[HistoryRecord]) -> None:
        rows = [_row(r) for r in records]
        await copy_or_insert(pool, "call_data_history", COLUMNS, rows, INSERT_SQL)

    return write_batch


async def latest_version(pool: asyncpg.Pool, call_id: str) -> CallDocument | None:
    """The newest stored version of a call's data, or None if it has none."""
    text = await pool.fetchval(LATEST_SQL, call_id, timeout=QUERY_TIMEOUT_S)
    return None if text is None else deserialize(text)


async def latest_dispositions(
    pool: asyncpg.Pool | asyncpg.Connection,
    call_ids: Sequence[str],
    timeout_s: float = QUERY_TIMEOUT_S,
) -> dict[str, str | None]:
    """Each call's disposition in its newest stored version (calls with none are left out),
    for lists of past calls such as the sidebar's "recent"."""
    if not call_ids:
        return {}
    records = await pool.fetch(DISPOSITIONS_SQL, list(call_ids), timeout=timeout_s)
    return {str(r["call_id"]): r["disposition"] for r in records}
