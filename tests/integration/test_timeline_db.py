"""The timeline writer against PostgreSQL: events stored once, the summary on the record."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import asyncpg
import pytest

from cti.backoff import Backoff
from cti.batch_writer import BatchWriter
from cti.calls.effects import (
    AgentConnected,
    AgentLeft,
    AgentRinging,
    AgentRingNoAnswer,
    CallEnded,
    CallHeld,
    CallQueued,
    CallUnheld,
    Effect,
)
from cti.calls.events import CallEvent, to_events
from cti.interactions import INSERT_SQL
from cti.timeline.store import (
    INSERT_ONE_SQL,
    SUMMARY_LOCK,
    call_timeline,
    calls_of_agent,
    event_row,
    timeline_batch_writer,
)
from tests.waiting import until

T0 = 1_700_000_000.0
ALICE, BOB = "PJSIP/2001", "PJSIP/2002"


@pytest.fixture
async def pool(database_url) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=4) as pool:
        yield pool


def at(offset: float) -> datetime:
    return datetime.fromtimestamp(T0 + offset, tz=UTC)


class Call:
    """Events of one call, made from model effects as the tracker makes them."""

    def __init__(self, call_id: str | None, linkedid: str) -> None:
        self.ids = {"call_id": call_id, "linkedid": linkedid}

    def events(self, *effects: Effect) -> list[CallEvent]:
        return [e for effect in effects for e in to_events(effect, now=T0)]

    def queued(self, t: float) -> CallQueued:
        return CallQueued(**self.ids, at=T0 + t, queue="sales", position=1, priority=10)

    def ringing(self, t: float, agent: str) -> AgentRinging:
        return AgentRinging(
            **self.ids, at=T0 + t, agent=agent, member_name=None, channel=f"{agent}-1", queue="q"
        )

    def no_answer(self, t: float, agent: str) -> AgentRingNoAnswer:
        return AgentRingNoAnswer(
            **self.ids,
            at=T0 + t,
            agent=agent,
            member_name=None,
            channel=f"{agent}-1",
            queue="q",
            ring_time_ms=1,
        )

    def connected(self, t: float, agent: str) -> AgentConnected:
        return AgentConnected(
            **self.ids, at=T0 + t, agent=agent, member_name=None, channel=f"{agent}-1", queue="q"
        )

    def left(self, t: float, agent: str) -> AgentLeft:
        return AgentLeft(**self.ids, at=T0 + t, agent=agent, channel=f"{agent}-1")

    def held(self, t: float, agent: str) -> CallHeld:
        return CallHeld(**self.ids, at=T0 + t, by=agent, channel=f"{agent}-1")

    def unheld(self, t: float, agent: str) -> CallUnheld:
        return CallUnheld(**self.ids, at=T0 + t, by=agent, channel=f"{agent}-1")

    def ended(self, t: float, *agents: str) -> CallEnded:
        return CallEnded(
            **self.ids, at=T0 + t, cause="16", cause_txt="Normal Clearing", abandoned=False,
            agents=agents,
        )  # fmt: skip


async def insert_interaction(db: asyncpg.Connection, call_id: str) -> None:
    """The route's record of the call, as the interactions writer stores it."""
    await db.execute(
        INSERT_SQL,
        uuid.UUID(call_id), at(0), "PJSIP/trunk-1", "1700000000.1", "2125550100",
        "+12125550100", "5550100", None, "sales", "queue", "sales", 10, "default", "bronze",
        "{}", 120, None,
    )  # fmt: skip


async def write_through_batch_writer(pool: asyncpg.Pool, events: Sequence[CallEvent]) -> None:
    writer: BatchWriter[CallEvent] = BatchWriter(
        "timeline", timeline_batch_writer(pool), backoff=Backoff(initial=0.01, cap=0.05)
    )
    stop = asyncio.Event()
    task = asyncio.create_task(writer.run(stop))
    for event in events:
        assert writer.submit(event)
    await until(lambda: writer.written == len(events))
    stop.set()
    await task
    assert writer.failures == 0


async def summary_of(db: asyncpg.Connection, call_id: str) -> asyncpg.Record:
    return await db.fetchrow(
        "SELECT queued_at, answered_at, ended_at, wait_s, talk_s, hold_s, transfers, agents,"
        " abandoned, end_cause FROM interactions WHERE call_id = $1",
        uuid.UUID(call_id),
    )


async def test_a_calls_events_are_stored_once_and_summarised_on_its_record(pool, db):
    call_id = str(uuid.uuid4())
    await insert_interaction(db, call_id)
    c = Call(call_id, "1700000000.1")
    events = c.events(
        c.queued(1),
        c.ringing(2, ALICE),
        c.no_answer(17, ALICE),
        c.ringing(18, BOB),
        c.connected(21, BOB),
        c.held(30, BOB),
        c.unheld(40, BOB),
        c.left(81, BOB),
        c.ended(81, BOB),
    )
    await write_through_batch_writer(pool, events)
    await write_through_batch_writer(pool, events)  # another instance, after a handover
    await timeline_batch_writer(pool)(events)  # and a retry in a single batch
    assert await db.fetchval("SELECT count(*) FROM interaction_events") == len(events)

    summary = await summary_of(db, call_id)
    assert dict(summary) == {
        "queued_at": at(1),
        "answered_at": at(21),
        "ended_at": at(81),
        "wait_s": 20.0,
        "talk_s": 50.0,
        "hold_s": 10.0,
        "transfers": 0,
        "agents": [BOB],
        "abandoned": False,
        "end_cause": "Normal Clearing",
    }
    row = await db.fetchrow(
        "SELECT call_key, call_id, linkedid, at, agent, detail FROM interaction_events"
        " WHERE kind = 'connected'"
    )
    assert (row["call_key"], str(row["call_id"]), row["linkedid"]) == (
        call_id,
        call_id,
        "1700000000.1",
    )
    assert (row["at"], row["agent"]) == (at(21), BOB)
    assert '"channel": "PJSIP/2002-1"' in row["detail"]


async def test_a_late_event_rewrites_the_summary_of_an_ended_call(pool, db):
    call_id = str(uuid.uuid4())
    await insert_interaction(db, call_id)
    c = Call(call_id, "1700000000.2")
    write = timeline_batch_writer(pool)
    await write(c.events(c.queued(0), c.connected(5, ALICE)))
    assert (await summary_of(db, call_id))["ended_at"] is None  # not ended: no summary yet
    await write(c.events(c.ended(90, ALICE)))
    assert (await summary_of(db, call_id))["talk_s"] == 85.0
    # The agent's hang-up, written late (another instance's backlog): talk ended there.
    await write(c.events(c.left(60, ALICE)))
    summary = await summary_of(db, call_id)
    assert (summary["talk_s"], summary["ended_at"]) == (55.0, at(90))


async def test_an_ended_call_without_a_record_is_not_summarised(pool, db):
    call_id = str(uuid.uuid4())
    c = Call(call_id, "1700000000.3")
    await timeline_batch_writer(pool)(c.events(c.connected(0, ALICE), c.ended(9, ALICE)))
    assert await db.fetchval("SELECT count(*) FROM interaction_events") == 2
    assert await db.fetchval("SELECT count(*) FROM interactions") == 0


async def test_a_call_without_a_call_id_is_stored_under_its_linkedid(pool, db):
    c = Call(None, "1700000000.4")
    events = c.events(c.connected(0, ALICE), c.left(7, ALICE), c.ended(7, ALICE))
    await write_through_batch_writer(pool, events)
    rows = await db.fetch("SELECT DISTINCT call_key, call_id FROM interaction_events")
    assert [tuple(r) for r in rows] == [("L:1700000000.4", None)]
    assert await db.fetchval("SELECT count(*) FROM interaction_events") == 3


async def test_a_row_the_database_refuses_does_not_block_the_batch(pool, db):
    call_id = str(uuid.uuid4())
    await insert_interaction(db, call_id)
    c = Call(call_id, "1700000000.5")
    bad_key = Call("x" * 200, "1700000000.6")  # too long a call_key (and not a UUID)
    not_uuid = Call("not-a-uuid", "1700000000.7")
    nul = CallEvent(kind="left", call_key=call_id, call_id=call_id, linkedid="1", fingerprint="n",
                    at=T0 + 3, data={"channel": "PJSIP/\x002001"})  # fmt: skip
    await timeline_batch_writer(pool)(
        [
            *c.events(c.connected(0, ALICE)),
            *bad_key.events(bad_key.connected(0, BOB)),
            nul,
            *not_uuid.events(not_uuid.connected(0, BOB)),
            *c.events(c.ended(10, ALICE)),
        ]
    )
    rows = await db.fetch("SELECT call_key, call_id, kind FROM interaction_events ORDER BY at")
    assert sorted((r["call_key"], r["kind"]) for r in rows) == sorted(
        [(call_id, "connected"), ("not-a-uuid", "connected"), (call_id, "ended")]
    )
    assert [r["call_id"] for r in rows if r["call_key"] == "not-a-uuid"] == [None]
    assert (await summary_of(db, call_id))["talk_s"] == 10.0


async def _waiting_for_an_advisory_lock(db: asyncpg.Connection) -> bool:
    """Whether a session of this test's database waits for an advisory lock."""
    return bool(
        await db.fetchval(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
            " WHERE l.locktype = 'advisory' AND NOT l.granted"
            " AND d.datname = current_database()"
        )
    )


async def test_the_summary_waits_for_a_concurrent_writer_of_the_same_call(pool, db, database_url):
    """Another instance's transaction holds the summary lock with an earlier event of the
    call not yet committed: this writer's summary must include it once it commits."""
    call_id = str(uuid.uuid4())
    await insert_interaction(db, call_id)
    c = Call(call_id, "1700000000.8")
    await timeline_batch_writer(pool)(c.events(c.connected(0, ALICE)))
    other = await asyncpg.connect(database_url)
    try:
        transaction = other.transaction()
        await transaction.start()
        await other.execute("SELECT pg_advisory_xact_lock($1)", SUMMARY_LOCK)
        (late,) = c.events(c.left(30, ALICE))
        await other.execute(INSERT_ONE_SQL, *(event_row(late) or ()))
        writing = asyncio.create_task(timeline_batch_writer(pool)(c.events(c.ended(50, ALICE))))
        await until(lambda: _waiting_for_an_advisory_lock(db))
        assert not writing.done()  # waiting for the other writer
        await transaction.commit()
        await asyncio.wait_for(writing, 5)
    finally:
        await other.close()
    assert (await summary_of(db, call_id))["talk_s"] == 30.0


async def test_the_timeline_of_a_call_and_the_calls_of_an_agent(pool, db):
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    a, b = Call(first, "1700000000.9"), Call(second, "1700000001.0")
    orphan = Call(None, "1700000001.1")
    events = [
        *b.events(b.ringing(100, ALICE), b.no_answer(110, ALICE), b.connected(112, BOB)),
        *a.events(a.ended(20, ALICE), a.left(20, ALICE), a.queued(0), a.connected(5, ALICE)),
        *orphan.events(orphan.connected(200, ALICE)),
    ]
    await write_through_batch_writer(pool, events)

    timeline = await call_timeline(pool, first)
    assert [(e["kind"], e["at"], e["agent"]) for e in timeline] == [
        ("queued", at(0), None),
        ("connected", at(5), ALICE),
        ("left", at(20), ALICE),
        ("ended", at(20), None),
    ]
    assert timeline[1]["detail"]["channel"] == "PJSIP/2001-1"
    assert timeline[1]["fingerprint"] == "connected|PJSIP/2001-1"
    assert await call_timeline(pool, str(uuid.uuid4())) == []
    assert await call_timeline(pool, "not-a-uuid") == []

    assert await calls_of_agent(pool, ALICE, 10) == [second, first]  # latest first
    assert await calls_of_agent(pool, ALICE, 1) == [second]
    assert await calls_of_agent(pool, BOB, 10) == [second]
    assert await calls_of_agent(pool, "PJSIP/2999", 10) == []
