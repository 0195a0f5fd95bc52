"""Call data against real Redis and PostgreSQL: versioned edits, history, restart, expiry."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import redis.asyncio as redis

from cti.batch_writer import BatchWriter
from cti.calldata.document import MAX_DOCUMENT_BYTES, StaleVersion, serialize
from cti.calldata.history import (
    HistoryRecord,
    history_batch_writer,
    history_record,
    latest_version,
)
from cti.calldata.store import CallDataStore, call_key
from cti.customers import find_customer
from cti.errors import DomainError
from cti.router import Router, RouteRequest
from cti.routing.table import RoutingTable
from tests.waiting import until

TTL_S = 3_600
NOW = datetime(2025, 3, 4, 10, 30, tzinfo=UTC)


def new_document(**extra: Any) -> dict[str, Any]:
    """Version 1, shaped like the route's (cti.router.call_document)."""
    return {
        "call_id": str(uuid.uuid4()),
        "version": 1,
        "created_at": NOW.isoformat(),
        "customer": {"id": 7, "name": "Ada Lovelace"},
        "routing": {"queue": "support", "priority": 10},
        "ivr": {},
        "notes": [],
        "disposition": None,
        "tags": [],
        "attributes": {},
        **extra,
    }


@dataclasses.dataclass
class Stack:
    """A store with its history writer running, as the daemon wires them."""

    store: CallDataStore
    history: BatchWriter[HistoryRecord]
    pool: asyncpg.Pool
    redis: redis.Redis

    async def create(self, document: dict[str, Any]) -> dict[str, Any]:
        """What the route does: the document to Redis, version 1 to the history."""
        await self.store.create_many([document])
        self.history.submit(history_record(document, "route", NOW))
        return document

    async def flushed(self, versions: int) -> None:
        """Wait until the history writer has written ``versions`` records in all."""
        await until(lambda: self.history.written >= versions)

    async def stored(self, call_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(call_key(call_id))
        return None if raw is None else json.loads(raw)


@pytest.fixture
async def pool(database_url) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=4) as pool:
        yield pool


@pytest.fixture
async def stack(pool, redis_client) -> AsyncIterator[Stack]:
    history: BatchWriter[HistoryRecord] = BatchWriter(
        "history", history_batch_writer(pool), linger_s=0.001
    )
    store = CallDataStore(redis_client, TTL_S, pool=pool, history=history)
    stop = asyncio.Event()
    task = asyncio.create_task(history.run(stop))
    yield Stack(store, history, pool, redis_client)
    stop.set()
    await asyncio.wait_for(task, 10)


async def history_rows(db: asyncpg.Connection, call_id: str) -> list[tuple[Any, ...]]:
    rows = await db.fetch(
        "SELECT version, changed_by, changed_at, document FROM call_data_history"
        " WHERE call_id = $1 ORDER BY version",
        uuid.UUID(call_id),
    )
    return [
        (r["version"], r["changed_by"], r["changed_at"], json.loads(r["document"])) for r in rows
    ]


async def test_an_edit_with_the_current_version_makes_the_next_one(stack, db):
    doc = await stack.create(new_document())
    await stack.redis.expire(call_key(doc["call_id"]), 100)
    v2 = await stack.store.update(
        doc["call_id"], 1, {"note": "wants a callback"}, "agent/2001", NOW
    )
    assert v2["version"] == 2
    assert v2["notes"] == [{"by": "agent/2001", "text": "wants a callback", "at": NOW.isoformat()}]
    assert await stack.stored(doc["call_id"]) == v2 == await stack.store.get(doc["call_id"])
    assert 0 < await stack.redis.ttl(call_key(doc["call_id"])) <= 100  # the TTL is kept
    await stack.flushed(2)
    assert await history_rows(db, doc["call_id"]) == [
        (1, "route", NOW, doc),
        (2, "agent/2001", NOW, v2),
    ]


async def test_a_stale_version_is_refused_and_nothing_is_stored(stack, db):
    doc = await stack.create(new_document())
    v2 = await stack.store.update(doc["call_id"], 1, {"tags": ["vip"]}, "alice", NOW)
    with pytest.raises(StaleVersion) as caught:
        await stack.store.update(doc["call_id"], 1, {"tags": ["other"]}, "bob", NOW)
    assert (caught.value.code, caught.value.current_version) == ("stale_version", 2)
    assert caught.value.current == v2
    with pytest.raises(StaleVersion):  # a version from the future is no better
        await stack.store.update(doc["call_id"], 3, {"tags": ["other"]}, "bob", NOW)
    assert await stack.stored(doc["call_id"]) == v2
    await stack.flushed(2)
    await asyncio.sleep(0.05)
    assert [row[0] for row in await history_rows(db, doc["call_id"])] == [1, 2]


async def test_two_edits_of_the_same_version_at_once_exactly_one_wins(stack, db):
    doc = await stack.create(new_document())
    results = await asyncio.gather(
        stack.store.update(doc["call_id"], 1, {"note": "from alice"}, "alice", NOW),
        stack.store.update(doc["call_id"], 1, {"note": "from bob"}, "bob", NOW),
        return_exceptions=True,
    )
    won = [r for r in results if isinstance(r, dict)]
    lost = [r for r in results if isinstance(r, StaleVersion)]
    assert (len(won), len(lost)) == (1, 1)
    assert lost[0].current == won[0] == await stack.stored(doc["call_id"])
    await stack.flushed(2)
    await asyncio.sleep(0.05)
    assert [row[3] for row in await history_rows(db, doc["call_id"])] == [doc, won[0]]


async def test_many_edits_of_the_same_version_at_once_exactly_one_wins(stack):
    doc = await stack.create(new_document())
    results = await asyncio.gather(
        *(
            stack.store.update(doc["call_id"], 1, {"note": f"n{i}"}, f"agent/{i}", NOW)
            for i in range(20)
        ),
        return_exceptions=True,
    )
    assert sum(isinstance(r, dict) for r in results) == 1
    assert sum(isinstance(r, StaleVersion) for r in results) == 19
    assert (await stack.stored(doc["call_id"]))["version"] == 2


class ChangedUnderfoot(CallDataStore):
    """A store whose first read is followed by another writer's edit: the change lands
    between this store's version check and its write, which the Lua script must catch."""

    def __init__(self, *args: Any, rival: CallDataStore, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rival: CallDataStore | None = rival

    async def get(self, call_id: str) -> dict[str, Any] | None:
        document = await super().get(call_id)
        if self._rival is not None and document is not None:
            rival, self._rival = self._rival, None
            await rival.update(call_id, document["version"], {"note": "first"}, "rival", NOW)
        return document


async def test_a_change_between_the_check_and_the_write_is_refused(stack, db):
    doc = await stack.create(new_document())
    racing = ChangedUnderfoot(
        stack.redis, TTL_S, pool=stack.pool, history=stack.history, rival=stack.store
    )
    with pytest.raises(StaleVersion) as caught:
        await racing.update(doc["call_id"], 1, {"note": "second"}, "me", NOW)
    assert caught.value.current_version == 2
    assert caught.value.current["notes"][0]["by"] == "rival"
    assert await stack.stored(doc["call_id"]) == caught.value.current
    await stack.flushed(2)
    await asyncio.sleep(0.05)
    assert [row[1] for row in await history_rows(db, doc["call_id"])] == ["route", "rival"]


class LostUnderfoot(CallDataStore):
    """A store whose first read is followed by Redis losing the key (a restart)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reads = 0

    async def get(self, call_id: str) -> dict[str, Any] | None:
        document = await super().get(call_id)
        self.reads += 1
        if self.reads == 1:
            await self._redis.flushdb()
        return document


async def test_a_key_lost_between_the_check_and_the_write_is_reloaded(stack, db):
    doc = await stack.create(new_document())
    await stack.flushed(1)
    store = LostUnderfoot(stack.redis, TTL_S, pool=stack.pool, history=stack.history)
    v2 = await store.update(doc["call_id"], 1, {"note": "still here"}, "a", NOW)
    assert (store.reads, v2["version"]) == (2, 2)
    assert await stack.stored(doc["call_id"]) == v2
    await stack.flushed(2)
    assert [row[0] for row in await history_rows(db, doc["call_id"])] == [1, 2]


async def test_a_key_lost_for_good_between_the_check_and_the_write_is_an_unknown_call(
    stack, redis_client
):
    doc = new_document()
    await stack.store.create_many([doc])  # in Redis only: nothing to reload it from
    store = LostUnderfoot(redis_client, TTL_S, pool=stack.pool)
    with pytest.raises(DomainError) as caught:
        await store.update(doc["call_id"], 1, {"note": "x"}, "a", NOW)
    assert caught.value.code == "unknown_call"
    assert await stack.stored(doc["call_id"]) is None


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"note": "x" * 4_001}, "too_large"),
        ({"tags": ["ok", "not ok"]}, "invalid"),
        ({"note": "fine", "attributes": {"k": 5}}, "invalid"),  # nothing partial: no note
        ({"customer": {"name": "Mallory"}}, "invalid"),
        ({}, "invalid"),
        ({"attributes": {f"k{i}": "v" for i in range(51)}}, "too_large"),
    ],
)
async def test_a_refused_edit_stores_nothing(stack, db, change, code):
    doc = await stack.create(new_document())
    with pytest.raises(DomainError) as caught:
        await stack.store.update(doc["call_id"], 1, change, "agent/2001", NOW)
    assert caught.value.code == code
    assert await stack.stored(doc["call_id"]) == doc
    await stack.flushed(1)
    await asyncio.sleep(0.05)
    assert [row[0] for row in await history_rows(db, doc["call_id"])] == [1]


async def test_an_edit_that_would_pass_32_kb_is_refused_and_stores_nothing(stack, db):
    doc = new_document(ivr={"pad": ""})
    doc["ivr"]["pad"] = "x" * (MAX_DOCUMENT_BYTES - 3_000 - len(serialize(doc)))
    await stack.create(doc)
    v2 = await stack.store.update(doc["call_id"], 1, {"note": "y" * 2_500}, "a", NOW)
    with pytest.raises(DomainError) as caught:
        await stack.store.update(doc["call_id"], 2, {"note": "y" * 3_500}, "a", NOW)
    assert caught.value.code == "too_large"
    assert "at most 32,768" in caught.value.message
    assert await stack.stored(doc["call_id"]) == v2
    await stack.flushed(2)
    await asyncio.sleep(0.05)
    assert [row[0] for row in await history_rows(db, doc["call_id"])] == [1, 2]


async def test_an_unknown_call_is_refused_and_nothing_is_stored(stack, db):
    call_id = str(uuid.uuid4())
    with pytest.raises(DomainError) as caught:
        await stack.store.update(call_id, 1, {"note": "x"}, "a", NOW)
    assert (caught.value.code, caught.value.field) == ("unknown_call", "call_id")
    assert await stack.store.get(call_id) is None
    assert await stack.redis.exists(call_key(call_id)) == 0
    assert await history_rows(db, call_id) == []


@pytest.mark.parametrize(
    ("call_id", "version", "change", "by", "field"),
    [
        ("not-a-uuid", 1, {"note": "x"}, "a", "call_id"),
        ("../../etc", 1, {"note": "x"}, "a", "call_id"),
        (str(uuid.uuid4()) + "\n", 1, {"note": "x"}, "a", "call_id"),
        (7, 1, {"note": "x"}, "a", "call_id"),
        (str(uuid.uuid4()), 0, {"note": "x"}, "a", "version"),
        (str(uuid.uuid4()), True, {"note": "x"}, "a", "version"),
        (str(uuid.uuid4()), "1", {"note": "x"}, "a", "version"),
        (str(uuid.uuid4()), 1, {"nope": "x"}, "a", "nope"),
        (str(uuid.uuid4()), 1, {"note": "x"}, "", "by"),
    ],
)
async def test_malformed_requests_are_refused_before_any_io(call_id, version, change, by, field):
    dead = redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    store = CallDataStore(dead, TTL_S)  # any Redis access would raise ConnectionError
    try:
        with pytest.raises(DomainError) as caught:
            await store.update(call_id, version, change, by, NOW)
        assert (caught.value.code, caught.value.field) == ("invalid", field)
    finally:
        await dead.aclose()


async def test_every_version_is_kept_in_postgresql(stack, db):
    doc = await stack.create(new_document())
    versions = [doc]
    changes = [
        ({"note": "first"}, "alice"),
        ({"disposition": "callback"}, "bob"),
        ({"attributes": {"order": "A-17"}}, "alice"),
        ({"tags": ["vip", "late"]}, "carol"),
        ({"note": ""}, "alice"),
    ]
    for i, (change, by) in enumerate(changes):
        at = NOW + timedelta(seconds=i + 1)
        versions.append(await stack.store.update(doc["call_id"], i + 1, change, by, at))
    await stack.flushed(6)
    rows = await history_rows(db, doc["call_id"])
    assert [row[0] for row in rows] == [1, 2, 3, 4, 5, 6]
    assert [row[1] for row in rows] == ["route", "alice", "bob", "alice", "carol", "alice"]
    assert [row[2] for row in rows] == [NOW + timedelta(seconds=i) for i in range(6)]
    assert [row[3] for row in rows] == versions
    assert await latest_version(stack.pool, doc["call_id"]) == versions[-1]


async def test_a_history_batch_written_twice_is_stored_once(pool, db):
    doc = new_document()
    records = [history_record(doc, "route", NOW), history_record({**doc, "version": 2}, "a", NOW)]
    write = history_batch_writer(pool)
    await write(records)
    await write(records)  # a retry after a commit whose acknowledgement was lost
    await write([*records, history_record({**doc, "version": 3}, "b", NOW)])
    assert [row[0] for row in await history_rows(db, doc["call_id"])] == [1, 2, 3]


async def test_after_redis_loses_everything_reads_and_edits_continue_from_postgresql(stack, db):
    doc = await stack.create(new_document())
    await stack.store.update(doc["call_id"], 1, {"note": "first"}, "alice", NOW)
    v3 = await stack.store.update(doc["call_id"], 2, {"tags": ["vip"]}, "bob", NOW)
    await stack.flushed(3)
    await stack.redis.flushdb()  # a Redis restart without persistence

    assert await stack.store.get(doc["call_id"]) == v3
    assert await stack.stored(doc["call_id"]) == v3  # put back in Redis
    assert TTL_S - 5 < await stack.redis.ttl(call_key(doc["call_id"])) <= TTL_S

    await stack.redis.flushdb()  # again, and this time edit without reading first
    with pytest.raises(StaleVersion) as caught:
        await stack.store.update(doc["call_id"], 2, {"note": "late"}, "alice", NOW)
    assert caught.value.current == v3
    v4 = await stack.store.update(doc["call_id"], 3, {"note": "again"}, "alice", NOW)
    assert v4["version"] == 4
    assert v4["tags"] == ["vip"]
    assert [n["text"] for n in v4["notes"]] == ["again"]
    assert await stack.stored(doc["call_id"]) == v4
    await stack.flushed(4)
    assert [row[0] for row in await history_rows(db, doc["call_id"])] == [1, 2, 3, 4]


async def test_recovery_does_not_overwrite_a_document_already_back_in_redis(stack):
    doc = await stack.create(new_document())
    await stack.flushed(1)
    await stack.redis.flushdb()
    newer = {**doc, "version": 2, "tags": ["written-meanwhile"]}
    await stack.store.create_many([newer])  # e.g. the route's retried write, or a peer
    assert await stack.store.get(doc["call_id"]) == newer


async def test_without_a_pool_a_miss_is_a_miss(redis_client):
    store = CallDataStore(redis_client, TTL_S)
    assert await store.get(str(uuid.uuid4())) is None
    doc = new_document()
    await store.create_many([doc])
    assert await store.get(doc["call_id"]) == doc
    assert await store.get(doc["call_id"].upper()) == doc  # call ids are case-insensitive


async def test_expiry_after_the_end_shortens_the_ttl_but_never_lengthens_it(stack):
    doc = await stack.create(new_document())
    key = call_key(doc["call_id"])
    assert TTL_S - 5 < await stack.redis.ttl(key) <= TTL_S
    assert await stack.store.expire_after_end(doc["call_id"], 60) is True
    assert 55 < await stack.redis.ttl(key) <= 60
    assert await stack.store.expire_after_end(doc["call_id"], 600) is False
    assert 55 < await stack.redis.ttl(key) <= 60
    await stack.store.update(doc["call_id"], 1, {"note": "wrap-up"}, "a", NOW)
    assert 55 < await stack.redis.ttl(key) <= 60  # an edit keeps the shortened TTL
    assert await stack.store.expire_after_end(doc["call_id"], 0) is True
    assert await stack.redis.exists(key) == 0


async def test_expiry_of_an_unknown_or_malformed_call_is_a_no_op(stack):
    assert await stack.store.expire_after_end(str(uuid.uuid4()), 60) is False
    assert await stack.store.expire_after_end("L:1700000000.1", 60) is False
    with pytest.raises(ValueError):
        await stack.store.expire_after_end(str(uuid.uuid4()), -1)


class Keep:
    def __init__(self) -> None:
        self.items: list[object] = []

    def submit(self, item: object) -> bool:
        self.items.append(item)
        return True


async def test_the_routes_document_lands_in_the_history_as_version_1(stack, db):
    call_data = BatchWriter("call-data", stack.store.create_many, linger_s=0.001)
    stop = asyncio.Event()
    writer = asyncio.create_task(call_data.run(stop))
    router = Router(
        table=lambda: RoutingTable(loaded=True),
        find_customer=lambda e164, account: find_customer(stack.pool, e164, account),
        default_queue="default",
        region="US",
        lookup_budget_s=5,
        interactions=Keep(),
        call_data=call_data,
        history=stack.history,
    )
    outcome = await router.route(RouteRequest("PJSIP/t-1", "1.1", "2120000001", "5550100"))
    await until(lambda: call_data.written >= 1)
    stop.set()
    await writer
    await stack.flushed(1)

    in_redis = await stack.stored(outcome.call_id)
    assert in_redis is not None and in_redis["version"] == 1 and in_redis["attributes"] == {}
    assert await history_rows(db, outcome.call_id) == [(1, "route", outcome.routed_at, in_redis)]
    v2 = await stack.store.update(outcome.call_id, 1, {"disposition": "sale"}, "agent/2001")
    assert v2["version"] == 2
    await stack.flushed(2)
    assert [row[0] for row in await history_rows(db, outcome.call_id)] == [1, 2]
