"""A call that crosses PBXes, in PostgreSQL: one call id, events from PBX a (home) and
PBX b in the timeline, each row with its PBX; one interactions row, ended only once the
last PBX's part ended; report legs and queue visits tagged with their PBX. And two PBXes
replaying the same capture, published (real Redis) and stored in full.

The two servers' channels are named alike on purpose (``PJSIP/2001-1`` on both): legs
must be told apart by PBX, not merged by channel name.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from cti.calls.effects import AgentConnected, CallTransferred, Effect, TransferKind
from cti.calls.events import CallEvent, to_events
from cti.calls.lease import lease_key
from cti.calls.publisher import ALL_EVENTS_STREAM, EventPublisher
from cti.pbx import Pbx
from cti.timeline.store import agent_event_kinds, call_timeline, timeline_batch_writer
from tests.integration.test_timeline_db import T0, Call, at, insert_interaction, summary_of
from tests.unit.test_pbx_events import Followed, capture

A = Pbx(name="a", host="10.0.0.1", port=5038, username="cti", home=True)
B = Pbx(name="b", host="10.0.0.2", port=5038, username="cti", home=False)
ALICE_A, ALICE_B = "PJSIP/2001", "PJSIP/2001@b"  # one extension on each PBX


@pytest.fixture
async def pool(database_url) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=4) as pool:
        yield pool


class PbxCall(Call):
    """The call's part on one PBX: its events as that PBX's tracker makes them, its
    agents answering from the PBX's queue ``sales``, on channel ``PJSIP/2001-1``."""

    def __init__(self, call_id: str, linkedid: str, pbx: Pbx) -> None:
        super().__init__(call_id, linkedid)
        self.pbx = pbx

    def events(self, *effects: Effect) -> list[CallEvent]:
        return [e for effect in effects for e in to_events(effect, now=T0, pbx=self.pbx)]

    def connected(self, t: float, agent: str) -> AgentConnected:
        return AgentConnected(
            **self.ids, at=T0 + t, agent=agent, member_name=None, channel="PJSIP/2001-1",
            queue="sales", via=(),
        )  # fmt: skip

    def attended(self, t: float, agent: str, to: str) -> CallTransferred:
        return CallTransferred(
            **self.ids, at=T0 + t, kind=TransferKind.ATTENDED, from_agent=agent, to=to
        )


async def test_a_call_on_two_pbxes_is_one_interaction_with_legs_on_both(pool, db):
    call_id = str(uuid.uuid4())
    await insert_interaction(db, call_id)
    # The same Linkedid on both servers: they number their channels alike.
    a, b = PbxCall(call_id, "1700000000.1", A), PbxCall(call_id, "1700000000.1", B)
    write = timeline_batch_writer(pool)
    # Alice on a answers from a's queue, consults Alice on b through the trunk (the call
    # id crosses in X-CTI-Call-ID), transfers; the caller then talks to b until the end.
    await write(
        [
            *a.events(a.queued(0), a.connected(5, ALICE_A)),
            *b.events(b.queued(20), b.connected(25, ALICE_B)),
            *a.events(a.attended(30, ALICE_A, "2001"), a.left(30, ALICE_A)),
        ]
    )
    await write(a.events(a.ended(90, ALICE_A)))  # a's part is over: the call is not
    summary = await summary_of(db, call_id)
    assert summary["ended_at"] is None
    assert await db.fetchval("SELECT count(*) FROM report_legs") == 0

    await write(b.events(b.ended(95, ALICE_B)))  # the last part: now the call has ended
    assert await db.fetchval("SELECT count(*) FROM interactions") == 1
    summary = await summary_of(db, call_id)
    assert (summary["ended_at"], summary["answered_at"], summary["wait_s"]) == (at(95), at(5), 5.0)
    assert (summary["talk_s"], summary["transfers"]) == (90.0, 1)
    assert summary["agents"] == [ALICE_A, ALICE_B]

    legs = await db.fetch(
        "SELECT pbx, agent, channel, how, to_whom, talk_s, ended_at FROM report_legs ORDER BY seq"
    )
    assert [tuple(r) for r in legs] == [
        ("a", ALICE_A, "PJSIP/2001-1", "attended", "2001", 25.0, at(30)),
        ("b", ALICE_B, "PJSIP/2001-1", "hangup", None, 70.0, at(95)),
    ]
    offers = await db.fetch(
        "SELECT kind, pbx, queue, outcome, agent FROM report_offers ORDER BY kind, seq"
    )
    assert [tuple(r) for r in offers] == [
        ("call", "a", "sales", "answered", None),
        ("queue", "a", "sales", "answered", ALICE_A),
        ("queue", "b", "sales", "answered", ALICE_B),
    ]
    rows = await db.fetch(
        "SELECT pbx, count(*) AS n, bool_and(fingerprint LIKE '@b|%') AS b_prefixed"
        " FROM interaction_events GROUP BY pbx ORDER BY pbx"
    )
    assert [tuple(r) for r in rows] == [("a", 5, False), ("b", 3, True)]
    timeline = await call_timeline(pool, call_id)
    assert [(e["kind"], e["pbx"]) for e in timeline][-2:] == [("ended", "a"), ("ended", "b")]


async def test_the_call_ends_with_its_last_part_whichever_pbx_that_is(pool, db):
    call_id = str(uuid.uuid4())
    await insert_interaction(db, call_id)
    a, b = PbxCall(call_id, "1700000000.2", A), PbxCall(call_id, "1700000000.2", B)
    write = timeline_batch_writer(pool)
    await write([*a.events(a.connected(0, ALICE_A)), *b.events(b.connected(10, ALICE_B))])
    await write(b.events(b.ended(40, ALICE_B)))
    assert (await summary_of(db, call_id))["ended_at"] is None
    await write(a.events(a.ended(60, ALICE_A)))
    summary = await summary_of(db, call_id)
    assert (summary["ended_at"], summary["talk_s"]) == (at(60), 60.0)
    legs = await db.fetch("SELECT pbx, ended_at FROM report_legs ORDER BY seq")
    assert [tuple(r) for r in legs] == [("a", at(60)), ("b", at(40))]


async def test_rows_written_before_pbxes_were_named_are_the_home_pbx(pool, db):
    """Migration 011: pbx NULL is the home PBX; a call in progress across the upgrade
    (older rows without a PBX, newer ones with the home's name) is one part."""
    call_id = str(uuid.uuid4())
    await insert_interaction(db, call_id)
    old, new = Call(call_id, "1700000000.3"), PbxCall(call_id, "1700000000.3", A)
    write = timeline_batch_writer(pool)
    await write([*old.events(old.queued(0), old.connected(5, ALICE_A))])
    await write(new.events(new.ended(50, ALICE_A)))
    assert (await summary_of(db, call_id))["ended_at"] == at(50)
    pbxes = await db.fetch("SELECT pbx FROM interaction_events ORDER BY at")
    assert [r["pbx"] for r in pbxes] == [None, None, "a"]


async def test_an_agents_part_counts_the_end_of_their_own_pbxs_part_only(pool, db):
    """Alice on a still rings when b's part of the call ends (a consultation on b
    declined): she may read the call; once a's part ends, her ringing has ended too."""
    call_id = str(uuid.uuid4())
    a, b = PbxCall(call_id, "1700000000.4", A), PbxCall(call_id, "1700000000.4", B)
    write = timeline_batch_writer(pool)
    await write([*b.events(b.connected(0, ALICE_B)), *a.events(a.ringing(5, ALICE_A))])
    await write(b.events(b.ended(9, ALICE_B)))
    assert await agent_event_kinds(pool, call_id, ALICE_A) == ["ringing"]
    assert await agent_event_kinds(pool, call_id, ALICE_B) == ["connected", "ended"]
    await write(a.events(a.ended(20)))
    assert await agent_event_kinds(pool, call_id, ALICE_A) == ["ringing", "ended"]


@pytest.mark.parametrize("name", ["interleaved_calls", "attended_transfer_phone"])
async def test_two_pbxes_with_the_same_traffic_are_stored_and_published_in_full(
    pool, db, redis_client, name
):
    """The worst case of two servers numbering alike: a and b replay the same capture.
    Nothing of b's is taken for a duplicate of a's, in Redis (the seen-sets) or in the
    timeline (its primary key), and each PBX's events pass its own lease only."""
    on_a = Followed(A).feed(capture(name))
    on_b = Followed(B).feed(capture(name))
    await redis_client.set(lease_key("a"), "me")
    await redis_client.set(lease_key("b"), "me")
    publisher = EventPublisher(redis_client, ttl_s=600)
    await publisher.publish_many(on_a, "me", lease_key=lease_key("a"))
    await publisher.publish_many(on_b, "me", lease_key=lease_key("b"))
    assert (publisher.published, publisher.duplicates) == (len(on_a) + len(on_b), 0)
    assert await redis_client.xlen(ALL_EVENTS_STREAM) == len(on_a) + len(on_b)

    await timeline_batch_writer(pool)([*on_a, *on_b])
    rows = await db.fetch("SELECT pbx, count(*) AS n FROM interaction_events GROUP BY pbx")
    assert {r["pbx"]: r["n"] for r in rows} == {"a": len(on_a), "b": len(on_b)}
