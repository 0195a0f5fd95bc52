"""The wallboard's figures from real calls: SIPp callers through the real Asterisk, the
session's ``cti serve`` counting them, ``GET /api/wallboard`` read back.

Five calls to 5550300 from a delinquent customer (rule ``collections``, queue
``collections``, whose only member is agent 2005 and which has no wrap-up), placed so
that their outcomes are known:

1. no agent is signed in; the caller hangs up after about 2 s: a **short abandon**
   (waited ≤ ``short_abandon_s`` = 5 s);
2. the same after about 9 s: an abandon that counts against the service level;
3. the caller waits; after 22 s agent 2005's phone registers and answers: answered
   **after** ``sl_threshold_s`` = 20 s;
4. and 5. two callers, one second apart, with 2004 answering within a second of
   ringing (the second waits for the first to end): answered **within** 20 s.

Expected, on top of whatever the session's earlier tests left in collections: offered
+5, answered +3 (2 within the threshold), abandoned +2 (1 short); the caller's tier and
the ``collections`` rule each +5 calls that stopped waiting; nobody waiting at the end. The
service level of these calls alone is 2 / (3 + 1). Each wait is also read from AMI
(QueueCallerJoin → AgentConnect / QueueCallerAbandon) to check the classification
and the average speed of answer against what Asterisk saw.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import asyncpg
import pytest

from cti.screenpop.agents import add_agent
from tests.e2e.conftest import E2ESetup
from tests.waiting import until

pytestmark = pytest.mark.e2e

CALLER = ("2120000005", "5550300", "", "")  # Barbara Liskov, delinquent -> collections
QUEUE, RULE = "collections", "collections"
PASSWORD = "wallboard e2e password"


async def _wallboard(url: str, token: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{url}/api/wallboard", headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        assert r.status == 200, await r.text()
        return await r.json()


async def _token(url: str) -> str:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}/api/login", json={"username": "wallboss", "password": PASSWORD}) as r,
    ):
        assert r.status == 200, await r.text()
        return (await r.json())["token"]


def _counts(snapshot: dict[str, Any]) -> dict[str, Any]:
    queue = snapshot["queues"].get(QUEUE) or {}
    today = queue.get("today") or {}
    tiers = (queue.get("tiers") or {}).values()
    rule = (queue.get("rules") or {}).get(RULE) or {}
    return {
        **{k: today.get(k, 0) for k in ("offered", "answered", "answered_within")},
        **{k: today.get(k, 0) for k in ("abandoned", "short_abandoned")},
        "answer_wait_s": (today.get("asa_s") or 0) * today.get("answered", 0),
        "tier_waited": sum(t.get("waited_today", 0) for t in tiers),
        "rule_waited": rule.get("waited_today", 0),
    }


async def test_known_outcomes_give_exactly_the_expected_figures(
    sandbox: E2ESetup, ami, agents, place_calls
) -> None:
    db = await asyncpg.connect(sandbox.database_url)
    try:
        await add_agent(db, "wallboss", "PJSIP/2009", PASSWORD, role="supervisor", replace=True)
    finally:
        await db.close()
    url = f"http://127.0.0.1:{sandbox.http_port}"
    token = await _token(url)

    async def leading() -> bool:  # the leader's engine has written its first snapshot
        return (await _wallboard(url, token)).get("at") is not None

    await until(leading, within_s=30, every_s=0.5)
    before = _counts(await _wallboard(url, token))
    since = ami.mark()

    # 1 and 2: abandoned after ~2 s and ~9 s, nobody to answer.
    await (await place_calls([CALLER], hold_ms=2_000)).wait(60)
    await (await place_calls([CALLER], hold_ms=9_000)).wait(60)
    # 3: answered after the threshold: the agent signs in after 22 s.
    late = await place_calls([CALLER], hold_ms=30_000)
    await asyncio.sleep(22)
    await agents.start(2005, ring_ms=300)
    await late.wait(90)
    # 4 and 5: answered within it.
    await (await place_calls([CALLER] * 2, hold_ms=4_000, rate=1)).wait(90)

    # What Asterisk saw, call by call (by Uniqueid): the waits the figures must classify.
    def ours(name: str):
        return lambda e: e.get("Event") == name and e.get("Queue") == QUEUE

    joins = ami.find(ours("QueueCallerJoin"), since)
    answers = ami.find(ours("AgentConnect"), since)
    abandons = ami.find(ours("QueueCallerAbandon"), since)
    assert (len(joins), len(answers), len(abandons)) == (5, 3, 2)
    joined = {e["Uniqueid"]: float(e["Timestamp"]) for e in joins}
    answer_waits = sorted(float(e["Timestamp"]) - joined[e["Uniqueid"]] for e in answers)
    abandon_waits = sorted(float(e["Timestamp"]) - joined[e["Uniqueid"]] for e in abandons)
    assert answer_waits[0] < 20 and answer_waits[1] < 20 < answer_waits[2], answer_waits
    assert abandon_waits[0] <= 5 < abandon_waits[1], abandon_waits

    expected = {
        "offered": before["offered"] + 5,
        "answered": before["answered"] + 3,
        "answered_within": before["answered_within"] + 2,
        "abandoned": before["abandoned"] + 2,
        "short_abandoned": before["short_abandoned"] + 1,
        "tier_waited": before["tier_waited"] + 5,
        "rule_waited": before["rule_waited"] + 5,
    }

    async def reached() -> dict[str, Any] | None:
        snapshot = await _wallboard(url, token)
        counts = _counts(snapshot)
        if all(counts[k] >= v for k, v in expected.items()):
            return snapshot
        return None

    try:
        await until(reached, within_s=30, every_s=0.5)
    except TimeoutError:
        last = await _wallboard(url, token)
        raise AssertionError(
            f"wallboard counts {_counts(last)} never reached {expected}; "
            f"queue: {last['queues'].get(QUEUE)}; seq {last['seq']}"
        ) from None
    await asyncio.sleep(1.5)  # nothing more may arrive: exactly, not at least
    snapshot = await _wallboard(url, token)
    after = _counts(snapshot)
    assert {k: after[k] for k in expected} == expected
    assert after["answer_wait_s"] - before["answer_wait_s"] == pytest.approx(
        sum(answer_waits), abs=0.01
    )
    queue = snapshot["queues"][QUEUE]
    assert queue["waiting"] == 0 and queue["oldest_wait_since"] is None
    assert queue["sl_threshold_s"] == 20 and queue["short_abandon_s"] == 5
    assert snapshot["timezone"] == "America/New_York"  # the plan's first number's
    today = queue["today"]
    counted = today["answered"] + today["abandoned"] - today["short_abandoned"]
    assert today["service_level"] == pytest.approx(today["answered_within"] / counted)
    assert snapshot["agents"]["PJSIP/2005"]["handled_today"] >= 3
    assert snapshot["agents"]["PJSIP/2005"]["state"] in ("available", "on_call", "ringing")
    assert queue["agents"]["available"] + queue["agents"]["on_call"] >= 1
    assert time.time() - snapshot["at"] < 120
