"""``GET /api/reports/{kind}``: supervisors only, JSON or a CSV download, parameters
refused by name."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from cti.reports.intervals import parse_moment
from cti.reports.segments import CallSegments, QueueVisit
from cti.reports.store import store_segments
from tests.integration.test_reports_db import NY
from tests.integration.test_screenpop_api import Stack, running_stack

QUERY = "from=2026-06-01&to=2026-06-01&interval=1h"


@pytest.fixture
async def stack(database_url, redis_client) -> AsyncIterator[Stack]:
    async with running_stack(database_url, redis_client) as stack:
        yield stack


async def seed(stack: Stack) -> None:
    await stack.pool.execute("INSERT INTO queues (name) VALUES ('sales')")
    await stack.pool.execute(
        "INSERT INTO dialled_numbers (dnis, service, default_queue, timezone)"
        " VALUES ('5550100', 'support', 'sales', 'America/New_York')"
    )
    entered = parse_moment("2026-06-01T09:10", NY).timestamp()
    visits = (
        QueueVisit("sales", entered, entered + 12, "answered", talk_s=100.0),
        QueueVisit("sales", entered, entered + 30, "abandoned"),
    )
    async with stack.pool.acquire() as conn:
        for visit in visits:
            segments = CallSegments(entered, None, (visit,), (), None)
            await store_segments(conn, {str(uuid.uuid4()): segments})


async def test_a_supervisor_gets_json_and_csv_in_the_plans_zone(stack: Stack) -> None:
    await seed(stack)
    status, body = await stack.request("GET", f"/api/reports/queues?{QUERY}", "boss")
    assert status == 200, body
    assert (body["kind"], body["timezone"], len(body["rows"])) == ("queues", "America/New_York", 24)
    assert body["definitions"]["offered"].startswith("Offers that entered the queue")
    nine = body["rows"][9]
    assert nine["interval_start"] == "2026-06-01T09:00:00-04:00"
    assert (nine["offered"], nine["answered"], nine["abandoned"]) == (2, 1, 1)
    assert (
        nine["sl_abandons_negative"] == 50.0 and nine["sl_ignore_abandons"] == 50.0
    )  # the abandon waited 30 s: after the threshold
    async with stack.client.get(
        f"/api/reports/queues?{QUERY}&format=csv&queue=sales", headers=stack.auth("boss")
    ) as response:
        assert response.status == 200
        assert response.content_type == "text/csv"
        assert "attachment" in response.headers["Content-Disposition"]
        lines = (await response.text()).splitlines()
    assert lines[0].split(",") == list(nine) and len(lines) == 25
    assert lines[10].split(",")[:5] == ["2026-06-01T09:00:00-04:00", "sales", "2", "1", "1"]


async def test_agents_are_refused_and_bad_parameters_named(stack: Stack) -> None:
    status, body = await stack.request("GET", f"/api/reports/queues?{QUERY}", "alice")
    assert (status, body["error"]) == (403, "forbidden")
    status, body = await stack.request("GET", f"/api/reports/queues?{QUERY}")
    assert status == 401
    for query, field in [
        ("from=2026-06-01", "to"),
        ("from=2026-06-01&to=2026-06-01&interval=2h", "interval"),
        ("from=2026-06-01&to=2026-06-01&format=xml", "format"),
        ("from=soon&to=2026-06-01", "from"),
        ("from=2026-06-02&to=2026-06-01", "interval"),
        (f"{QUERY}&queue={'q' * 65}", "queue"),
    ]:
        status, body = await stack.request("GET", f"/api/reports/queues?{query}", "boss")
        assert (status, body.get("error"), body.get("field")) == (400, "invalid", field), (
            query,
            body,
        )
    status, body = await stack.request("GET", f"/api/reports/nothing?{QUERY}", "boss")
    assert (status, body["field"]) == (400, "kind")


async def test_the_calls_list_for_one_queue(stack: Stack) -> None:
    await seed(stack)
    status, body = await stack.request(
        "GET", "/api/reports/calls?from=2026-06-01&to=2026-06-01&queue=sales", "boss"
    )
    assert status == 200
    assert body["rows"] == []  # the seeded visits have no journey: not calls
