"""A supervisor's actions on real Asterisk (issue 11), through the session daemon's API.

* Listen: a SIPp call is answered by agent 2001; the supervisor (whose agent record
  names PJSIP/2005, a SIPp phone that answers by itself) asks to listen; their phone
  rings, answers, and Asterisk reports ``ChanSpyStart`` with the supervisor's channel
  spying on 2001's leg. The action is in the audit table.
* Pause with a reason: read back from Asterisk with ``QueueStatus`` (``Paused: 1``,
  ``PausedReason``), then unpaused (``Paused: 0``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from cti.screenpop.agents import add_agent, remove_agent
from tests.e2e.ami import Ami, is_event
from tests.e2e.conftest import E2ESetup
from tests.waiting import until

pytestmark = pytest.mark.e2e

PASSWORD = "live supervisor password"
GOLD = ("2120000002", "5550100", "", "")  # Alan Turing, gold -> support (2001..2003)
AGENT, SUPERVISOR = "agent2001", "super2005"


@pytest.fixture
async def api(sandbox: E2ESetup) -> AsyncIterator[Any]:
    """``await api(method, path, who, body)`` → (status, JSON) on the daemon's sidebar."""
    db = await asyncpg.connect(sandbox.database_url)
    try:
        await add_agent(db, AGENT, "PJSIP/2001", PASSWORD, replace=True)
        # The session database is shared: an earlier test (test_softphone) may have given
        # PJSIP/2005 to an agent of its own; the supervisor's phone is that endpoint here.
        owner = await db.fetchval("SELECT username FROM agents WHERE endpoint = $1", "PJSIP/2005")
        if owner is not None and owner != SUPERVISOR:
            await remove_agent(db, owner)
        await add_agent(db, SUPERVISOR, "PJSIP/2005", PASSWORD, role="supervisor", replace=True)
    finally:
        await db.close()
    async with aiohttp.ClientSession(f"http://127.0.0.1:{sandbox.http_port}") as http:
        tokens: dict[str, str] = {}

        async def call(method: str, path: str, who: str, body: Any = None) -> tuple[int, Any]:
            if who not in tokens:
                login = await http.post("/api/login", json={"username": who, "password": PASSWORD})
                assert login.status == 200, await login.text()
                tokens[who] = (await login.json())["token"]
            headers = {"Authorization": f"Bearer {tokens[who]}"}
            async with http.request(method, path, json=body, headers=headers) as response:
                return response.status, await response.json()

        yield call


async def audit_rows(sandbox: E2ESetup, since: int) -> list[tuple[Any, ...]]:
    db = await asyncpg.connect(sandbox.database_url)
    try:
        rows = await db.fetch(
            "SELECT supervisor, action, target_agent, queue, reason, result"
            " FROM supervisor_audit WHERE id > $1 ORDER BY id",
            since,
        )
    finally:
        await db.close()
    return [tuple(row) for row in rows]


async def last_audit_id(sandbox: E2ESetup) -> int:
    db = await asyncpg.connect(sandbox.database_url)
    try:
        return int(await db.fetchval("SELECT coalesce(max(id), 0) FROM supervisor_audit"))
    finally:
        await db.close()


async def test_a_supervisor_listens_to_a_live_call_on_their_own_phone(
    sandbox: E2ESetup, ami: Ami, agents, place_calls, api
) -> None:
    since = await last_audit_id(sandbox)
    await agents.start(2001, 2005, ring_ms=500)
    mark = ami.mark()
    calls = await place_calls([GOLD], hold_ms=20_000)
    connect = await ami.wait_event(
        is_event("AgentConnect", Interface="PJSIP/2001"), since=mark, within_s=30
    )
    agent_leg = connect["DestChannel"]

    async def agent_on_call() -> bool:  # as the daemon's call model (and the team view) has it
        status, body = await api("GET", "/api/supervisor/agents", SUPERVISOR)
        assert status == 200, body
        return any(a["username"] == AGENT and a["state"] == "on_call" for a in body["agents"])

    await until(agent_on_call, within_s=15, every_s=0.2)
    status, body = await api(
        "POST", f"/api/supervisor/agents/{AGENT}/spy", SUPERVISOR, {"mode": "listen"}
    )
    assert status == 202, body

    spy = await ami.wait_event(
        lambda m: (
            m.get("Event") == "ChanSpyStart"
            and m.get("SpyeeChannel") == agent_leg
            and (m.get("SpyerChannel") or "").startswith("PJSIP/2005-")
        ),
        within_s=20,
        since=mark,
    )
    assert spy["SpyeeChannel"] == agent_leg
    assert await audit_rows(sandbox, since) == [
        (SUPERVISOR, "listen", AGENT, "support", None, "ok")
    ]
    # The spy ends with the agent's leg (ChanSpy's E): the caller hangs up after 20 s.
    await calls.wait(timeout_s=40)
    await ami.wait_event(
        lambda m: m.get("Event") == "ChanSpyStop" and m.get("SpyeeChannel") == agent_leg,
        within_s=15,
        since=mark,
    )


async def member_status(ami: Ami, queue: str, interface: str) -> dict[str, str]:
    events = await ami.list_action("QueueStatus", Queue=queue, Member=interface)
    (member,) = [e for e in events if e.get("Event") == "QueueMember"]
    return {key: member.get(key) or "" for key in ("Paused", "PausedReason")}


async def test_a_supervisors_pause_with_a_reason_is_what_asterisk_reports(
    sandbox: E2ESetup, ami: Ami, api
) -> None:
    since = await last_audit_id(sandbox)
    path = f"/api/supervisor/agents/{AGENT}/pause"
    status, body = await api("POST", path, SUPERVISOR, {"paused": True, "reason": "training"})
    assert (status, body) == (200, {"paused": True})
    try:
        assert await member_status(ami, "support", "PJSIP/2001") == {
            "Paused": "1",
            "PausedReason": "training",
        }
        # The member is paused in every queue it is in (no queue named).
        assert (await member_status(ami, "default", "PJSIP/2001"))["Paused"] == "1"
        status, body = await api("POST", path, SUPERVISOR, {"paused": True, "reason": "nap"})
        assert (status, body["error"]) == (422, "not_in_plan")
        status, body = await api("POST", path, AGENT, {"paused": False})
        assert (status, body["error"]) == (403, "forbidden")
    finally:
        status, body = await api("POST", path, SUPERVISOR, {"paused": False})
        assert (status, body) == (200, {"paused": False})
    assert (await member_status(ami, "support", "PJSIP/2001"))["Paused"] == "0"
    assert await audit_rows(sandbox, since) == [
        (SUPERVISOR, "pause", AGENT, None, "training", "ok"),
        (SUPERVISOR, "pause", AGENT, None, "nap", "not_in_plan"),
        (SUPERVISOR, "unpause", AGENT, None, None, "ok"),
    ]
