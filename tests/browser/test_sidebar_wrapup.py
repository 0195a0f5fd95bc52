"""The wrap-up countdown in the agent's sidebar (issue 11): an ``agent_state`` event
with a pending wrap-up shows the time left until cti unpauses the agent; the next
event (the disposition saved, or the time run out) takes it away."""

from __future__ import annotations

import time

import pytest

from cti.agents.news import agent_event
from cti.agents.state import AgentChanged, AgentState, AgentStatus, Membership
from tests.browser.harness import ENDPOINT, Backend, Sidebars

pytestmark = pytest.mark.browser

_playwright = pytest.importorskip(
    "playwright.async_api",
    reason="the playwright package is not installed (pip install -e '.[test]')",
)
expect = _playwright.expect
expect.set_options(timeout=10_000)

ALICE = ENDPOINT["alice"]


def change(state: AgentState, until: float | None, agent: str = ALICE) -> AgentChanged:
    now = time.time()
    reason = "wrap-up" if state is AgentState.WRAP_UP else None
    status = AgentStatus(
        agent,
        state,
        reason,
        now,
        None,
        "support",
        (Membership("support", state, reason, now, state is AgentState.WRAP_UP),),
        until,
    )
    return AgentChanged(status, AgentState.ON_CALL, now)


async def test_a_pending_wrap_up_counts_down_until_it_ends(
    sidebars: Sidebars, backend: Backend
) -> None:
    alice = await sidebars.signed_in("alice")
    countdown = alice.get_by_test_id("wrapup-countdown")
    await expect(countdown).to_be_hidden()
    # Someone else's wrap-up is not ours.
    await backend.publish(agent_event(change(AgentState.WRAP_UP, time.time() + 90, "PJSIP/9")))
    await backend.publish(agent_event(change(AgentState.WRAP_UP, time.time() + 90)))
    await expect(countdown).to_be_visible()
    await expect(countdown).to_contain_text("Wrap-up: 1:")
    await expect(countdown).to_contain_text("Save the disposition")
    await backend.publish(agent_event(change(AgentState.AVAILABLE, None)))
    await expect(countdown).to_be_hidden()
