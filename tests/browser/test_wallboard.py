"""The wallboard page in headless chromium: the numbers it shows are the figures the
leader's engine computed from the published call events; an agent is told it is for
supervisors only."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest

from cti.calls.events import CallEvent
from cti.screenpop.ws import reader_factory
from cti.wallboard.engine import WallboardEngine
from cti.wallboard.figures import Figures
from cti.wallboard.store import LEASE_KEY, WallboardStore
from tests.browser.harness import OWNER, PASSWORD, Backend
from tests.waiting import until

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

pytestmark = pytest.mark.browser
CAROL_PHONE, ALICE_PHONE = "PJSIP/2009", "PJSIP/2001"


@contextlib.asynccontextmanager
async def engine(backend: Backend) -> AsyncIterator[WallboardEngine]:
    await backend.redis.set(LEASE_KEY, OWNER)  # the wallboard's own lease
    running = WallboardEngine(
        WallboardStore(backend.redis),
        reader_factory(backend.redis, 500),
        OWNER,
        Figures(ZoneInfo("Europe/Paris"), pause_max=lambda r: 30 if r == "lunch" else None),
        is_leader=lambda: True,
        flush_s=0.01,
        block_ms=500,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(running.run(stop))
    await until(lambda: running.leading, 20)
    try:
        yield running
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


def event(kind: str, key: str, at: float, agent: str | None = None, **data: Any) -> CallEvent:
    return CallEvent(
        kind=kind,
        call_key=key,
        call_id=key,
        linkedid=key,
        fingerprint=f"{kind}|{uuid.uuid4().hex}",
        at=at,
        agent=agent,
        data={"queue": "support", **data},
    )


def agent_state(agent: str, since: float, state: str, reason: str | None) -> CallEvent:
    """As cti.agents.news.agent_event makes it."""
    member = {"queue": "support", "state": state, "reason": reason, "since": since}
    return CallEvent(
        kind="agent_state",
        call_key=f"agent:{agent}",
        call_id=None,
        linkedid="",
        fingerprint=f"state|{uuid.uuid4().hex}",
        at=since,
        agent=agent,
        data={"state": state, "reason": reason, "since": since, "memberships": [member]},
    )


async def open_wallboard(browser: Browser, backend: Backend, username: str) -> Page:
    context = await browser.new_context(viewport={"width": 1600, "height": 900})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
    )
    await page.goto(backend.url + "/wallboard")
    await page.get_by_test_id("wb-username").fill(username)
    await page.get_by_test_id("wb-password").fill(PASSWORD)
    await page.get_by_test_id("wb-login-submit").click()
    page.set_default_timeout(20_000)
    page.errors = errors  # type: ignore[attr-defined]
    return page


async def test_the_wallboard_shows_the_figures(browser: Browser, backend: Backend) -> None:
    from playwright.async_api import expect

    now = time.time()
    async with engine(backend):
        page = await open_wallboard(browser, backend, "carol")
        await expect(page.get_by_test_id("wb-conn")).to_have_attribute("data-state", "live")
        await backend.publish(
            agent_state(ALICE_PHONE, now, "on_call", None),
            agent_state("PJSIP/2002", now - 3600, "paused", "lunch"),  # an hour, max 30 min
            # answered within 20 s, answered after, abandoned short, abandoned after 5 s
            event("queued", "a", now - 100, tier="gold", rule="vip"),
            event("connected", "a", now - 90, ALICE_PHONE),
            event("queued", "b", now - 100, tier="bronze", rule="default"),
            event("connected", "b", now - 70, ALICE_PHONE),
            event("queued", "c", now - 60, tier="bronze", rule="default"),
            event("abandoned", "c", now - 57),
            event("queued", "d", now - 60, tier="bronze", rule="default"),
            event("abandoned", "d", now - 50),
            event("queued", "e", now - 42, tier="gold", rule="vip"),  # still waiting
        )
        card = page.get_by_test_id("queue-support")

        def field(name: str):
            return card.locator(f'[data-field="{name}"]').first

        await expect(field("offered")).to_have_text("5")
        await expect(field("answered")).to_have_text("2")
        await expect(field("abandoned")).to_have_text("2")
        await expect(field("short-abandoned")).to_have_text("1")
        await expect(field("waiting")).to_have_text("1")
        await expect(field("sl-today")).to_have_text("33%")  # 1 / (2 + 1)
        await expect(field("sl-rolling")).to_have_text("33%")
        await expect(field("abandon-rate")).to_have_text("33%")
        await expect(field("asa")).to_have_text("20 s")  # (10 + 30) / 2
        await expect(field("paused")).to_have_text("1")
        shown = await field("longest").text_content() or ""
        minutes, _, secs = shown.partition(":")
        assert int(minutes) * 60 + int(secs) >= 42  # the caller queued 42 s before `now`
        await expect(field("longest")).not_to_have_text(shown)  # it ticks
        tiers = card.get_by_test_id("groups-tier")
        await expect(tiers.locator('[data-group="gold"] [data-field="waiting"]')).to_have_text("1")
        await expect(tiers.locator('[data-group="bronze"] [data-field="avg-wait"]')).to_have_text(
            "14 s"  # (30 + 3 + 10) / 3
        )
        row = page.get_by_test_id(f"agent-{ALICE_PHONE}")
        await expect(row.locator('[data-field="handled"]')).to_have_text("2")
        await expect(row.locator('[data-field="call"]')).to_contain_text("support bronze")
        paused = page.get_by_test_id("agent-PJSIP/2002")
        await expect(paused).to_have_class("wb-over")  # an hour in a 30-minute pause
        await expect(page.get_by_test_id("wb-formula")).to_contain_text("Service level")
        assert page.errors == []  # type: ignore[attr-defined]
        await page.context.close()


async def test_an_agent_is_told_it_is_for_supervisors(browser: Browser, backend: Backend) -> None:
    from playwright.async_api import expect

    page = await open_wallboard(browser, backend, "alice")
    await expect(page.get_by_test_id("wb-forbidden")).to_be_visible()
    await expect(page.get_by_test_id("queue-support")).to_have_count(0)
    await page.context.close()
