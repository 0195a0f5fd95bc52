"""FastAGI admission over real sockets: who is refused at accept, and how loudly.

Loopback aliases stand in for other hosts (Linux routes all of 127.0.0.0/8 to lo):
clients bind to 127.0.0.2 to be a peer the allow list does not name.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from structlog.testing import capture_logs

from cti.agi.protocol import set_variable
from cti.agi.server import AgiLimits, AgiServer, AgiSession
from cti.net.admission import parse_networks
from tests.fakes.asterisk_agi import agi_call, environment
from tests.waiting import until

OTHER = ("127.0.0.2", 0)


async def _script(session: AgiSession) -> None:
    await session.command(set_variable("CTI_ROUTE", "queue"))


async def _server(**limits: object) -> AgiServer:
    server = AgiServer(
        {"route": _script}, AgiLimits(header_timeout_s=30, reply_timeout_s=2, **limits)
    )
    await server.start("127.0.0.1", 0)
    return server


async def _closed_without_a_word(port: int, local_addr=OTHER, send: bytes = b"") -> bool:
    """Refused: reset (SO_LINGER 0, so no TIME_WAIT) or closed, before a byte is sent
    back. The reset can arrive before our connect has even returned."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=local_addr)
    except ConnectionResetError:
        return True
    try:
        if send:
            writer.write(send)
            await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read() == b""
    except ConnectionResetError:
        return True
    finally:
        writer.close()


async def test_a_peer_outside_the_allow_list_is_refused_at_accept():
    server = await _server(allow=parse_networks("127.0.0.1/32"))
    try:
        assert await _closed_without_a_word(server.port, send=environment())
        assert server.admission.refused == {"not_allowed": 1, "per_address": 0, "global": 0}
        assert server.stats.by_close == {}  # no request was read, no script ran
        allowed = await agi_call("127.0.0.1", server.port)
        assert allowed.variables == {"CTI_ROUTE": "queue"}
        assert await _closed_without_a_word(server.port)  # and not at all, still
        assert server.admission.refused["not_allowed"] == 2
    finally:
        await server.close(grace_s=1)


async def test_one_address_cannot_hold_more_than_its_share():
    server = await _server(max_per_address=3)
    try:
        idle = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
        await until(lambda: server.admission.sessions_from("127.0.0.1") == 3)
        assert await _closed_without_a_word(server.port, local_addr=("127.0.0.1", 0))
        assert server.admission.refused["per_address"] == 1
        # Another address still gets in, and so does this one once a slot is free.
        assert (await agi_call("127.0.0.1", server.port, local_addr=OTHER)).variables
        idle[0][1].close()
        await until(lambda: server.admission.sessions_from("127.0.0.1") == 2)
        assert (await agi_call("127.0.0.1", server.port)).variables == {"CTI_ROUTE": "queue"}
        for _reader, writer in idle[1:]:
            writer.close()
        await until(lambda: server.admission.active == 0)
    finally:
        await server.close(grace_s=1)


@pytest.mark.parametrize("n", [300])
async def test_refusals_are_logged_at_most_once_a_second_per_address(n):
    server = await _server(allow=parse_networks("127.0.0.1/32"))
    try:
        with capture_logs() as logs:
            started = time.monotonic()
            for _ in range(n):
                assert await _closed_without_a_word(server.port, send=b"agi_network: yes\n")
            elapsed = time.monotonic() - started
        lines = [e for e in logs if e["event"] == "agi connections refused"]
        assert lines, logs
        assert len(lines) <= elapsed + 1, f"{len(lines)} lines in {elapsed:.1f}s"
        assert {(e["peer"], e["reason"]) for e in lines} == {("127.0.0.2", "not_allowed")}
        assert lines[0]["refused"] == 1
        assert sum(e["refused"] for e in lines) <= n
        assert server.admission.refused["not_allowed"] == n
        assert len(logs) == len(lines)  # and no other line per connection
    finally:
        await server.close(grace_s=1)
