"""The sidebar's WebSocket (cti.screenpop.ws) over real sockets, on real Redis Streams.

What must hold (issue 5): hello first, then the agent's events in stream order, each
once; a client that reconnects with ``after=`` the last id it saw gets exactly what it
missed; live events arrive; an edit's ``data_changed`` reaches every agent of the call;
a bad token, too many sockets or too big a frame are refused cleanly.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as redis
from aiohttp import WSMsgType

from cti.calls.events import CallEvent
from cti.calls.publisher import ALL_EVENTS_STREAM, agent_stream
from cti.screenpop.auth import Sessions
from cti.screenpop.context import WsLimits
from cti.screenpop.metrics import Metrics
from cti.screenpop.ws import reader_factory
from tests.conftest import REDIS_URL
from tests.fakes.tcp_proxy import TcpProxy
from tests.integration.test_screenpop_api import ALICE, BOB, SECRET, Stack, ringing, running_stack
from tests.waiting import until

QUIET_S = 0.3  # how long "nothing more arrives" is watched for
WAIT_S = 20  # how long a frame that must come may take on a loaded machine


#: Events are stamped from the test run's start: readers skip events hours old.
STARTED = time.time()


@pytest.fixture
async def stack(database_url: str, redis_client: redis.Redis) -> AsyncIterator[Stack]:
    async with running_stack(database_url, redis_client) as stack:
        yield stack


def event(call_id: str, endpoint: str, n: int, at: float | None = None) -> CallEvent:
    """A distinct event for ``endpoint`` (its order shows in ``data["n"]``)."""
    return CallEvent(
        kind="held",
        call_key=call_id,
        call_id=call_id,
        linkedid="1795410950.10",
        fingerprint=f"test|{n}|{uuid.uuid4().hex}",
        at=at if at is not None else STARTED + n,
        agent=endpoint,
        data={"n": n},
        recipients=(endpoint,),
    )


async def connect(
    stack: Stack, who: str, after: str | None = None, **params: str
) -> aiohttp.ClientWebSocketResponse:
    query = {"token": stack.tokens[who], **params}
    if after is not None:
        query["after"] = after
    return await stack.client.ws_connect("/ws", params=query, autoping=True)


async def frames(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(count):
        out.append(await ws.receive_json(timeout=WAIT_S))
    return out


async def nothing_more(ws: aiohttp.ClientWebSocketResponse) -> None:
    with pytest.raises(TimeoutError):
        await ws.receive(timeout=QUIET_S)


async def hello(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    first = await ws.receive_json(timeout=WAIT_S)
    assert first["type"] == "hello"
    return first


async def test_hello_then_the_retained_events_in_order_then_live_ones(stack: Stack) -> None:
    call_id = await stack.new_call(ALICE)  # the ringing
    await stack.publish(*(event(call_id, ALICE, n) for n in range(1, 4)))
    await stack.publish(event(call_id, BOB, 99))  # bob's: never on alice's socket
    ws = await connect(stack, "alice")
    greeting = await hello(ws)
    assert greeting == {
        "type": "hello",
        "agent": {
            "username": "alice",
            "display_name": "Alice",
            "endpoint": ALICE,
            "role": "agent",
        },
        "after": "0-0",
    }
    got = await frames(ws, 4)
    assert [f["type"] for f in got] == ["event"] * 4
    assert [f["event"]["event"] for f in got] == ["ringing", "held", "held", "held"]
    assert [f["event"].get("n") for f in got[1:]] == [1, 2, 3]
    assert got[0]["event"]["call_key"] == call_id and got[0]["event"]["agent"] == ALICE
    ids = [f["id"] for f in got]
    entries = await stack.redis.xrange(agent_stream(ALICE))
    assert ids == [entry_id.decode() for entry_id, _ in entries]
    await nothing_more(ws)
    await stack.publish(event(call_id, ALICE, 4))
    (live,) = await frames(ws, 1)
    assert live["event"]["n"] == 4
    await ws.close()


async def test_resuming_after_an_id_gives_exactly_the_missed_events(stack: Stack) -> None:
    call_id = await stack.new_call()
    await stack.publish(*(event(call_id, ALICE, n) for n in range(1, 4)))
    ws = await connect(stack, "alice")
    await hello(ws)
    seen = await frames(ws, 3)
    await ws.close()
    await stack.publish(*(event(call_id, ALICE, n) for n in range(4, 8)))

    ws = await connect(stack, "alice", after=seen[1]["id"])  # as if it missed the 3rd too
    assert (await hello(ws))["after"] == seen[1]["id"]
    missed = await frames(ws, 5)
    assert [f["event"]["n"] for f in missed] == [3, 4, 5, 6, 7]
    await nothing_more(ws)
    await stack.publish(event(call_id, ALICE, 8))
    assert [f["event"]["n"] for f in await frames(ws, 1)] == [8]
    await nothing_more(ws)
    await ws.close()

    ws = await connect(stack, "alice", after=missed[-1]["id"].split("-")[0] + "-999999")
    await hello(ws)
    assert [f["event"]["n"] for f in await frames(ws, 1)] == [8]  # an id between entries
    await ws.close()


async def test_a_long_backlog_arrives_whole_and_in_order(database_url, redis_client) -> None:
    """Catch-up reads in batches; the seams between batches lose and repeat nothing."""
    limits = WsLimits(batch=7, block_ms=300)
    async with running_stack(database_url, redis_client, ws_limits=limits) as stack:
        call_id = str(uuid.uuid4())
        await stack.publish(*(event(call_id, ALICE, n) for n in range(50)))
        ws = await connect(stack, "alice")
        await hello(ws)
        got = await frames(ws, 50)
        assert [f["event"]["n"] for f in got] == list(range(50))
        await nothing_more(ws)
        await ws.close()


async def test_live_events_keep_arriving_while_published_concurrently(stack: Stack) -> None:
    call_id = str(uuid.uuid4())
    ws = await connect(stack, "alice")
    await hello(ws)

    async def publish_all() -> None:
        for n in range(30):
            await stack.publish(event(call_id, ALICE, n))
            if n % 5 == 0:
                await asyncio.sleep(0.01)

    publishing = asyncio.create_task(publish_all())
    got = await frames(ws, 30)
    await publishing
    assert [f["event"]["n"] for f in got] == list(range(30))
    await nothing_more(ws)
    await ws.close()


async def test_an_edit_reaches_the_socket_of_every_agent_on_the_call(stack: Stack) -> None:
    call_id = await stack.new_call(ALICE, BOB)
    sockets = {}
    for who in ("alice", "bob"):
        sockets[who] = await connect(stack, who)
        await hello(sockets[who])
        (ring,) = await frames(sockets[who], 1)
        assert ring["event"]["event"] == "ringing"
    boss = await connect(stack, "boss")
    await hello(boss)
    assert [f["event"]["event"] for f in await frames(boss, 2)] == ["ringing", "ringing"]
    await stack.answer(call_id, ALICE)  # only who talked on a call may edit it
    for ws in (sockets["alice"], boss):
        (answered,) = await frames(ws, 1)
        assert answered["event"]["event"] == "connected"

    status, body = await stack.request(
        "PATCH", f"/api/calls/{call_id}", "alice", json={"version": 1, "change": {"note": "hi"}}
    )
    assert status == 200, body
    for ws in (*sockets.values(), boss):
        (changed,) = await frames(ws, 1)
        assert changed["event"]["event"] == "data_changed"
        assert changed["event"]["call_key"] == call_id and changed["event"]["version"] == 2
        assert changed["event"]["by"] == "alice"
        await ws.close()


async def test_a_supervisor_follows_every_event(stack: Stack) -> None:
    call_id = str(uuid.uuid4())
    await stack.publish(event(call_id, ALICE, 1), event(call_id, BOB, 2))
    ws = await connect(stack, "boss")
    await hello(ws)
    got = await frames(ws, 2)
    assert [f["event"]["n"] for f in got] == [1, 2]
    entries = await stack.redis.xrange(ALL_EVENTS_STREAM)
    assert [f["id"] for f in got] == [entry_id.decode() for entry_id, _ in entries]
    await ws.close()


async def test_a_fourth_socket_is_refused_and_the_others_go_on(stack: Stack) -> None:
    call_id = str(uuid.uuid4())
    first = [await connect(stack, "alice") for _ in range(3)]
    for ws in first:
        await hello(ws)
    fourth = await connect(stack, "alice")
    message = await fourth.receive(timeout=WAIT_S)
    assert message.type is WSMsgType.CLOSE and fourth.close_code == 4429
    other = await connect(stack, "bob")  # the limit is per agent
    await hello(other)
    await stack.publish(event(call_id, ALICE, 1))
    for ws in first:
        assert [f["event"]["n"] for f in await frames(ws, 1)] == [1]
    await first[0].close()
    await until(lambda: stack.metrics.websocket_clients._value.get() == 3)
    again = await connect(stack, "alice")
    await hello(again)
    assert [f["event"]["n"] for f in await frames(again, 1)] == [1]
    for ws in (*first[1:], again, other):
        await ws.close()
    await until(lambda: stack.metrics.websocket_clients._value.get() == 0)


async def test_bad_tokens_are_refused_before_the_upgrade(stack: Stack) -> None:
    expired, _ = Sessions(SECRET, 60, clock=lambda: 1_000_000.0).issue(
        username="alice", display_name="Alice", endpoint=ALICE, role="agent"
    )
    for params in ({}, {"token": ""}, {"token": "nonsense"}, {"token": expired}):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await stack.client.ws_connect("/ws", params=params)
        assert refused.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await stack.client.ws_connect("/ws", params={"token": stack.tokens["alice"], "after": "x"})
    assert refused.value.status == 400
    async with stack.client.get("/ws", params={"token": stack.tokens["alice"]}) as response:
        assert response.status == 400  # not an upgrade
    assert stack.metrics.websocket_clients._value.get() == 0


async def test_ping_pong_and_other_frames_are_ignored(stack: Stack) -> None:
    ws = await connect(stack, "alice")
    await hello(ws)
    await ws.send_str("not json")
    await ws.send_str('{"type": "subscribe", "to": "everything"}')
    await ws.send_bytes(b"\x00\x01")
    await ws.send_json({"type": "ping"})
    assert await ws.receive_json(timeout=WAIT_S) == {"type": "pong"}
    await nothing_more(ws)
    await ws.close()


async def test_a_frame_over_4_kb_closes_the_socket(stack: Stack) -> None:
    ws = await connect(stack, "alice")
    await hello(ws)
    await ws.send_str('{"type": "ping", "pad": "' + "x" * 5000 + '"}')
    message = await ws.receive(timeout=WAIT_S)
    assert message.type is WSMsgType.CLOSE
    assert ws.close_code == 1009
    await until(lambda: stack.metrics.websocket_clients._value.get() == 0)


async def test_the_socket_closes_when_the_token_expires(database_url, redis_client) -> None:
    """The sessions' clock stands still: however long logging in and connecting take,
    the token has half a second left when the socket opens, and then runs out."""
    now = [1_000_000.0]
    sessions = Sessions(SECRET, 60, clock=lambda: now[0])
    async with running_stack(database_url, redis_client, sessions=sessions) as stack:
        now[0] += 60 - 0.5  # the tokens were issued at 1_000_000 for 60 s
        ws = await connect(stack, "alice")
        await hello(ws)
        message = await ws.receive(timeout=WAIT_S)
        assert message.type is WSMsgType.CLOSE and ws.close_code == 4401


async def test_a_live_ringing_is_counted_as_a_pop(database_url, redis_client) -> None:
    """The metrics' clock stands still, so the pop's latency is what the event's stamp
    says (50 ms), however long the frame took on this machine."""
    now = time.time()
    metrics = Metrics(clock=lambda: now)
    async with running_stack(database_url, redis_client, metrics=metrics) as stack:
        await _live_ringing_is_counted_as_a_pop(stack, now)


async def _live_ringing_is_counted_as_a_pop(stack: Stack, now: float) -> None:
    call_id = str(uuid.uuid4())
    await stack.ring(call_id, ALICE, at=now - 100)  # old news: not a pop
    ws = await connect(stack, "alice")
    await hello(ws)
    await frames(ws, 1)
    await nothing_more(ws)
    await stack.publish(ringing(call_id, ALICE, at=now - 0.05))
    await frames(ws, 1)
    async with stack.client.get("/metrics") as response:
        text = await response.text()
    assert "cti_pops_total 1.0" in text
    assert "cti_pop_latency_seconds_count 1.0" in text
    assert 'cti_pop_latency_seconds_bucket{le="0.025"} 0.0' in text
    assert 'cti_pop_latency_seconds_bucket{le="1.0"} 1.0' in text
    assert "cti_websocket_clients 1.0" in text
    await ws.close()


async def test_a_redis_outage_pauses_the_feed_and_loses_nothing(database_url, redis_client) -> None:
    """The socket stays open while its reads fail; the cursor is kept, so what was
    published meanwhile arrives once Redis answers again."""
    proxy = await TcpProxy("127.0.0.1", 6379).start()
    through = redis.from_url(REDIS_URL.replace("127.0.0.1:6379", f"127.0.0.1:{proxy.port}"))
    options = {"open_reader": reader_factory(through, 300), "ws_limits": WsLimits(block_ms=300)}
    try:
        async with running_stack(database_url, redis_client, **options) as stack:
            call_id = str(uuid.uuid4())
            await stack.publish(event(call_id, ALICE, 1))
            ws = await connect(stack, "alice")
            await hello(ws)
            assert [f["event"]["n"] for f in await frames(ws, 1)] == [1]
            proxy.set_mode("refuse")
            await stack.publish(event(call_id, ALICE, 2), event(call_id, ALICE, 3))
            await nothing_more(ws)
            assert not ws.closed
            proxy.set_mode("forward")
            got = await frames(ws, 2)
            assert [f["event"]["n"] for f in got] == [2, 3]
            await nothing_more(ws)
            await ws.close()
    finally:
        await through.aclose()
        await proxy.close()


# -- retention: a resume point that is gone is said so, then the snapshot ------------------
async def test_a_resume_point_trimmed_away_gets_resync_then_the_snapshot(stack: Stack) -> None:
    """Alice saw the first events, went away; the stream was trimmed past what she saw
    (the retention): she is told so, then gets what a new tab gets, not a silent gap."""
    call_id = str(uuid.uuid4())
    await stack.publish(*(event(call_id, ALICE, n) for n in range(1, 4)))
    ws = await connect(stack, "alice")
    await hello(ws)
    seen = await frames(ws, 3)
    await ws.close()
    await stack.publish(*(event(call_id, ALICE, n) for n in range(4, 8)))
    entries = await stack.redis.xrange(agent_stream(ALICE))
    # Trim up to (and including) the 5th: n=4 and n=5 are lost to a client at n=3.
    await stack.redis.xtrim(agent_stream(ALICE), minid=entries[5][0], approximate=False)

    ws = await connect(stack, "alice", after=seen[-1]["id"])
    await hello(ws)
    resync, *snapshot = await frames(ws, 3)
    assert resync == {"type": "resync", "reason": "trimmed", "after": seen[-1]["id"]}
    assert [f["event"]["n"] for f in snapshot] == [6, 7]  # what the stream holds
    await nothing_more(ws)
    await stack.publish(event(call_id, ALICE, 8))
    assert [f["event"]["n"] for f in await frames(ws, 1)] == [8]
    await ws.close()
    async with stack.client.get("/metrics") as response:
        assert 'cti_websocket_resyncs_total{reason="trimmed"} 1.0' in await response.text()


async def test_a_resume_point_still_held_gets_the_missed_events_and_no_resync(
    stack: Stack,
) -> None:
    """Older entries were trimmed, but the client's id is still held: no resync."""
    call_id = str(uuid.uuid4())
    await stack.publish(*(event(call_id, ALICE, n) for n in range(1, 6)))
    entries = await stack.redis.xrange(agent_stream(ALICE))
    await stack.redis.xtrim(agent_stream(ALICE), minid=entries[2][0], approximate=False)
    after = entries[2][0].decode()  # n=3: still held; n=1, 2 are gone
    ws = await connect(stack, "alice", after=after)
    await hello(ws)
    assert [(f["type"], f["event"]["n"]) for f in await frames(ws, 2)] == [
        ("event", 4),
        ("event", 5),
    ]
    await nothing_more(ws)
    await ws.close()
    # The client's own last entry was trimmed too: whether anything after it was cannot
    # be told (Redis does not record what trimming removed), so it is resynchronised,
    # needlessly here but never skipped: the snapshot holds n=5.
    await stack.redis.xtrim(agent_stream(ALICE), minid=entries[4][0], approximate=False)
    ws = await connect(stack, "alice", after=entries[3][0].decode())
    await hello(ws)
    resync, snapshot = await frames(ws, 2)
    assert (resync["type"], snapshot["event"]["n"]) == ("resync", 5)
    await nothing_more(ws)
    await ws.close()


async def test_a_stream_that_redis_lost_gets_resync_reset(stack: Stack) -> None:
    """Redis restarted empty (here: the keys deleted) and the stream began again: a
    client's id from before is not in it. It is told so, then gets the new stream."""
    call_id = str(uuid.uuid4())
    await stack.publish(event(call_id, BOB, 1))
    ws = await connect(stack, "boss")
    await hello(ws)
    (seen,) = await frames(ws, 1)
    await ws.close()
    await stack.redis.delete(ALL_EVENTS_STREAM)
    ws = await connect(stack, "boss", after=seen["id"])
    await hello(ws)
    assert await frames(ws, 1) == [{"type": "resync", "reason": "reset", "after": seen["id"]}]
    await nothing_more(ws)
    await stack.publish(event(call_id, BOB, 2))
    assert [f["event"]["n"] for f in await frames(ws, 1)] == [2]
    await ws.close()

    await stack.redis.delete(ALL_EVENTS_STREAM)  # lost again, and events came since
    await stack.publish(event(call_id, BOB, 3))
    ws = await connect(stack, "boss", after=seen["id"])
    await hello(ws)
    resync, snapshot = await frames(ws, 2)
    assert resync["reason"] == "reset" and snapshot["event"]["n"] == 3
    await ws.close()


async def test_a_new_tab_gets_the_newest_entries_only(database_url, redis_client) -> None:
    """An hour of the supervisors' stream may be millions of entries: the snapshot a new
    tab (or a resynchronised one) gets is the newest ``snapshot_entries``."""
    limits = WsLimits(batch=4, snapshot_entries=5)
    async with running_stack(database_url, redis_client, ws_limits=limits) as stack:
        call_id = str(uuid.uuid4())
        await stack.publish(*(event(call_id, ALICE, n) for n in range(12)))
        ws = await connect(stack, "alice")
        assert (await hello(ws))["after"] == "0-0"
        assert [f["event"]["n"] for f in await frames(ws, 5)] == [7, 8, 9, 10, 11]
        await nothing_more(ws)
        await ws.close()
