"""Writers never jam: a record PostgreSQL refuses for good is set aside, the rest land.

On real PostgreSQL and Redis, through the real writers: a row refused by a ``CHECK``
and an interactions record with a NUL go to ``dead_letters`` (with their call id) while
the records around them are written; an outage (PostgreSQL behind a proxy that refuses
or black-holes connections) is waited out and loses nothing; ``/metrics`` and
``/readyz`` over HTTP name the writer that is stuck and since when.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import redis.asyncio as redis
from aiohttp.test_utils import TestClient, TestServer

from cti.backoff import Backoff
from cti.batch_writer import BatchWriter
from cti.calldata.history import HistoryRecord, history_batch_writer
from cti.calldata.service import CallDataService
from cti.calldata.store import CallDataStore
from cti.calls.events import CallEvent
from cti.calls.publisher import EventPublisher
from cti.db.dead_letters import PgDeadLetters, list_dead_letters
from cti.interactions import interaction_batch_writer
from cti.router import RouteOutcome
from cti.screenpop.app import build_app
from cti.screenpop.auth import Sessions
from cti.screenpop.metrics import Metrics
from cti.timeline.store import timeline_batch_writer
from tests.fakes.tcp_proxy import TcpProxy
from tests.integration.routes import route_outcomes
from tests.waiting import until

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=4) as pool:
        yield pool


@pytest.fixture
async def proxy(database_url: str) -> AsyncIterator[TcpProxy]:
    parts = urlsplit(database_url)
    proxy = await TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    yield proxy
    await proxy.close()


def via(proxy: TcpProxy, database_url: str) -> str:
    return proxy.url("postgresql", urlsplit(database_url).path).replace("://", "://postgres@")


async def proxied_pool(proxy: TcpProxy, database_url: str) -> asyncpg.Pool:
    """A pool through the proxy; a connection attempt that hangs gives up in 0.5 s."""
    return await asyncpg.create_pool(
        via(proxy, database_url), min_size=0, max_size=2, timeout=0.5, command_timeout=5
    )


def writer_of(name: str, write: Any, dead_letters: Any, **options: Any) -> BatchWriter[Any]:
    return BatchWriter(
        name,
        write,
        dead_letters=dead_letters,
        backoff=Backoff(initial=0.02, cap=0.1),
        linger_s=0,
        **options,
    )


class Running:
    """A writer's task, stopped (and flushed) on exit."""

    def __init__(self, writer: BatchWriter[Any]) -> None:
        self.writer, self.stop = writer, asyncio.Event()

    async def __aenter__(self) -> BatchWriter[Any]:
        self.task = asyncio.create_task(self.writer.run(self.stop))
        return self.writer

    async def __aexit__(self, *_: object) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 10)


def with_nul(outcome: RouteOutcome) -> RouteOutcome:
    """A record with a NUL in a text field (``channel``), as a raw AGI header may carry."""
    request = dataclasses.replace(outcome.request, channel="PJSIP/ev\x00il")
    return dataclasses.replace(outcome, request=request)


def version(call_id: str, n: int, by: str = "alice") -> HistoryRecord:
    return HistoryRecord(call_id, n, {"call_id": call_id, "version": n, "notes": []}, by, NOW)


async def dead_letters(db: asyncpg.Connection) -> list[dict[str, Any]]:
    return list(reversed(await list_dead_letters(db)))


# -- a refused row is set aside, the rows after it land ---------------------------------
async def test_a_row_refused_by_a_check_goes_to_the_dead_letters_and_the_next_rows_land(pool, db):
    call_id = str(uuid.uuid4())
    records = [version(call_id, n) for n in range(1, 11)]
    records[3] = version(call_id, 4, by="")  # CHECK (length(changed_by) BETWEEN 1 AND 128)
    writer = writer_of("call-data-history", history_batch_writer(pool), PgDeadLetters(pool))
    async with Running(writer):
        for record in records:
            writer.submit(record)
        await until(lambda: writer.backlog == 0)
        later = version(call_id, 11)
        writer.submit(later)  # the writer is not jammed: a later record lands too
        await until(lambda: writer.stats.written == 10)
    stored = await db.fetch("SELECT version FROM call_data_history ORDER BY version")
    assert [r["version"] for r in stored] == [1, 2, 3, 5, 6, 7, 8, 9, 10, 11]
    (letter,) = await dead_letters(db)
    assert (letter["writer"], letter["call_id"], letter["error_class"]) == (
        "call-data-history",
        call_id,
        "CheckViolationError",
    )
    assert "call_data_history_changed_by_check" in letter["error_message"]
    assert letter["record"]["version"] == 4 and letter["record"]["changed_by"] == ""
    s = writer.stats
    assert (s.written, s.dead_lettered, s.held, s.dropped, s.backlog) == (10, 1, 0, 0, 0)


async def test_a_nul_in_an_interaction_is_set_aside_and_the_50_others_land(pool, db):
    good = await route_outcomes(pool, 50)
    bad = with_nul((await route_outcomes(pool, 1))[0])
    writer = writer_of("interactions", interaction_batch_writer(pool), PgDeadLetters(pool))
    async with Running(writer):
        for outcome in [*good[:20], bad, *good[20:]]:
            writer.submit(outcome)
        await until(lambda: writer.backlog == 0)
    stored = {str(r["call_id"]) for r in await db.fetch("SELECT call_id FROM interactions")}
    assert stored == {o.call_id for o in good}
    (letter,) = await dead_letters(db)
    assert (letter["writer"], letter["call_id"]) == ("interactions", bad.call_id)
    assert letter["error_class"] == "CharacterNotInRepertoireError"
    # The record, whole, NUL escaped so that jsonb takes it.
    assert letter["record"]["request"]["channel"] == "PJSIP/ev\\u0000il"
    assert letter["record"]["call_id"] == bad.call_id
    assert letter["record"]["decision"]["queue"] == "default"
    assert (writer.stats.written, writer.stats.dead_lettered) == (50, 1)


async def test_a_refused_timeline_event_goes_to_the_dead_letters(pool, db):
    call_id = str(uuid.uuid4())

    def event(n: int, **data: str) -> CallEvent:
        return CallEvent(kind="left", call_key=call_id, call_id=call_id, linkedid="1",
                         fingerprint=f"f{n}", at=1_700_000_000.0 + n, data=data)  # fmt: skip

    writer = writer_of("timeline", timeline_batch_writer(pool), PgDeadLetters(pool))
    async with Running(writer):
        for e in [event(1), event(2, channel="PJSIP/\x002001"), event(3)]:
            writer.submit(e)
        await until(lambda: writer.backlog == 0)
    fingerprints = await db.fetch("SELECT fingerprint FROM interaction_events ORDER BY at")
    assert [r["fingerprint"] for r in fingerprints] == ["f1", "f3"]
    (letter,) = await dead_letters(db)
    assert (letter["writer"], letter["call_id"]) == ("timeline", call_id)
    assert letter["record"]["fingerprint"] == "f2"
    assert (writer.stats.written, writer.stats.dead_lettered) == (2, 1)


# -- an outage is waited out -------------------------------------------------------------
@pytest.mark.parametrize("mode", ["refuse", "blackhole"])
async def test_an_outage_is_retried_and_loses_nothing(pool, db, proxy, database_url, mode):
    through = await proxied_pool(proxy, database_url)
    try:
        writer = writer_of(
            "interactions", interaction_batch_writer(through), PgDeadLetters(through)
        )
        records = await route_outcomes(pool, 30)
        async with Running(writer):
            writer.submit(records[0])
            await until(lambda: writer.stats.written == 1)
            proxy.set_mode(mode)  # PostgreSQL away (connections in flight cut)
            for outcome in records[1:]:
                writer.submit(outcome)
            await until(lambda: writer.stats.retries >= 3, within_s=20)
            assert writer.backlog == 29 and writer.stats.written == 1
            proxy.set_mode("forward")
            await until(lambda: writer.backlog == 0, within_s=20)
    finally:
        await through.close()
    assert await db.fetchval("SELECT count(*) FROM interactions") == 30
    assert await db.fetchval("SELECT count(*) FROM dead_letters") == 0
    assert (writer.stats.dead_lettered, writer.stats.dropped) == (0, 0)


async def test_a_dead_letter_the_database_cannot_take_yet_is_held_then_stored(
    pool, db, proxy, database_url
):
    """The rows go straight to PostgreSQL; the dead letters go through the proxy, down."""
    through = await proxied_pool(proxy, database_url)
    try:
        proxy.set_mode("refuse")
        writer = writer_of("interactions", interaction_batch_writer(pool), PgDeadLetters(through))
        good = await route_outcomes(pool, 3)
        bad = with_nul((await route_outcomes(pool, 1))[0])
        async with Running(writer):
            for outcome in [good[0], bad, *good[1:]]:
                writer.submit(outcome)
            await until(lambda: writer.backlog == 0 and writer.stats.held == 1)
            assert await db.fetchval("SELECT count(*) FROM interactions") == 3
            assert writer.stats.dead_lettered == 0
            proxy.set_mode("forward")
            await until(lambda: writer.stats.held == 0, within_s=20)
    finally:
        await through.close()
    assert [letter["call_id"] for letter in await dead_letters(db)] == [bad.call_id]
    assert (writer.stats.dead_lettered, writer.stats.dropped) == (1, 0)


# -- /metrics and /readyz name the stuck writer ---------------------------------------------
async def test_metrics_and_readiness_show_the_stuck_writer(
    pool, db, proxy, database_url, redis_client: redis.Redis
):
    hour_ago = time.time() - 3600
    through = await proxied_pool(proxy, database_url)
    proxy.set_mode("refuse")
    dead = PgDeadLetters(pool)
    # Records stamped an hour ago (an injected clock): they have waited that long.
    stuck = writer_of(
        "interactions", interaction_batch_writer(through), dead, clock=lambda: hour_ago
    )
    fine = writer_of("call-data-history", history_batch_writer(pool), dead)
    metrics = Metrics()
    metrics.watch_writers([stuck.stats, fine.stats])
    store = CallDataStore(redis_client, 3600, pool=pool)
    app = build_app(
        pool=pool,
        redis_client=redis_client,
        call_data=CallDataService(store, EventPublisher(redis_client, ttl_s=3600)),
        sessions=Sessions(b"integration-test-secret-not-a-real-one", 3600),
        metrics=metrics,
    )
    records = await route_outcomes(pool, 3)
    call_id = str(uuid.uuid4())
    try:
        async with TestClient(TestServer(app)) as client, Running(stuck), Running(fine):
            for outcome in records:
                stuck.submit(outcome)
            fine.submit(version(call_id, 1))
            fine.submit(version(call_id, 2, by=""))  # refused: a dead letter
            await until(lambda: stuck.stats.retries >= 2 and fine.backlog == 0)

            response = await client.get("/readyz")
            body = await response.json()
            assert response.status == 503
            assert (body["postgres"], body["redis"], body["ami"]) == (True, True, None)
            interactions = body["writers"]["interactions"]
            assert interactions["backlog"] == 3
            assert interactions["oldest_unwritten_s"] >= 3600
            since = datetime.fromisoformat(interactions["stuck_since"])
            assert abs(since.timestamp() - hour_ago) < 1
            assert body["writers"]["call-data-history"] == {
                "backlog": 0,
                "oldest_unwritten_s": 0.0,
                "stuck_since": None,
                "dead_letters_held": 0,
            }

            text = await (await client.get("/metrics")).text()
            assert 'cti_writer_backlog{writer="interactions"} 3.0' in text
            assert 'cti_writer_backlog{writer="call-data-history"} 0.0' in text
            assert 'cti_writer_written_total{writer="call-data-history"} 1.0' in text
            assert 'cti_writer_dead_lettered_total{writer="call-data-history"} 1.0' in text
            assert 'cti_writer_dropped_total{writer="interactions"} 0.0' in text
            assert 'cti_writer_dead_letters_held{writer="interactions"} 0.0' in text
            assert metric(text, "cti_writer_retries_total", "interactions") >= 2
            assert metric(text, "cti_writer_oldest_unwritten_seconds", "interactions") >= 3600

            proxy.set_mode("forward")  # PostgreSQL is back: the backlog drains
            await until(lambda: stuck.backlog == 0, within_s=20)
            response = await client.get("/readyz")
            assert response.status == 200
            assert (await response.json())["writers"]["interactions"]["stuck_since"] is None
            text = await (await client.get("/metrics")).text()
            assert 'cti_writer_written_total{writer="interactions"} 3.0' in text
            assert 'cti_writer_oldest_unwritten_seconds{writer="interactions"} 0.0' in text
    finally:
        await through.close()
    assert await db.fetchval("SELECT count(*) FROM interactions") == 3


def metric(text: str, name: str, writer: str) -> float:
    prefix = f'{name}{{writer="{writer}"}} '
    (line,) = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(line.removeprefix(prefix))


async def test_the_daemon_reports_its_writers(running, redis_client) -> None:
    """The composition root hands every writer's figures to /metrics and /readyz."""
    names = {stats.writer for stats in running.daemon.metrics.writers}
    assert {"interactions", "call-data", "call-data-history"} <= names
    result = await running.call(callerid="2120000001", dnid="5550100")
    assert result.var("CTI_ROUTE") == "queue"
    interactions = running.daemon.routing.interactions
    await until(lambda: interactions.stats.written == 1)
    assert (interactions.stats.backlog, interactions.stats.oldest_unwritten_at) == (0, None)


async def test_cti_db_dead_letters_lists_them(pool, db, database_url):
    bad = with_nul((await route_outcomes(pool, 1))[0])
    writer = writer_of("interactions", interaction_batch_writer(pool), PgDeadLetters(pool))
    async with Running(writer):
        writer.submit(bad)
        await until(lambda: writer.stats.dead_lettered == 1)
    env = {**os.environ, "CTI_DATABASE_URL": database_url, "CTI_LOG_FORMAT": "json"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cti", "db", "dead-letters", "--records",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert len(lines) == 3 and lines[-1] == "1 dead letter(s)"
    assert f"interactions  call {bad.call_id}  CharacterNotInRepertoireError: " in lines[0]
    assert '"channel": "PJSIP/ev\\\\u0000il"' in lines[1]
