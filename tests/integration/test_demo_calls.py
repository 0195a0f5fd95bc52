"""``cti demo``'s reading of the interactions the daemon wrote, on real PostgreSQL.

Placing calls needs Asterisk (tests/e2e/test_demo_call.py); what the demo reads back,
and how it waits for the calls' summaries, does not.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from cti.demo.calls import finished_calls
from cti.demo.report import outcome
from tests.integration.test_cli import cti


async def _routed(db, ani: str, dnis: str, route: str, customer: str | None, at: datetime):
    call_id = uuid.uuid4()
    await db.execute(
        """INSERT INTO interactions (call_id, routed_at, channel, uniqueid, ani, dnis,
               customer_id, route, queue, priority, rule, tier, decision_us)
           VALUES ($1, $2, 'PJSIP/trunk-1', '1.1', $3, $4,
               (SELECT id FROM customers WHERE account_number = $5), $6,
               CASE WHEN $6 = 'queue' THEN 'support' END, 10, 'gold', 'gold', 1234)""",
        call_id, at, ani, dnis, customer, route,
    )  # fmt: skip
    return call_id


async def _ended(db, call_id, *, agents: list[str], wait_s: float, talk_s: float) -> None:
    await db.execute(
        """UPDATE interactions SET ended_at = now(), agents = $2, wait_s = $3, talk_s = $4,
               abandoned = cardinality($2::text[]) = 0 WHERE call_id = $1""",
        call_id, agents, wait_s, talk_s,
    )  # fmt: skip


async def test_the_calls_are_read_back_once_they_ended(seeded, db):
    since = datetime.now(UTC)
    before = await _routed(db, "2120000001", "5550100", "queue", "A0000001", since - timedelta(1))
    await _ended(db, before, agents=["PJSIP/2002"], wait_s=1, talk_s=1)
    ms = timedelta(milliseconds=1)
    answered = await _routed(db, "2120000002", "5550100", "queue", "A0000002", since)
    gave_up = await _routed(db, "3055550000", "5550100", "queue", None, since + ms)
    self_service = await _routed(
        db, "2120000004", "5550100", "selfservice", "A0000004", since + 2 * ms
    )

    reading = asyncio.create_task(finished_calls(seeded, since, 3, within_s=30))
    await asyncio.sleep(0.3)
    assert not reading.done()  # the calls have not ended yet
    await _ended(db, answered, agents=["PJSIP/2001"], wait_s=1.2, talk_s=14.5)
    await _ended(db, gave_up, agents=[], wait_s=9.6, talk_s=0)
    await _ended(db, self_service, agents=[], wait_s=0, talk_s=0)
    calls = await asyncio.wait_for(reading, 30)

    assert [(c.ani, c.customer, outcome(c)) for c in calls] == [
        ("2120000002", "Alan Turing", "2001"),
        ("3055550000", None, "abandoned after 10 s"),
        ("2120000004", "Edsger Dijkstra", "self-service"),
    ]
    assert calls[0].talk_s == 14.5


async def test_calls_that_never_end_are_shown_as_they_are(seeded, db):
    since = datetime.now(UTC)
    await _routed(db, "2120000002", "5550100", "queue", "A0000002", since)
    calls = await finished_calls(seeded, since, 1, within_s=0.5)
    assert [outcome(c) for c in calls] == ["still on the line"]


@pytest.mark.parametrize(
    "command", [["demo", "call", "2120000002", "5550100"], ["demo", "calls"], ["loadtest"]]
)
async def test_without_the_scenarios_it_says_where_to_find_them(seeded, tmp_path, command):
    """An installed wheel has no sipp/ next to it: SIPp's scenarios are a checkout's."""
    code, _, err = await cti(*command, "--scenarios", str(tmp_path), database_url=seeded)
    assert code == 1
    assert err.strip().endswith(
        f"no caller.xml in {tmp_path}: give --scenarios, the sipp/ folder of a checkout"
    )
