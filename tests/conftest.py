"""Shared fixtures: real PostgreSQL and Redis, a fresh database per test.

A template database is migrated once per session; each test that needs the database
gets its own copy (``CREATE DATABASE ... TEMPLATE``), so tests cannot see each other's
rows and may run in any order. Redis tests use one numbered database, flushed first.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as redis

from cti.db.migrate import migrate

PG_SERVER = os.environ.get("CTI_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("CTI_TEST_REDIS", "redis://127.0.0.1:6379/14")
# Two test runs on one machine (two checkouts) each set their own template and Redis db.
TEMPLATE = os.environ.get("CTI_TEST_TEMPLATE", "cti_test_template")


async def _admin() -> asyncpg.Connection:
    return await asyncpg.connect(f"{PG_SERVER}/postgres")


@pytest.fixture(scope="session")
async def template_db() -> AsyncIterator[str]:
    admin = await _admin()
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
    finally:
        await admin.close()
    await migrate(f"{PG_SERVER}/{TEMPLATE}")
    yield TEMPLATE


@pytest.fixture
async def database_url(template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated, empty database for this test."""
    name = f"cti_test_{uuid.uuid4().hex[:12]}"
    admin = await _admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    finally:
        await admin.close()
    yield f"{PG_SERVER}/{name}"
    admin = await _admin()
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
async def redis_client() -> AsyncIterator[redis.Redis]:
    client = redis.from_url(REDIS_URL)
    await client.flushdb()
    yield client
    await client.aclose()
