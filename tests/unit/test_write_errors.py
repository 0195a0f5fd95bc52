"""Which write errors set a record aside (permanent) and which are waited out (transient)."""

from __future__ import annotations

import asyncpg
import pytest
import redis.exceptions

from cti.write_errors import is_permanent


def _pg(cls: type[asyncpg.PostgresError]) -> asyncpg.PostgresError:
    return cls("refused")


@pytest.mark.parametrize(
    "exc",
    [
        _pg(asyncpg.CharacterNotInRepertoireError),  # a NUL in text
        _pg(asyncpg.UntranslatableCharacterError),  # \u0000 in jsonb
        _pg(asyncpg.StringDataRightTruncationError),  # too long for varchar(n)
        _pg(asyncpg.CheckViolationError),
        _pg(asyncpg.NotNullViolationError),
        _pg(asyncpg.ForeignKeyViolationError),
        _pg(asyncpg.ProgramLimitExceededError),  # index row too big
        _pg(asyncpg.InvalidTextRepresentationError),  # not a UUID
        asyncpg.exceptions._base.DataError("invalid input for query argument $1"),
        redis.exceptions.DataError("Invalid input of type: 'dict'"),
        ValueError("bad"),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
        TypeError("not JSON serializable"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_permanent(exc: BaseException) -> None:
    assert is_permanent(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "refused"),
        ConnectionResetError(),
        TimeoutError(),
        OSError("network unreachable"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle"),
        asyncpg.InterfaceError("connection is closed"),
        _pg(asyncpg.TooManyConnectionsError),
        _pg(asyncpg.AdminShutdownError),
        _pg(asyncpg.CannotConnectNowError),
        _pg(asyncpg.QueryCanceledError),  # statement_timeout
        _pg(asyncpg.DeadlockDetectedError),
        _pg(asyncpg.DiskFullError),
        _pg(asyncpg.UndefinedTableError),  # a schema problem refuses every row alike
        redis.exceptions.ConnectionError("Error 111 connecting"),
        redis.exceptions.TimeoutError("Timeout reading from socket"),
        redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"),
        RuntimeError("unknown"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_transient(exc: BaseException) -> None:
    assert not is_permanent(exc)
