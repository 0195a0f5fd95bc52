"""The ``dead_letters`` table: records the database refused for good, kept whole.

:class:`PgDeadLetters` is the :class:`cti.batch_writer.DeadLetterSink` of the daemon's
writers. The record is stored as ``jsonb``, so what made the database refuse it must
not make the dead-letter insert fail too: ``jsonb`` refuses the escape ``\\u0000`` and
lone surrogates, so text is made safe first (:func:`safe_text`: a NUL becomes the six
characters ``\\u0000``, a lone surrogate its ``\\udXXX`` spelling; the other control
characters are escaped by JSON itself, which ``jsonb`` accepts), and values JSON has no
form for (NaN, a datetime, an enum) become text.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

import asyncpg

from cti.batch_writer import DeadLetter

TIMEOUT_S = 10

INSERT_SQL = """
INSERT INTO dead_letters (writer, call_id, error_class, error_message, record, refused_at)
VALUES ($1, $2, $3, $4, $5::jsonb, $6)
"""

LIST_SQL = """
SELECT id, writer, call_id, error_class, error_message, record, refused_at
FROM dead_letters
WHERE ($1::text IS NULL OR writer = $1)
ORDER BY id DESC
LIMIT $2
"""


def safe_text(text: str) -> str:
    """``text`` as PostgreSQL's ``text`` and ``jsonb`` accept it (NULs, lone surrogates)."""
    text = text.replace("\x00", "\\u0000")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def jsonable(value: object) -> Any:
    """``value`` as plain JSON types, every string made :func:`safe_text`."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return safe_text(value.decode("utf-8", "backslashreplace"))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):  # a NamedTuple
        return {safe_text(k): jsonable(v) for k, v in value._asdict().items()}
    if isinstance(value, Mapping):
        return {safe_text(str(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return safe_text(str(value))


def record_json(record: object) -> str:
    return json.dumps(jsonable(record))


def letter_row(letter: DeadLetter) -> tuple[object, ...]:
    return (
        safe_text(letter.writer),
        None if letter.call_id is None else safe_text(letter.call_id),
        safe_text(letter.error_class),
        safe_text(letter.error_message),
        record_json(letter.record),
        letter.at,
    )


class PgDeadLetters:
    """Dead letters into PostgreSQL; raises (the writer holds the letter) when it cannot."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def put(self, letter: DeadLetter) -> None:
        await self._pool.execute(INSERT_SQL, *letter_row(letter), timeout=TIMEOUT_S)


async def list_dead_letters(
    conn: asyncpg.Pool | asyncpg.Connection, writer: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """The latest dead letters (of one writer), newest first, records decoded."""
    rows = await conn.fetch(LIST_SQL, writer, limit, timeout=TIMEOUT_S)
    return [{**dict(r), "record": json.loads(r["record"])} for r in rows]


async def print_dead_letters(
    conn: asyncpg.Connection, writer: str | None, limit: int, *, records: bool = False
) -> None:
    """``cti db dead-letters``: one line per letter (control characters shown escaped,
    so that a refused record cannot drive the operator's terminal)."""
    letters = await list_dead_letters(conn, writer, limit)
    for letter in letters:
        message = letter["error_message"].splitlines()[0] if letter["error_message"] else ""
        line = (
            f"{letter['id']}  {letter['refused_at']:%Y-%m-%d %H:%M:%S%z}  {letter['writer']}"
            f"  call {letter['call_id'] or '-'}  {letter['error_class']}: {message}"
        )
        print(_printable(line))
        if records:
            print("    " + json.dumps(letter["record"], sort_keys=True))
    print(f"{len(letters)} dead letter(s)" + (f" of {writer}" if writer else ""))


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
