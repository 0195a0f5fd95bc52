"""The reports page: a supervisor opens it from the team view, sees the charts with one
point per interval that had traffic, per queue and per tier, the table, and downloads
the CSV."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from cti.reports.intervals import parse_moment
from cti.reports.segments import CallSegments, Journey, QueueVisit
from cti.reports.store import store_segments
from tests.browser.harness import Backend, Sidebars

pytestmark = pytest.mark.browser

_playwright = pytest.importorskip(
    "playwright.async_api",
    reason="the playwright package is not installed (pip install -e '.[test]')",
)
expect = _playwright.expect
expect.set_options(timeout=10_000)

# (queue, tier, hour UTC, wait): sales in three hours, billing in one.
CALLS = [
    ("sales", "gold", "09:10", 5.0),
    ("sales", "bronze", "10:10", 40.0),
    ("sales", "gold", "11:10", 12.0),
    ("billing", "bronze", "10:20", 8.0),
]


async def seed(backend: Backend) -> None:
    from zoneinfo import ZoneInfo

    utc = ZoneInfo("UTC")
    await backend.pool.execute("INSERT INTO queues (name) VALUES ('sales'), ('billing')")
    async with backend.pool.acquire() as conn:
        for queue, tier, hour, wait in CALLS:
            entered = parse_moment(f"2026-06-01T{hour}", utc).timestamp()
            visit = QueueVisit(queue, entered, entered + wait, "answered", talk_s=60.0)
            journey = Journey(queue, entered, entered + wait, "answered", 60.0, 0.0, 0.0, 0)
            call_id = uuid.uuid4()
            segments = CallSegments(entered, None, (visit,), (), journey)
            await store_segments(conn, {str(call_id): segments})
            await conn.execute(
                "UPDATE report_offers SET tier = $2 WHERE call_id = $1", call_id, tier
            )


async def test_a_supervisor_charts_the_day_and_downloads_the_csv(
    sidebars: Sidebars, backend: Backend, tmp_path: Path
) -> None:
    await seed(backend)
    carol = await sidebars.signed_in("carol")
    await carol.get_by_test_id("reports-link").click()
    await expect(carol.get_by_test_id("reports-form")).to_be_visible()
    await carol.get_by_test_id("reports-from").fill("2026-06-01")
    await carol.get_by_test_id("reports-to").fill("2026-06-01")
    await carol.get_by_test_id("reports-interval").select_option("1h")
    await carol.get_by_test_id("reports-show").click()

    sl = carol.get_by_test_id("chart-sl")
    await expect(sl.locator('[data-testid="series-sales"] [data-point]')).to_have_count(3)
    await expect(sl.locator('[data-testid="series-billing"] [data-point]')).to_have_count(1)
    asa = carol.get_by_test_id("chart-asa")
    await expect(asa.locator('[data-testid="series-sales"] [data-point]')).to_have_count(3)
    tiers = carol.get_by_test_id("chart-tier")
    await expect(tiers.locator('[data-testid="series-gold"] [data-point]')).to_have_count(2)
    await expect(tiers.locator('[data-testid="series-bronze"] [data-point]')).to_have_count(1)
    await expect(tiers.locator('[data-testid="series-platinum"] [data-point]')).to_have_count(0)
    # The 10:00 bronze point joins sales' 40 s answer and billing's 8 s: one in two in SL.
    await expect(tiers.locator('[data-testid="series-bronze"] title')).to_have_text(
        "bronze 2026-06-01T10:00:00+00:00: 50"
    )
    await expect(carol.get_by_test_id("reports-formula")).to_contain_text(
        "answered_in_sl / offered"
    )
    rows = carol.get_by_test_id("reports-table").locator("tbody tr")
    await expect(rows).to_have_count(24 * 2)

    async with carol.expect_download() as download_info:
        await carol.get_by_test_id("reports-csv").click()
    download = await download_info.value
    assert download.suggested_filename == "cti-queues-2026-06-01-2026-06-01.csv"
    path = tmp_path / "queues.csv"
    await download.save_as(path)
    lines = path.read_text().splitlines()
    assert lines[0].startswith("interval_start,queue,offered,answered") and len(lines) == 49


async def test_an_agent_is_sent_to_sign_in_as_a_supervisor(sidebars: Sidebars, backend: Backend):
    alice = await sidebars.signed_in("alice")
    await alice.goto(f"{backend.url}/static/reports.html")
    await expect(alice.get_by_text("Sign in as a supervisor")).to_be_visible()
    await expect(alice.get_by_test_id("reports-form")).to_be_hidden()
