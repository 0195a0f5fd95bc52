"""Which write errors are the record's fault (permanent) and which the store's (transient).

The one place that decides, for every :class:`cti.batch_writer.BatchWriter`. The
question asked of an error is: *would writing the same record again, later, succeed?*

Transient — keep the batch and retry with backoff (an outage delays, never loses):

* no connection, a connection lost mid-batch, a timeout (``OSError``, which covers
  ``ConnectionError`` and ``TimeoutError``; asyncpg's ``InterfaceError`` such as
  "connection is closed"; redis-py's ``ConnectionError``/``TimeoutError``);
* PostgreSQL classes 08 (connection), 53 (insufficient resources: too many
  connections, disk full, out of memory), 57 (operator intervention: shutdown,
  cannot connect now, query cancelled), 40 (serialisation failure, deadlock), 58/XX
  (system and internal errors);
* class 42 too (undefined table or column, insufficient privilege): a schema or
  grant problem is the operator's to fix and refuses *every* record alike; isolating
  "the" bad row would dead-letter them all, whereas waiting loses nothing and shows
  the writer stuck on ``/readyz``;
* anything not listed below: an error we do not recognise is assumed to pass, since
  retrying costs a delay while a wrong "permanent" would set records aside.

Permanent — the store refuses *this record*, and will again however often we ask, so
the batch is bisected to isolate it and it goes to the dead letters:

* PostgreSQL class 22, data exception (``DataError``: a NUL in text is
  ``CharacterNotInRepertoireError``, a value too long for ``varchar(n)``, an invalid
  timestamp or JSON); class 23, integrity constraint violation (a ``CHECK``, ``NOT
  NULL``, a foreign key); class 54, program limit exceeded (an index row too big: a
  key too long for the B-tree);
* asyncpg's client-side ``DataError`` (an ``InterfaceError`` that is also a
  ``ValueError``: a value asyncpg cannot encode for the column's type);
* redis-py's ``DataError`` (a value redis-py cannot send);
* ``ValueError`` (including ``UnicodeError``), ``TypeError``, ``OverflowError`` raised
  while turning a record into a row: the record cannot be represented.

A batch's ``UniqueViolationError`` (class 23) never reaches here from our writers:
they insert with ``ON CONFLICT DO NOTHING`` (:mod:`cti.db.bulk`), because a retried
batch meeting its own rows is routine, not a refusal.
"""

from __future__ import annotations

import asyncpg
import redis.exceptions

#: SQLSTATE classes in which PostgreSQL refuses the data itself.
PERMANENT_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})


def is_permanent(exc: BaseException) -> bool:
    """True if ``exc`` means the record(s) written will never be accepted as they are."""
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = getattr(exc, "sqlstate", None) or ""
        return sqlstate[:2] in PERMANENT_SQLSTATE_CLASSES
    if isinstance(exc, asyncpg.InterfaceError):
        # asyncpg's client-side DataError is the one InterfaceError that is a ValueError:
        # the others (connection closed, operation in progress) pass.
        return isinstance(exc, ValueError)
    if isinstance(exc, redis.exceptions.DataError):
        return True
    if isinstance(exc, redis.exceptions.RedisError | OSError):
        return False
    return isinstance(exc, ValueError | TypeError | OverflowError)
