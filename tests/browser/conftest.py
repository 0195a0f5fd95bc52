"""The sidebar page in headless chromium, against the real back end built in-process.

Why in-process and real: the page is only as good as its dealings with the actual API,
WebSocket, access checks and call-data store, so the app is :func:`build_app` over the
real PostgreSQL and Redis of tests/conftest.py, as ``cti serve`` builds it, with AMI
played by the test (tests/browser/harness.py).

Debian's chromium (``/usr/bin/chromium``, or ``CTI_CHROMIUM``) is driven by Playwright;
no browser is downloaded. Without it, or without the ``playwright`` package, every test
here is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio as redis

from cti.calldata.service import CallDataService
from cti.calldata.store import CallDataStore
from cti.calls.lease import LEASE_KEY
from cti.calls.publisher import EventPublisher
from cti.screenpop.agents import add_agent
from cti.screenpop.app import HttpServer, build_app
from cti.screenpop.auth import Sessions
from tests.browser.harness import AGENTS, OWNER, PASSWORD, Backend, Recorder, Sidebars
from tests.plans import PLAN

if TYPE_CHECKING:
    from playwright.async_api import Browser

CHROMIUM = Path(os.environ.get("CTI_CHROMIUM", "/usr/bin/chromium"))
HAVE_CHROMIUM = CHROMIUM.exists()  # checked once, at import: no blocking call in a fixture


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        pytest.skip(f"no chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install -e '.[test]')")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox"]
        )
        yield browser
        await browser.close()


@contextlib.asynccontextmanager
async def serving(
    database_url: str, redis_client: redis.Redis, control: Any
) -> AsyncIterator[Backend]:
    """The sidebar's HTTP server with three agents, its call control ``control``."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=5)
    for username, endpoint, name, role in AGENTS:
        await add_agent(pool, username, endpoint, PASSWORD, display_name=name, role=role)
    await redis_client.set(LEASE_KEY, OWNER)
    store = CallDataStore(redis_client, 3600, pool=pool)
    publisher = EventPublisher(redis_client, ttl_s=3600)
    asterisk = Recorder()
    app = build_app(
        pool=pool,
        redis_client=redis_client,
        call_data=CallDataService(store, publisher),
        sessions=Sessions(secrets.token_bytes(32), 3600),
        control=control(asterisk),
        ami=asterisk,  # type: ignore[arg-type]  # records instead of AMI
        table=lambda: PLAN,
    )
    server = HttpServer(app)
    await server.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as http:
            yield Backend(
                url=f"http://127.0.0.1:{server.port}",
                app=app,
                redis=redis_client,
                pool=pool,
                store=store,
                publisher=publisher,
                asterisk=asterisk,
                http=http,
            )
    finally:
        await server.stop()
        await pool.close()


@pytest.fixture
async def backend(
    database_url: str, redis_client: redis.Redis, browser: Browser
) -> AsyncIterator[Backend]:
    """The back end, its call control recorded (``browser`` first so that a missing
    chromium skips before any database is made)."""
    async with serving(database_url, redis_client, lambda recorder: recorder) as served:
        yield served


@pytest.fixture
async def sidebars(browser: Browser, backend: Backend) -> AsyncIterator[Sidebars]:
    opened = Sidebars(browser, backend)
    yield opened
    for context in opened.contexts:
        with contextlib.suppress(Exception):
            await context.close()
    assert not opened.errors, opened.errors
