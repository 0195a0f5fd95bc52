"""The sidebar with everything real: a SIPp call through Asterisk, routed and followed
by ``cti serve``, popped in headless chromium on the page of the agent whose phone rings;
that agent's note and a blind transfer made from the page's buttons (AMI through the
daemon) reach the next agent's page.

Agents agent2001 (PJSIP/2001, support) and agent2004 (PJSIP/2004, sales) sign in to the
session daemon's sidebar. Chromium is Debian's (tests/browser/conftest.py).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest

from cti.calls.publisher import agent_stream
from cti.screenpop.agents import add_agent
from tests.browser.conftest import browser  # noqa: F401  # the fixture, shared
from tests.e2e.conftest import E2ESetup

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page

pytestmark = pytest.mark.e2e

PASSWORD = "live sidebar password"
GOLD = ("2120000002", "5550100", "", "")  # Alan Turing, gold -> support


async def signed_in(browser_: Browser, url: str, username: str) -> tuple[BrowserContext, Page]:
    from playwright.async_api import expect

    context = await browser_.new_context(viewport={"width": 380, "height": 800})
    page = await context.new_page()
    await page.goto(url)
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "connected")
    return context, page


async def test_a_real_call_pops_and_its_note_follows_a_blind_transfer(
    browser,  # noqa: F811
    sandbox: E2ESetup,
    ami,  # waits until Asterisk has no call left from an earlier test
    e2e_redis,
    agents,
    place_calls,
):
    from playwright.async_api import expect

    # Two agents with no history: earlier tests' calls rang these phones too, and a
    # sidebar shows every ended call of its agent until it has a disposition.
    await e2e_redis.delete(agent_stream("PJSIP/2001"), agent_stream("PJSIP/2004"))

    db = await asyncpg.connect(sandbox.database_url)
    try:
        for n in (2001, 2004):
            await add_agent(db, f"agent{n}", f"PJSIP/{n}", PASSWORD, replace=True)
    finally:
        await db.close()
    url = f"http://127.0.0.1:{sandbox.http_port}/"
    contexts = []
    try:
        ctx_a, page_a = await signed_in(browser, url, "agent2001")
        ctx_b, page_b = await signed_in(browser, url, "agent2004")
        contexts += [ctx_a, ctx_b]
        await agents.start(2001, 2004, ring_ms=1500)
        calls = await place_calls([GOLD], hold_ms=20_000)

        # The pop: on 2001's page (its phone rang), with the routed customer; not on 2004's.
        card_a = page_a.get_by_test_id("call-card")
        try:
            await expect(card_a.get_by_test_id("customer-name")).to_have_text(
                "Alan Turing", timeout=15_000
            )
        except AssertionError:
            state = await card_a.get_by_test_id("load-state").all_text_contents()
            raise AssertionError(f"no customer on the pop; the card says {state}") from None
        await expect(card_a.get_by_test_id("customer-tier")).to_contain_text("Gold")
        await expect(card_a.get_by_test_id("routing-rule")).to_contain_text("gold")
        await expect(page_b.get_by_test_id("call-card")).to_have_count(0)

        # Agent 2001 talks, writes a note (saved as typed), transfers to sales.
        await expect(card_a.get_by_test_id("call-phase")).to_have_text("On call", timeout=15_000)
        await card_a.get_by_label("Your note").fill("Card lost abroad; new one requested.")
        await expect(card_a.get_by_test_id("save-status")).to_contain_text(
            "All changes saved", timeout=10_000
        )
        await card_a.get_by_test_id("transfer-toggle").click()
        await card_a.get_by_test_id("transfer-target").fill("sales")
        await card_a.get_by_test_id("transfer-blind").click()

        # Agent 2004 (sales) gets the call, with the customer and 2001's note.
        card_b = page_b.get_by_test_id("call-card")
        await expect(card_b.get_by_test_id("customer-name")).to_have_text(
            "Alan Turing", timeout=20_000
        )
        await expect(card_b.get_by_test_id("earlier-notes")).to_contain_text(
            "Card lost abroad; new one requested.", timeout=10_000
        )
        await expect(card_a.get_by_test_id("call-phase")).to_have_text("Transferred")
        await calls.wait(timeout_s=40)
    finally:
        for context in contexts:
            await context.close()


async def test_a_pop_reaches_an_agent_connected_to_another_process(
    sandbox: E2ESetup,
    ami,  # waits until Asterisk has no call left from an earlier test
    agents,
    place_calls,
    tmp_path,
):
    """Two processes: ``cti serve`` (the session's daemon) follows AMI and publishes;
    ``cti screenpop`` (HTTP only, same PostgreSQL and Redis) holds the agent's WebSocket.
    The pop of a real call crosses Redis from one to the other."""
    import aiohttp

    from cti.loadtest import stop_process
    from tests.e2e.conftest import E2E_REDIS
    from tests.e2e.stack import free_port, tail, tcp_listening
    from tests.waiting import until

    db = await asyncpg.connect(sandbox.database_url)
    try:
        await add_agent(db, "agent2001", "PJSIP/2001", PASSWORD, replace=True)
    finally:
        await db.close()
    port = free_port()
    cti = Path(sys.executable).with_name("cti")
    log = tmp_path / "screenpop.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTI_")} | {
        "CTI_DATABASE_URL": sandbox.database_url,
        "CTI_REDIS_URL": E2E_REDIS,
        "CTI_HTTP_BIND": f"127.0.0.1:{port}",
        "CTI_SESSION_SECRET": secrets.token_hex(32),
        "CTI_LOG_FORMAT": "json",
    }
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            str(cti), "screenpop", env=env, stdout=out, stderr=out, start_new_session=True
        )
    try:
        await until(lambda: tcp_listening("127.0.0.1", port), within_s=15)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            login = await http.post(
                "/api/login", json={"username": "agent2001", "password": PASSWORD}
            )
            assert login.status == 200, await login.text()
            token = (await login.json())["token"]
            last = await http.get("/api/me", headers={"Authorization": f"Bearer {token}"})
            assert last.status == 200
            # Only what comes after now (stream ids are milliseconds): the stream keeps
            # earlier tests' events.
            now = f"{int(time.time() * 1000)}-0"
            async with http.ws_connect(f"/ws?token={token}&after={now}") as ws:
                hello = await ws.receive_json(timeout=5)
                assert hello["type"] == "hello", hello
                await agents.start(2001)
                calls = await place_calls([GOLD], hold_ms=3_000)
                async with asyncio.timeout(30):
                    while True:
                        frame = await ws.receive_json()
                        if frame.get("type") == "event" and frame["event"]["event"] == "ringing":
                            break
                assert frame["event"]["agent"] == "PJSIP/2001"
                assert frame["event"]["queue"] == "support"
                await calls.wait(timeout_s=30)
    finally:
        await stop_process(proc, 5)
        if proc.returncode not in (0, -15):
            print(tail(log))
