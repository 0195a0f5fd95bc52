"""Wrap-up owned by cti, through real daemons (``cti serve``), real Redis and PostgreSQL,
and the fake Asterisk Manager (tests/fakes/ami_server.py) replaying a recorded answered
call (tests/fixtures/ami/answered_call.txt) shifted to now.

* the agent's leg ends -> cti pauses them (QueuePause per queue, reason ``wrap-up``),
  writes the wrap-up to Redis, publishes ``agent_state`` events;
* the disposition is saved -> cti unpauses them, and the state log has the interval;
* the time runs out while the leader is gone -> the standby, now leader, unpauses on time;
* the agent paused by choice during the wrap-up -> they stay paused.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator

import pytest

from cti.agents.state import AgentState
from cti.agents.store import AgentStore, state_log
from cti.ami.protocol import Message
from cti.calls.publisher import ALL_EVENTS_STREAM, agent_stream
from cti.config import Config
from tests.fakes.ami_server import FakeAmi, event
from tests.integration.conftest import RunningDaemon, start_daemon
from tests.unit import ami_replay
from tests.waiting import until

A = "PJSIP/2001"
WRAPUP_S = 8  # long enough for a loaded machine to act before it (the disposition)


def member_status(**extra: str) -> dict[str, str]:
    return {
        "Queue": "support",
        "Name": "Agent 2001",
        "Location": A,
        "StateInterface": A,
        "Membership": "static",
        "Status": "1",
        "Paused": "0",
        "PausedReason": "",
        **extra,
    }


@pytest.fixture
async def fake() -> AsyncIterator[FakeAmi]:
    ami = await FakeAmi(queue_status=[("QueueMember", member_status())]).start()
    ami.responses["QueuePause"] = {"Response": "Success", "Message": "Interface paused"}
    yield ami
    await ami.close()


@pytest.fixture
async def ami_config(config: Config, fake: FakeAmi, db) -> Config:
    await db.execute("UPDATE queues SET wrapup_s = $1 WHERE name = 'support'", WRAPUP_S)
    return dataclasses.replace(
        config,
        ami_enabled=True,
        ami_port=fake.port,
        ami_secret=fake.secret,
        ami_lease_ttl_s=2,
    )


async def daemon(config: Config, name: str) -> RunningDaemon:
    running = await start_daemon(dataclasses.replace(config, instance_id=name))
    calls = running.daemon.parts.calls
    assert calls is not None and calls.agents is not None
    await until(lambda: calls.agents is not None and calls.agents.plan.wrapup_s("support"))
    await until(lambda: calls.ami.is_connected)
    return running


def agents_of(running: RunningDaemon):
    calls = running.daemon.parts.calls
    assert calls is not None and calls.agents is not None and calls.leadership is not None
    return calls.agents, calls.leadership


def pauses(fake: FakeAmi, paused: str) -> list[Message]:
    return [m for m in fake.actions("QueuePause") if m.get("Paused") == paused]


async def push_answered_call(fake: FakeAmi) -> tuple[float, str]:
    """The recorded call, its last event now; (when the agent's leg ended, call id)."""
    blocks = ami_replay.renamed_events("answered_call", "w")
    stamps = [t for b in blocks if (t := ami_replay.block_timestamp(b)) is not None]
    shift = time.time() - max(stamps)
    blocks = ami_replay.renamed_events("answered_call", "w", shift)
    await fake.push(b"".join(blocks))
    ended = [
        ami_replay.block_timestamp(b)
        for b in blocks
        if b.startswith(b"Event: Hangup") and b"PJSIP/2001-" in b
    ]
    call_ids = {
        line.split(b"=", 1)[1].decode()
        for b in blocks
        for line in b.split(b"\r\n")
        if line.startswith(b"ChanVariable: CTI_CALL_ID=") and line != b"ChanVariable: CTI_CALL_ID="
    }
    assert len(call_ids) == 1 and ended and ended[0] is not None
    return ended[0], call_ids.pop()


async def pause_event(fake: FakeAmi, paused: bool, reason: str = "") -> None:
    """Asterisk's answer to a QueuePause of 2001 in both its queues."""
    for queue in ("default", "support"):
        await fake.push(
            event(
                "QueueMemberPause",
                Queue=queue,
                MemberName="Agent 2001",
                Interface=A,
                StateInterface=A,
                Paused="1" if paused else "0",
                PausedReason=reason,
            )
        )


async def test_wrap_up_pauses_and_the_disposition_ends_it(
    ami_config: Config, fake: FakeAmi, redis_client, db
) -> None:
    running = await daemon(ami_config, "one")
    try:
        agents, leadership = agents_of(running)
        await until(lambda: leadership.leader)
        started = time.time()
        ended_at, call_id = await push_answered_call(fake)
        paused = await until(lambda: pauses(fake, "true"))
        await until(lambda: len(pauses(fake, "true")) == 2)
        paused = pauses(fake, "true")
        # Both of 2001's queues (the capture shows it in "default" too), each on its own.
        assert sorted((m.get("Interface"), m.get("Queue"), m.get("Reason")) for m in paused) == [
            (A, "default", "wrap-up"),
            (A, "support", "wrap-up"),
        ]
        store = AgentStore(redis_client)
        records = await store.wrap_ups()
        assert records[A][0].until == pytest.approx(ended_at + WRAPUP_S, abs=0.01)
        assert records[A][0].call_id == call_id
        await pause_event(fake, True, "wrap-up")
        # The leader's Redis copy and the agent's own stream say wrap_up, with the deadline.
        state = await until(lambda: _state(store, "wrap_up"))
        assert state["wrapup_until"] == pytest.approx(ended_at + WRAPUP_S, abs=0.01)
        entries = await redis_client.xrange(agent_stream(A))
        kinds = [json.loads(e[b"e"])["event"] for _, e in entries]
        assert "agent_state" in kinds and "connected" in kinds
        # The disposition ends it at once (long before the deadline).
        assert await store.disposition_saved(A, "some-other-call") is False
        assert await store.disposition_saved(A, call_id) is True
        await until(lambda: len(pauses(fake, "false")) == 2)
        assert time.time() < ended_at + WRAPUP_S
        assert sorted(m.get("Queue") for m in pauses(fake, "false")) == ["default", "support"]
        assert await store.wrap_ups() == {}
        await pause_event(fake, False)
        await until(lambda: agents.service.board.status(A).state is AgentState.AVAILABLE)
        await until(lambda: _state(store, "available"))
        # Every interval is in the state log, the wrap-up among them.
        rows = await until(lambda: _logged(db, started - 60, "wrap_up"))
        wrap = next(r for r in rows if r["state"] == "wrap_up" and r["queue"] is None)
        assert wrap["started_at"].timestamp() == pytest.approx(ended_at, abs=0.01)
        assert wrap["call_id"] == call_id
        all_events = await redis_client.xrange(ALL_EVENTS_STREAM)
        states = [
            json.loads(e[b"e"])["state"]
            for _, e in all_events
            if json.loads(e[b"e"])["event"] == "agent_state"
        ]
        assert states[-1] == "available" and "wrap_up" in states and "on_call" in states
    finally:
        await running.daemon.shutdown(writer_grace_s=2)


async def test_the_standby_ends_the_wrap_up_on_time_after_the_leader_is_gone(
    ami_config: Config, fake: FakeAmi, redis_client
) -> None:
    one = await daemon(ami_config, "one")
    two = await daemon(ami_config, "two")
    stopped = False
    try:
        _, lead_one = agents_of(one)
        _, lead_two = agents_of(two)
        await until(lambda: lead_one.leader or lead_two.leader)
        leader, standby = (one, two) if lead_one.leader else (two, one)
        ended_at, _ = await push_answered_call(fake)
        await until(lambda: pauses(fake, "true"))
        await pause_event(fake, True, "wrap-up")
        await leader.daemon.shutdown(writer_grace_s=2)
        stopped = True
        standby_agents, standby_lead = agents_of(standby)
        await until(lambda: standby_lead.leader)
        await until(lambda: pauses(fake, "false"), within_s=WRAPUP_S + 15)
        unpaused_at = time.time()
        # Not before the deadline, and soon after it (a tick, plus a loaded machine).
        assert ended_at + WRAPUP_S <= unpaused_at < ended_at + WRAPUP_S + 5
        assert await AgentStore(redis_client).wrap_ups() == {}
        assert standby_agents.service.board.wrap_up(A) is None
    finally:
        for running in (one, two):
            if running is not leader or not stopped:
                await running.daemon.shutdown(writer_grace_s=2)


async def test_an_agent_who_paused_during_wrap_up_stays_paused(
    ami_config: Config, fake: FakeAmi, redis_client
) -> None:
    running = await daemon(ami_config, "one")
    try:
        agents, leadership = agents_of(running)
        await until(lambda: leadership.leader)
        ended_at, _ = await push_answered_call(fake)
        await until(lambda: pauses(fake, "true"))
        await pause_event(fake, True, "wrap-up")
        await pause_event(fake, True, "lunch")  # the agent's own Pause, over the wrap-up

        async def gone() -> bool:
            return await AgentStore(redis_client).wrap_ups() == {}

        await until(gone, within_s=WRAPUP_S + 15)
        assert time.time() >= ended_at + WRAPUP_S
        assert pauses(fake, "false") == []
        status = agents.service.board.status(A)
        assert status is not None
        assert (status.state, status.reason) == (AgentState.PAUSED, "lunch")
    finally:
        await running.daemon.shutdown(writer_grace_s=2)


async def _state(store: AgentStore, state: str) -> dict | None:
    found = (await store.read_states([A])).get(A)
    return found if found is not None and found["state"] == state else None


async def _logged(db, since: float, state: str) -> list[dict] | None:
    rows = await state_log(db, A, since)
    return rows if any(r["state"] == state and r["queue"] is None for r in rows) else None


async def test_the_wrap_up_pause_is_applied_again_after_an_asterisk_restart(
    ami_config: Config, fake: FakeAmi, redis_client, db
) -> None:
    """Asterisk restarted: its members come back unpaused (persistentmembers = no); the
    leader pauses the agent again for what is left of the wrap-up."""
    wrapup_s = 120  # longer than any reconnect, however loaded the machine
    await db.execute("UPDATE queues SET wrapup_s = $1 WHERE name = 'support'", wrapup_s)
    running = await daemon(dataclasses.replace(ami_config, ami_ping_s=1), "one")
    try:
        _, leadership = agents_of(running)
        await until(lambda: leadership.leader)
        ended_at, _ = await push_answered_call(fake)
        await until(lambda: len(pauses(fake, "true")) == 2)
        await pause_event(fake, True, "wrap-up")
        before = len(fake.sessions)
        await fake.close()
        await fake.start()  # same port; QueueStatus says 2001 is not paused
        await until(lambda: len(fake.live) == 1 and len(fake.sessions) > before, within_s=20)
        again = await until(
            lambda: [m for m in fake.sessions[-1].actions if m.get("Action") == "QueuePause"]
        )
        assert (again[0].get("Paused"), again[0].get("Reason")) == ("true", "wrap-up")
        records = await AgentStore(redis_client).wrap_ups()
        assert records[A][0].until == pytest.approx(ended_at + wrapup_s, abs=0.01)
    finally:
        await running.daemon.shutdown(writer_grace_s=2)
