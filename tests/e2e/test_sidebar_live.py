"""The sidebar with everything real: a SIPp call through Asterisk, routed and followed
by ``cti serve``, popped in headless chromium on the page of the agent whose phone rings;
that agent's note and a blind transfer made from the page's buttons (AMI through the
daemon) reach the next agent's page.

Agents agent2001 (PJSIP/2001, support) and agent2004 (PJSIP/2004, sales) sign in to the
session daemon's sidebar. Chromium is Debian's (tests/browser/conftest.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
import pytest

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
    agents,
    place_calls,
):
    from playwright.async_api import expect

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
        await expect(card_a.get_by_test_id("customer-name")).to_have_text(
            "Alan Turing", timeout=15_000
        )
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
