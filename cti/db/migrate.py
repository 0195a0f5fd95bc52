"""Schema migrations: ``NNN_name.sql`` files applied once each, in order.

The files ship inside the package (``cti/db/migrations/``) and are found through
``importlib.resources``, so an installed wheel migrates as a checkout does; a folder
given on the command line (``--sql-dir``) replaces them.

The database is created when missing. Each file runs in its own transaction and is
recorded in ``schema_migrations`` with a checksum, so running again is a no-op and an
already-applied file that was edited afterwards is refused rather than silently
skipped. An advisory lock lets several instances start at once without racing.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog

log = structlog.get_logger(__name__)

#: The package's own migrations (a folder of ``cti.db``, shipped as package data).
SQL_DIR: Traversable = resources.files("cti.db").joinpath("migrations")
_FILE = re.compile(r"^(\d{3,})_[a-z0-9_]+\.sql$")
_LOCK_KEY = 0x637469  # "cti"


class MigrationError(RuntimeError):
    """The migrations on disk and in the database disagree."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(sql_dir: Traversable = SQL_DIR) -> list[Migration]:
    """The migrations in ``sql_dir``, in order. A file that cannot be read is a
    MigrationError, so an OSError out of :func:`migrate` is always the server's."""
    if not sql_dir.is_dir():
        raise MigrationError(f"no migrations folder at {sql_dir}")
    migrations = []
    files = sorted((f for f in sql_dir.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    for file in files:
        match = _FILE.match(file.name)
        if not match:
            raise MigrationError(f"{file.name}: migration files are named NNN_words.sql")
        try:
            sql = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise MigrationError(f"{sql_dir}/{file.name}: {exc}") from None
        migrations.append(Migration(match.group(1), file.name, sql))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version number in {sql_dir}")
    return migrations


async def ensure_database(dsn: str) -> bool:
    """Create the database named in ``dsn`` if it does not exist. True if created."""
    parts = urlsplit(dsn)
    database = parts.path.lstrip("/") or "postgres"
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await conn.close()
        return False
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        quoted = '"' + database.replace('"', '""') + '"'
        await admin.execute(f"CREATE DATABASE {quoted}")
    except asyncpg.DuplicateDatabaseError:
        return False
    finally:
        await admin.close()
    log.info("database created", database=database)
    return True


async def migrate(dsn: str, sql_dir: Traversable = SQL_DIR) -> list[str]:
    """Apply pending migrations; return the names applied."""
    migrations = discover(sql_dir)
    await ensure_database(dsn)
    conn = await asyncpg.connect(dsn)
    applied_now: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    text PRIMARY KEY,
                   name       text NOT NULL,
                   checksum   text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        done = {r["version"]: r for r in rows}
        for migration in migrations:
            row = done.get(migration.version)
            if row is not None:
                if row["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"{migration.name} was changed after it was applied "
                        f"(as {row['name']}); write a new migration instead"
                    )
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            applied_now.append(migration.name)
            log.info("migration applied", migration=migration.name)
    finally:
        await conn.close()
    return applied_now
