"""Real calls through the real Asterisk: SIPp caller -> Asterisk -> FastAGI ``cti serve``
-> Queue() -> SIPp agent. Every assertion is on what Asterisk did, read from AMI, and
cross-checked with what the daemon recorded (Redis call data, PostgreSQL interactions).
"""

from __future__ import annotations

import json
import uuid

import asyncpg
import pytest

from cti.calldata.store import call_key
from tests.e2e.ami import Ami, call_id_of, is_event
from tests.e2e.conftest import E2ESetup, daemon_env
from tests.e2e.stack import Daemon, free_port, queue_members
from tests.fakes.tcp_proxy import TcpProxy
from tests.waiting import until

pytestmark = pytest.mark.e2e

MEMBERS = queue_members()
GOLD, BRONZE = "2120000002", "2120000004"


def joined(ani: str):
    return lambda e: e.get("Event") == "QueueCallerJoin" and e.get("CallerIDNum") == ani


def connected(uniqueid: str):
    return is_event("AgentConnect", Uniqueid=uniqueid)


async def pause(ami: Ami, queue: str, agents: list[int], paused: bool) -> None:
    for agent in agents:
        reply = await ami.action(
            "QueuePause",
            Queue=queue,
            Interface=f"PJSIP/{agent}",
            Paused="true" if paused else "false",
            Reason="e2e",
        )
        assert reply.get("Response") == "Success", reply


# (ANI, DNIS, IVR account) -> (queue, priority, rule)
ROUTED = [
    (GOLD, "5550100", "", ("support", 10, "gold")),  # gold
    ("2120000005", "5550100", "", ("collections", 5, "collections")),  # gold, delinquent
    ("2120000006", "5550100", "", ("spanish", 5, "spanish")),  # gold, Spanish
    ("3055550000", "5550100", "", ("support", 0, "unknown-caller")),  # unknown caller
    ("2129999999", "5550100", "A0000003", ("support", 5, "silver")),  # account keyed in the IVR
    (BRONZE, "5559999", "", ("default", 1, "bronze")),  # a number we do not publish
]


async def test_calls_are_queued_where_the_rules_say(
    ami: Ami, agents, place_calls, e2e_redis, sandbox: E2ESetup
):
    await agents.start(2001, 2002, 2003, 2004, 2005, 2006)
    since = ami.mark()
    calls = await place_calls(
        [(ani, dnis, account, "") for ani, dnis, account, _ in ROUTED], hold_ms=4000, rate=3
    )

    db = await _connect(sandbox)
    try:
        for ani, dnis, _account, (queue, priority, rule) in ROUTED:
            join = await ami.wait_event(joined(ani), since=since, what=f"QueueCallerJoin of {ani}")
            assert join["Queue"] == queue, f"{ani} -> {dnis}"
            call_id = call_id_of(join)
            assert uuid.UUID(call_id), f"CTI_CALL_ID not set on {join['Channel']}"

            # What the daemon recorded for this call id says the same.
            raw = await until(lambda cid=call_id: e2e_redis.get(call_key(cid)), within_s=5)
            routing = json.loads(raw)["routing"]
            assert (routing["queue"], routing["priority"], routing["rule"]) == (
                queue,
                priority,
                rule,
            )
            row = await until(
                lambda cid=call_id: db.fetchrow(
                    "SELECT * FROM interactions WHERE call_id = $1", uuid.UUID(cid)
                ),
                within_s=10,
            )
            assert (row["queue"], row["priority"], row["rule"], row["dnis"]) == (
                queue,
                priority,
                rule,
                dnis,
            )
            assert (row["uniqueid"], row["channel"]) == (join["Uniqueid"], join["Channel"])

            answer = await ami.wait_event(
                connected(join["Uniqueid"]), since=since, what=f"AgentConnect of {ani}"
            )
            assert answer["Queue"] == queue
            assert answer["Interface"] in MEMBERS[queue], answer["Interface"]
            assert answer["MemberName"] == f"Agent {answer['Interface'].split('/')[1]}"
            assert call_id_of(answer) == call_id
    finally:
        await db.close()
    await calls.wait(timeout_s=30)


async def test_gold_caller_is_answered_before_an_earlier_bronze_caller(
    ami: Ami, agents, place_calls
):
    await agents.start(2001, 2002)
    # Every support agent unavailable (paused) until both callers wait. A stopped
    # SIPp would not do: with static contacts Asterisk still rings it for 15 s.
    await pause(ami, "support", [2001, 2002, 2003], paused=True)
    try:
        since = ami.mark()
        calls = await place_calls(
            [(BRONZE, "5550100", "", ""), (GOLD, "5550100", "", "")], hold_ms=9000, rate=1
        )
        bronze = await ami.wait_event(joined(BRONZE), since=since, what="bronze caller queued")
        gold = await ami.wait_event(joined(GOLD), since=since, what="gold caller queued")
        assert (bronze["Queue"], bronze["Position"], bronze["Count"]) == ("support", "1", "1")
        # The gold caller came second but went to the head of the queue.
        assert (gold["Queue"], gold["Position"], gold["Count"]) == ("support", "1", "2")
        assert await ami.getvar(bronze["Channel"], "QUEUE_PRIO") == "1"
        assert await ami.getvar(gold["Channel"], "QUEUE_PRIO") == "10"
        assert not ami.find(is_event("AgentConnect"), since=since)

        # One agent frees up: the gold caller is answered, the bronze caller waits.
        await pause(ami, "support", [2001], paused=False)
        first = await ami.wait_event(is_event("AgentConnect"), since=since, what="first answer")
        assert (first["Uniqueid"], first["Interface"]) == (gold["Uniqueid"], "PJSIP/2001")
        # A second agent frees up: now the bronze caller.
        mark = ami.mark()
        await pause(ami, "support", [2002], paused=False)
        second = await ami.wait_event(is_event("AgentConnect"), since=mark, what="second answer")
        assert (second["Uniqueid"], second["Interface"]) == (bronze["Uniqueid"], "PJSIP/2002")
        await calls.wait(timeout_s=30)
    finally:
        await pause(ami, "support", [2001, 2002, 2003], paused=False)


@pytest.mark.parametrize(
    ("plan_cached", "queue"),
    [(True, "support"), (False, "default")],
    ids=["plan-cache-number-default", "no-cache-global-default"],
)
async def test_database_unreachable_fails_open(
    ami: Ami,
    agents,
    place_calls,
    agi_target,
    e2e_redis,
    sandbox: E2ESetup,
    tmp_path,
    plan_cached: bool,
    queue: str,
):
    """PostgreSQL hangs (TCP blackhole) for a daemon started during the outage.

    With the plan cache an earlier healthy run wrote, the call goes to its number's
    default queue; without one, to the global default queue. Either way CTI_RULE is
    ``fail-open`` and the answer comes within the route budget.
    """
    pg_host, pg_port = "127.0.0.1", 5432
    proxy = await TcpProxy(pg_host, pg_port).start()
    proxy.set_mode("blackhole")
    cache = tmp_path / "plan-cache.toml"
    if plan_cached:
        cache.write_text(sandbox.plan_cache.read_text())  # written by the healthy daemon
    dbname = sandbox.database_url.rsplit("/", 1)[1]
    port = free_port()
    outage = await Daemon.start(
        port=port,
        env=daemon_env(
            sandbox,
            CTI_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{proxy.port}/{dbname}",
            CTI_PLAN_CACHE=str(cache) if plan_cached else "",
            CTI_ROUTE_BUDGET_MS="200",  # the default: the answer must come within it
        ),
        log=tmp_path / "daemon-outage.log",
    )
    try:
        await agents.start(2001, 2002, 2003)
        await agi_target(outage.addr)
        since = ami.mark()
        calls = await place_calls([(GOLD, "5550100", "", "")], hold_ms=3000)
        join = await ami.wait_event(joined(GOLD), since=since, what="QueueCallerJoin")
        assert join["Queue"] == queue
        assert await ami.getvar(join["Channel"], "CTI_RULE") == "fail-open"
        assert await ami.getvar(join["Channel"], "CTI_FALLBACK") in ("", None)  # not static
        call_id = call_id_of(join)
        assert uuid.UUID(call_id)
        # From the INVITE's channel to the queue: the lookup was cut off at its budget.
        new = ami.find(is_event("Newchannel", Uniqueid=join["Uniqueid"]), since=since)[0]
        assert float(join["Timestamp"]) - float(new["Timestamp"]) < 1.0
        raw = await until(lambda: e2e_redis.get(call_key(call_id)), within_s=5)
        routing = json.loads(raw)["routing"]
        assert (routing["queue"], routing["rule"]) == (queue, "fail-open")
        assert routing["fail_open"] == "lookup-timeout"
        answer = await ami.wait_event(connected(join["Uniqueid"]), since=since, what="answer")
        assert answer["Interface"] in MEMBERS[queue]
        await calls.wait(timeout_s=20)
    finally:
        await outage.stop(grace_s=3)  # its writers would wait for the hung database
        await proxy.close()


async def test_daemon_down_calls_reach_the_static_fallback_queue(
    ami: Ami, agents, place_calls, agi_target, sandbox: E2ESetup, tmp_path
):
    """A daemon that was serving goes away: the dialplan's cti-fallback-queue decides."""
    port = free_port()
    gone = await Daemon.start(
        port=port,
        env=daemon_env(sandbox, CTI_PLAN_CACHE=str(tmp_path / "plan.toml")),
        log=tmp_path / "daemon-gone.log",
    )
    assert await gone.stop() == 0
    await agi_target(gone.addr)
    await agents.start(2001, 2004)
    since = ami.mark()
    calls = await place_calls(
        [(GOLD, "5550100", "", ""), ("2120000001", "5550300", "", "")], hold_ms=3000
    )
    for ani, queue in ((GOLD, "support"), ("2120000001", "billing")):
        join = await ami.wait_event(joined(ani), since=since, what=f"QueueCallerJoin of {ani}")
        assert join["Queue"] == queue
        assert call_id_of(join) == ""  # nobody routed it
        assert await ami.getvar(join["Channel"], "CTI_FALLBACK") == "yes"
        assert await ami.getvar(join["Channel"], "CTI_ROUTE") in ("", None)
        answer = await ami.wait_event(connected(join["Uniqueid"]), since=since, what="answer")
        assert answer["Interface"] in MEMBERS[queue]
    await calls.wait(timeout_s=20)


async def _connect(testbed: E2ESetup) -> asyncpg.Connection:
    return await asyncpg.connect(testbed.database_url)
