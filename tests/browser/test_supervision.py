"""The supervisor's actions in the sidebar, in headless chromium (issue 11).

The back end is the real one (tests/browser/conftest.py) with real call control over a
call model in which alice talks on a recorded call; Asterisk is the :class:`Recorder`,
so what a click sends is the AMI action itself. What must hold: a supervisor picks an
agent who is on a call, clicks Listen, and exactly the Originate into ChanSpy on the
agent's leg goes out and is in the audit table; pause with a plan reason likewise; an
agent sees none of it, and calling the routes with the agent's own session is 403 with
nothing sent or recorded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as redis

from cti.calls.control import CallControl
from cti.calls.effects import AgentConnected
from cti.calls.sink import CallModelSink
from tests.browser.conftest import serving
from tests.browser.harness import ENDPOINT, Backend, CallScript, Sidebars, call_document
from tests.unit.ami_replay import load, parse

_playwright = pytest.importorskip(
    "playwright.async_api", reason="the playwright package is not installed"
)
expect = _playwright.expect

ALICE, CAROL = ENDPOINT["alice"], ENDPOINT["carol"]
AUDIT = "SELECT supervisor, action, target_agent, queue, reason, result FROM supervisor_audit"


def alice_talking() -> tuple[CallModelSink, str]:
    """A call model in which alice (2001) talks on a recorded call, and her leg."""
    sink = CallModelSink()
    for msg in parse(load("answered_call")):
        sink.apply(msg)
        connected = [e for e in sink.effects if isinstance(e, AgentConnected)]
        if connected:
            assert connected[0].agent == ALICE
            return sink, connected[0].channel
    raise AssertionError("the capture never connects alice")


@pytest.fixture
def leg() -> tuple[CallModelSink, str]:
    return alice_talking()


@pytest.fixture
async def backend(
    database_url: str, redis_client: redis.Redis, browser: Any, leg: tuple[CallModelSink, str]
) -> AsyncIterator[Backend]:
    """The back end with real call control; the Recorder plays Asterisk."""
    sink, _channel = leg
    async with serving(
        database_url, redis_client, lambda recorder: CallControl(recorder, sink.model)
    ) as served:
        yield served


async def audit_rows(backend: Backend) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in await backend.pool.fetch(AUDIT + " ORDER BY id")]


async def test_a_supervisor_listens_to_an_agents_call_and_pauses_them(
    sidebars: Sidebars, backend: Backend, leg: tuple[CallModelSink, str]
) -> None:
    _sink, channel = leg
    call = CallScript()
    await backend.create_call(call_document(call.call_id))
    await backend.publish(call.ringing(ALICE), call.connected(ALICE))
    carol = await sidebars.signed_in("carol")
    rows = carol.get_by_test_id("team-row")
    alice_row = rows.filter(has_text="Alice Martin")
    await expect(alice_row.get_by_test_id("team-state")).to_have_text("On call")
    panel = carol.get_by_test_id("team-actions")
    await expect(panel).to_be_hidden()

    # Bob is on no call: nothing to listen to.
    await rows.filter(has_text="Bob Okafor").get_by_role("button", name="Actions for Bob").click()
    await expect(panel.get_by_test_id("ta-name")).to_have_text("Bob Okafor · Idle")
    await expect(panel.get_by_test_id("spy-listen")).to_be_disabled()

    await alice_row.get_by_role("button", name="Actions for Alice Martin").click()
    await expect(panel.get_by_test_id("ta-name")).to_have_text("Alice Martin · On call")
    await expect(panel.get_by_test_id("spy-listen")).to_be_focused()
    await panel.get_by_test_id("spy-listen").click()
    await expect(panel.get_by_test_id("ta-status")).to_have_text(
        "Your phone is ringing: answer it to listen to Alice Martin."
    )
    assert backend.asterisk.actions == [
        (
            "Originate",
            {
                "Channel": CAROL,  # the supervisor's own phone
                "Application": "ChanSpy",
                "Data": f"{channel},qES",
                "CallerID": '"Listen: alice"',
                "Timeout": "30000",
                "Async": "true",
            },
        )
    ]
    assert await audit_rows(backend) == [("carol", "listen", "alice", "support", None, "ok")]

    # Pause with one of the plan's reasons, in one queue.
    await panel.get_by_test_id("ta-reason").select_option(label="Training")
    await panel.get_by_test_id("ta-pause-queue").select_option("sales")
    await panel.get_by_test_id("ta-pause").click()
    await expect(panel.get_by_test_id("ta-status")).to_have_text(
        "Alice Martin paused (Training) in sales."
    )
    assert backend.asterisk.actions[-1] == (
        "QueuePause",
        {"Paused": "true", "Interface": ALICE, "Queue": "sales", "Reason": "training"},
    )
    assert (await audit_rows(backend))[-1] == ("carol", "pause", "alice", "sales", "training", "ok")

    # The table refreshes every few seconds; the panel and its choices stay.
    await expect(carol.get_by_test_id("team-updated")).not_to_have_text(
        await carol.get_by_test_id("team-updated").text_content() or "", timeout=15_000
    )
    await expect(panel.get_by_test_id("ta-reason")).to_have_value("training")
    await panel.get_by_test_id("ta-close").click()
    await expect(panel).to_be_hidden()
    await expect(alice_row.get_by_role("button", name="Actions for Alice Martin")).to_be_focused()


#: Every supervisor route, as the agent's own page would call it.
ROUTES = [
    ("POST", "/api/supervisor/agents/bob/spy", {"mode": "listen"}),
    ("POST", "/api/supervisor/agents/alice/spy", {"mode": "barge"}),
    ("POST", "/api/supervisor/agents/bob/pause", {"paused": True, "reason": "lunch"}),
    ("POST", "/api/supervisor/agents/bob/queue", {"queue": "sales", "logged_in": False}),
    ("GET", "/api/supervisor/audit", None),
    ("GET", "/api/supervisor/plan", None),
    ("GET", "/api/supervisor/agents", None),
]

_FETCH = """async ([method, path, body]) => {
  const session = JSON.parse(sessionStorage.getItem("cti.session"));
  const headers = { Authorization: `Bearer ${session.token}` };
  if (body !== null) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === null ? undefined : JSON.stringify(body),
  });
  return [response.status, (await response.json()).error];
}"""


async def test_an_agent_sees_no_supervisor_actions_and_cannot_call_them(
    sidebars: Sidebars, backend: Backend
) -> None:
    call = CallScript()
    await backend.create_call(call_document(call.call_id))
    await backend.publish(call.ringing(ALICE), call.connected(ALICE))
    alice = await sidebars.signed_in("alice")
    await expect(alice.get_by_test_id("call-card")).to_be_visible()
    await expect(alice.get_by_test_id("team")).to_be_hidden()
    await expect(alice.get_by_test_id("team-actions")).to_be_hidden()
    assert await alice.get_by_test_id("team-manage").count() == 0
    # The agent's own Pause offers the plan's reasons.
    await alice.get_by_test_id("pause-toggle").click()
    options = alice.get_by_test_id("pause-reason").locator("option")
    await expect(options).to_have_text(["Lunch", "Training"])
    for method, path, body in ROUTES:
        answer = await alice.evaluate(_FETCH, [method, path, body])
        assert answer == [403, "forbidden"], path
    assert backend.asterisk.actions == []
    assert await audit_rows(backend) == []
