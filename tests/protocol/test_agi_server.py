"""The FastAGI server over real sockets, against bad peers of every kind.

Each case ends the same way: that one connection is closed cleanly, nothing leaks, and
the next normal request is answered correctly.
"""

from __future__ import annotations

import asyncio
import resource

import pytest

from cti.agi.protocol import set_variable
from cti.agi.server import AgiLimits, AgiServer, AgiSession
from tests.fakes.asterisk_agi import agi_call, environment
from tests.waiting import until


async def _echo_script(session: AgiSession) -> None:
    """Sets two variables, like a short route."""
    await session.command(set_variable("CTI_QUEUE", "support"))
    if not session.hung_up:
        await session.command(set_variable("CTI_ROUTE", "queue"))


#: Deadlines short enough to watch them cut a peer off, long enough that a loaded machine
#: never cuts a normal call off by them.
DEADLINE_S = 2.0


@pytest.fixture
async def server():
    limits = AgiLimits(header_timeout_s=DEADLINE_S, reply_timeout_s=DEADLINE_S, max_connections=400)
    server = AgiServer({"route": _echo_script}, limits)
    await server.start("127.0.0.1", 0)
    yield server
    await server.close(grace_s=1)


async def _normal_call_works(server: AgiServer) -> None:
    result = await agi_call("127.0.0.1", server.port, callerid="2120000002", dnid="5550100")
    assert result.variables == {"CTI_QUEUE": "support", "CTI_ROUTE": "queue"}
    assert result.closed_by_server


async def _read_until_closed(reader: asyncio.StreamReader, within_s: float = 15) -> bytes:
    """What the server sent before closing. A reset counts as closed: the kernel sends
    RST instead of FIN when the server closes with our unread bytes still queued."""
    async with asyncio.timeout(within_s):
        try:
            return await reader.read()
        except ConnectionResetError:
            return b""


async def test_normal_request(server):
    await _normal_call_works(server)
    assert server.stats.by_close == {"ok": 1}


async def test_peer_that_disconnects_before_the_blank_line(server):
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(environment()[:200])  # part of the block, even mid-line
    await writer.drain()
    writer.close()
    await until(lambda: server.stats.by_close.get("peer-closed") == 1)
    assert server.stats.active == 0
    await _normal_call_works(server)


async def test_garbage_gets_a_clean_close(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: cti\r\n\r\n")
    assert await _read_until_closed(reader) == b""  # closed, nothing sent back
    writer.close()
    assert server.stats.bad_requests == 1
    await _normal_call_works(server)


@pytest.mark.parametrize("shape", ["one-line", "many-lines"])
async def test_a_one_megabyte_header_is_cut_off(server, shape):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    if shape == "one-line":
        payload = b"agi_callerid: " + b"9" * (1024 * 1024) + b"\n\n"
    else:
        payload = b"".join(b"agi_arg_%d: %s\n" % (i, b"x" * 1000) for i in range(1024)) + b"\n"

    async def send() -> None:
        try:
            writer.write(payload)
            await writer.drain()
        except ConnectionError:
            pass  # the server hung up on us mid-way: that is the point

    sender = asyncio.create_task(send())
    assert await _read_until_closed(reader) == b""
    await sender
    writer.close()
    assert server.stats.bad_requests == 1
    await _normal_call_works(server)


async def test_unknown_script_is_closed_without_commands(server):
    result = await agi_call("127.0.0.1", server.port, script="../../etc/passwd")
    assert result.closed_by_server and result.commands == []
    assert server.stats.unknown_scripts == 1
    await _normal_call_works(server)


async def test_hangup_in_the_middle_of_the_exchange(server):
    result = await agi_call("127.0.0.1", server.port, hangup_before_reply=1)
    # Asterisk wrote HANGUP and then the reply to the first command: the server must
    # read that reply as the reply (no off-by-one) and send nothing more.
    assert [c[2] for c in result.commands] == ["CTI_QUEUE"]
    assert result.closed_by_server
    assert server.stats.by_close == {"ok": 1}
    await _normal_call_works(server)


async def test_peer_that_never_answers_a_command(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(environment())
    await writer.drain()
    assert (await reader.readline()).startswith(b"SET VARIABLE")
    assert await _read_until_closed(reader) == b""  # reply timeout closes it
    writer.close()
    assert server.stats.by_close.get("session-lost") == 1
    await _normal_call_works(server)


async def test_slow_drip_header_is_cut_at_the_header_deadline(server):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    loop = asyncio.get_running_loop()
    started = loop.time()

    lines = environment().splitlines(keepends=True)[:-1]
    every_s = 0.5  # each line well inside the deadline: a per-line deadline never fires

    async def drip() -> None:
        for line in lines:
            writer.write(line)
            await writer.drain()
            await asyncio.sleep(every_s)

    dripper = asyncio.create_task(drip())
    assert await _read_until_closed(reader) == b""
    # The deadline is for the whole block: cut long before the drip could have ended.
    drip_s = every_s * len(lines)
    assert drip_s > 3 * DEADLINE_S
    assert loop.time() - started < drip_s / 2
    dripper.cancel()
    writer.close()
    await _normal_call_works(server)


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def test_hundreds_of_idle_connections():
    # A 5 s header deadline: long enough that a loaded machine opens all 300 before the
    # first expire, short enough to watch the server close them.
    server = AgiServer({"route": _echo_script}, AgiLimits(header_timeout_s=5))
    await server.start("127.0.0.1", 0)
    try:
        idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(300)]
        await until(lambda: server.stats.active == 300)
        await _normal_call_works(server)  # still served while they sit there
        # ... and the server closes them all at the header deadline.
        closed = await asyncio.gather(*(_read_until_closed(r, within_s=20) for r, _w in idle))
        assert closed == [b""] * 300
        for _r, writer in idle:
            writer.close()
        await until(lambda: server.stats.active == 0)
        assert server.stats.by_close.get("header-timeout") == 300
        await _normal_call_works(server)
    finally:
        await server.close(grace_s=1)


async def test_connections_over_the_limit_are_refused_not_queued():
    # Its own server: a long header deadline so the idle ones cannot expire while a
    # loaded machine is still opening them.
    limits = AgiLimits(header_timeout_s=30, reply_timeout_s=1, max_connections=50)
    server = AgiServer({"route": _echo_script}, limits)
    await server.start("127.0.0.1", 0)
    try:
        idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(50)]
        await until(lambda: server.stats.active == 50)
        try:  # reset at once (perhaps before the connect returns), not queued
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        except ConnectionResetError:
            pass
        else:
            assert await _read_until_closed(reader) == b""  # closed at once, not queued
            writer.close()
        assert server.stats.refused == 1
        for _r, w in idle:
            w.close()
        await until(lambda: server.stats.active == 0)
        await _normal_call_works(server)
    finally:
        await server.close(grace_s=1)


async def test_bad_peers_leave_cpu_and_memory_flat(server):
    """After thousands of bad connections the process neither grows nor keeps spinning."""

    async def bad_peer(i: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        kind = i % 4
        if kind == 0:
            writer.write(environment()[:100])  # then vanish
        elif kind == 1:
            writer.write(b"\x16\x03\x01 not agi\n")
        elif kind == 2:
            writer.write(environment(script="nope"))
        else:
            writer.write(environment())
            await reader.readline()
            writer.write(b"HANGUP\n200 result=1\n")
        await writer.drain()
        writer.close()

    for i in range(200):  # warm-up: allocator pools, code paths
        await bad_peer(i)
    await until(lambda: server.stats.active == 0)
    rss_before = _rss_kib()
    for batch in range(10):
        await asyncio.gather(*(bad_peer(batch * 200 + i) for i in range(200)))
    await until(lambda: server.stats.active == 0)
    grown_kib = _rss_kib() - rss_before
    assert grown_kib < 8 * 1024, f"RSS grew by {grown_kib} KiB over 2000 bad connections"
    assert not server._tasks  # every connection task is gone
    cpu_before = _cpu_s()
    await asyncio.sleep(1)
    assert _cpu_s() - cpu_before < 0.1  # idle means idle: no loop spinning on a dead peer
    await _normal_call_works(server)
