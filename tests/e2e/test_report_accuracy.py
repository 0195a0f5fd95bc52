"""Reports a manager can trust: scripted calls with known outcomes through the real
Asterisk give exactly the expected ``cti report``, and agree with Asterisk's queue_log.

The test gives three queues of its own (asterisk/etc/queues.conf: ``rep-fast`` with
agent 2001, who answers after 1 s; ``rep-slow`` with agent 2002, who answers after 10 s;
``rep-none`` with nobody) dialled numbers of their own for this run, with thresholds
``sl_threshold_s = 6`` and ``short_abandon_s = 3``. Times are far from the thresholds so
that a loaded machine cannot flip an outcome. Seven calls, one after another:

1. answered inside the threshold (rep-fast, ~1 s);
2. answered after it (rep-slow, ~10 s);
3. abandoned before the short-abandon threshold (rep-none, the caller leaves at 1.5 s);
4. abandoned after it (rep-none, at ~10 s, also after the service level threshold);
5. a blind transfer: rep-fast answers, 2001 transfers to rep-slow, which answers;
6. an attended transfer: rep-fast answers, 2001 consults agent 2003 (in no queue) and
   completes;
7. a call that times out of rep-none (``Queue()``'s timeout, ``QUEUE_TIMEOUT`` set to 4 s
   for this call only) and hears the dialplan's message.

Then ``cti report queues`` and ``cti report calls`` are compared with the expected
figures, exactly, and Asterisk's queue_log lines of the same calls are counted per queue
(docs/reports.md, "Against Asterisk's queue_log", says where and why they differ).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as redis

from tests.e2e.ami import Ami, answered_dial
from tests.e2e.conftest import E2ESetup
from tests.e2e.test_call_tracking import QUEUE_LOG, Sidebar, Streams, call_on, sidebar
from tests.waiting import until

pytestmark = pytest.mark.e2e

FAST, SLOW, NOBODY = "PJSIP/2001", "PJSIP/2002", "PJSIP/2003"
QUEUES = ("rep-fast", "rep-slow", "rep-none")
DNIS = {"rep-fast": "5550971", "rep-slow": "5550972", "rep-none": "5550973"}
SL_S, SHORT_S = 6, 3


def caller(n: int, queue: str) -> tuple[str, str, str, str]:
    return (f"21299700{n:02d}", DNIS[queue], "", "")  # unknown callers: the number's queue


async def plan_for_the_test(db: asyncpg.Connection, plan_cache: Path) -> None:
    """The test's queues and numbers in the stored plan; the daemon reloads it."""
    for queue in QUEUES:
        await db.execute(
            "INSERT INTO queues (name, description, wrapup_s, sl_threshold_s, short_abandon_s)"
            " VALUES ($1, 'report accuracy test', 0, $2, $3) ON CONFLICT (name) DO UPDATE"
            " SET sl_threshold_s = $2, short_abandon_s = $3, wrapup_s = 0",
            queue,
            SL_S,
            SHORT_S,
        )
        await db.execute(
            "INSERT INTO dialled_numbers (dnis, service, default_queue) VALUES ($1, $2, $2)"
            " ON CONFLICT (dnis) DO NOTHING",
            DNIS[queue],
            queue,
        )
    # The daemon saves every plan it loads to its cache file: wait for this one.
    await until(
        lambda: all(d in plan_cache.read_text() for d in DNIS.values()),
        within_s=20,
        every_s=0.1,
    )


async def talk_then_hang_up(sb: Sidebar, call_id: str, agent: str, talk_s: float = 1) -> None:
    await call_on(sb, call_id, agent)
    await asyncio.sleep(talk_s)
    await sb.control.complete_transfer(call_id, agent)  # hangs up the agent's leg


async def run_report(testbed: E2ESetup, kind: str) -> list[dict]:
    today = datetime.now(UTC).date()
    cti = Path(sys.executable).with_name("cti")
    argv = [str(cti)] if cti.exists() else [sys.executable, "-m", "cti"]
    argv += ["report", kind, "--interval", "day", "--format", "json"]
    argv += ["--from", (today - timedelta(days=1)).isoformat()]
    argv += ["--to", (today + timedelta(days=1)).isoformat()]
    for queue in QUEUES:
        argv += ["--queue", queue]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=os.environ | {"CTI_DATABASE_URL": testbed.database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


def totals(rows: list[dict]) -> dict[str, dict]:
    """Per queue, the day rows summed (the calls may straddle the centre's midnight)."""
    counts = (
        "offered", "answered", "answered_in_sl", "abandoned", "abandoned_in_sl",
        "short_abandoned", "timed_out", "sent_elsewhere", "transfers_out",
    )  # fmt: skip
    result: dict[str, dict] = {}
    for row in rows:
        into = result.setdefault(row["queue"], dict.fromkeys(counts, 0))
        for name in counts:
            into[name] += row[name]
    return result


async def test_scripted_calls_give_exactly_the_expected_report_and_agree_with_queue_log(
    sandbox: E2ESetup, e2e_redis: redis.Redis, ami: Ami, agents, place_calls
):
    db = await asyncpg.connect(sandbox.database_url)
    try:
        await plan_for_the_test(db, sandbox.plan_cache)
        await agents.start(2001, ring_ms=1000)
        await agents.start(2002, ring_ms=10_000)
        await agents.start(2003, ring_ms=1000)
        streams = Streams(e2e_redis)
        call_ids: list[str] = []
        async with sidebar(sandbox, e2e_redis) as sb:
            batches = []

            async def answered(n: int, queue: str, agent: str) -> str:
                await streams.mark(agent)
                batches.append(await place_calls([caller(n, queue)], hold_ms=60_000))
                call_id = (await streams.wait(agent, "connected", within_s=30))["call_id"]
                call_ids.append(call_id)
                return call_id

            async def over(call_id: str) -> None:
                """The call ended (the caller's SIPp is done) and its segments are written."""
                await batches[-1].wait(timeout_s=30)
                await until(lambda: ended(db, call_id), within_s=30)

            async def unanswered(n: int, queue: str, hold_ms: int) -> None:
                calls = await place_calls([caller(n, queue)], hold_ms=hold_ms)
                await calls.wait(timeout_s=60)

            # 1, 2: answered inside and after the threshold.
            for n, queue, agent in ((1, "rep-fast", FAST), (2, "rep-slow", SLOW)):
                call_id = await answered(n, queue, agent)
                await talk_then_hang_up(sb, call_id, agent)
                await over(call_id)
            # 3, 4: abandoned before and after the short-abandon threshold.
            await unanswered(3, "rep-none", hold_ms=1500)
            await unanswered(4, "rep-none", hold_ms=10_000)
            # 5: blind transfer from rep-fast to rep-slow.
            call_id = await answered(5, "rep-fast", FAST)
            await call_on(sb, call_id, FAST)
            await asyncio.sleep(1)
            await streams.mark(SLOW)
            await sb.control.blind_transfer(call_id, FAST, "rep-slow")
            await streams.wait(SLOW, "connected", call_id=call_id, within_s=30)
            await talk_then_hang_up(sb, call_id, SLOW)
            await over(call_id)
            # 6: attended transfer from rep-fast to agent 2003, in no queue.
            call_id = await answered(6, "rep-fast", FAST)
            await call_on(sb, call_id, FAST)
            await asyncio.sleep(1)
            await streams.mark(NOBODY)
            since = ami.mark()
            await sb.control.attended_transfer(call_id, FAST, "2003")
            await ami.wait_event(
                answered_dial("PJSIP/2003"),
                since=since,
                within_s=30,
                what="agent 2003 answering the consult call",
            )
            await sb.control.complete_transfer(call_id, FAST)
            await streams.wait(NOBODY, "connected", call_id=call_id, within_s=30)
            await talk_then_hang_up(sb, call_id, NOBODY)
            await over(call_id)
            # 7: times out of rep-none after 4 s; the dialplan plays a message, hangs up.
            reply = await ami.action("Setvar", Variable="QUEUE_TIMEOUT", Value="4")
            assert reply.get("Response") == "Success", reply
            try:
                await unanswered(7, "rep-none", hold_ms=30_000)
            finally:
                await ami.action("Setvar", Variable="QUEUE_TIMEOUT", Value="300")

        # Every call's segments are written when it ends.
        await until(lambda: calls_written(db, 7), within_s=30)
        report = totals(await run_report(sandbox, "queues"))
        zero = dict.fromkeys(next(iter(report.values())), 0)
        assert report == {
            "rep-fast": zero
            | {"offered": 3, "answered": 3, "answered_in_sl": 3, "transfers_out": 2},
            "rep-slow": zero | {"offered": 2, "answered": 2},
            "rep-none": zero | {"offered": 2, "abandoned": 1, "short_abandoned": 1, "timed_out": 1},
        }, report
        calls = await run_report(sandbox, "calls")
        outcomes = sorted(
            (c["dnis"], c["outcome"], tuple(tuple(v.split(":")[:2]) for v in c["visits"].split()))
            for c in calls
        )
        assert outcomes == sorted(
            [
                (DNIS["rep-fast"], "answered", (("rep-fast", "answered"),)),
                (DNIS["rep-slow"], "answered", (("rep-slow", "answered"),)),
                (DNIS["rep-none"], "abandoned", (("rep-none", "abandoned"),)),
                (DNIS["rep-none"], "abandoned", (("rep-none", "abandoned"),)),
                (
                    DNIS["rep-fast"],
                    "answered",
                    (("rep-fast", "answered"), ("rep-slow", "answered")),
                ),
                (DNIS["rep-fast"], "answered", (("rep-fast", "answered"),)),
                (DNIS["rep-none"], "timed_out", (("rep-none", "timed_out"),)),
            ]
        ), outcomes
        # The timed-out visit waited the queue's 4 s, not until the end of the message.
        (timed_out,) = [c for c in calls if c["outcome"] == "timed_out"]
        assert 3.5 <= timed_out["wait_s"] < 6, timed_out
        await compare_with_queue_log(db, report)
    finally:
        # The plan as it was for the tests after this one (their reports, the wallboard).
        await db.execute(
            "DELETE FROM dialled_numbers WHERE dnis = ANY($1::text[])", [*DNIS.values()]
        )
        await db.close()


async def ended(db: asyncpg.Connection, call_id: str) -> bool:
    return bool(
        await db.fetchval(
            "SELECT count(*) FROM report_offers WHERE call_id = $1 AND kind = 'call'",
            uuid.UUID(call_id),
        )
    )


async def calls_written(db: asyncpg.Connection, n: int) -> bool:
    found = await db.fetchval(
        "SELECT count(DISTINCT call_id) FROM report_offers WHERE kind = 'queue'"
        " AND queue = ANY($1::text[])",
        list(QUEUES),
    )
    return found >= n


async def compare_with_queue_log(db: asyncpg.Connection, report: dict[str, dict]) -> None:
    """Per queue, Asterisk's queue_log for the same calls: offered, answered and
    abandoned agree; where they differ, the difference is the one expected."""
    uniqueids = {
        r["uniqueid"]
        for r in await db.fetch(
            "SELECT i.uniqueid FROM interactions i JOIN report_offers o USING (call_id)"
            " WHERE o.kind = 'queue' AND o.queue = ANY($1::text[])",
            list(QUEUES),
        )
    }
    assert len(uniqueids) == 7, uniqueids

    def lines() -> list[list[str]] | None:
        text = QUEUE_LOG.read_text(errors="replace") if QUEUE_LOG.exists() else ""
        fields = [line.split("|") for line in text.splitlines()]
        found = [f for f in fields if len(f) > 4 and f[1] in uniqueids]
        return found if sum(f[4] == "EXITWITHTIMEOUT" for f in found) else None

    theirs = await until(lines, within_s=15)
    for queue, ours in report.items():
        events = [f[4] for f in theirs if f[2] == queue]
        # Asterisk counts every caller who entered; we leave short abandons out of
        # offered (and count them apart), so offered + short = ENTERQUEUE.
        assert events.count("ENTERQUEUE") == ours["offered"] + ours["short_abandoned"], queue
        assert events.count("CONNECT") == ours["answered"], (queue, events)
        assert events.count("ABANDON") == ours["abandoned"] + ours["short_abandoned"], queue
        assert events.count("EXITWITHTIMEOUT") == ours["timed_out"], (queue, events)
    # Transfers: queue_log books both on agent 2001 in rep-fast ...
    booked = [(f[2], f[3], f[4]) for f in theirs if "TRANSFER" in f[4]]
    assert sorted(booked) == [
        ("rep-fast", "Agent 2001", "ATTENDEDTRANSFER"),
        ("rep-fast", "Agent 2001", "BLINDTRANSFER"),
    ], booked
    # ... and has no line at all for agent 2003, who took the attended transfer outside
    # any queue and talked to the caller; our legs give 2003 that talk.
    assert not any("2003" in f[3] for f in theirs), theirs
    talk = await db.fetchval(
        "SELECT sum(talk_s) FROM report_legs WHERE agent = $1 AND answered_at IS NOT NULL"
        " AND call_id IN (SELECT call_id FROM report_offers WHERE queue = 'rep-fast')",
        NOBODY,
    )
    assert talk is not None and talk > 0.5
