"""The sidebar's HTTP port at accept (cti.screenpop.connections): a request that never
completes is cut at the header deadline, an idle kept-alive connection at its timeout,
and the caps per address and over all refuse at accept, counted in ``/metrics``; with
``CTI_METRICS_BIND`` the figures move to a port of their own.

Short deadlines are configured here, and each test awaits the close with a generous
limit: what is checked is that the close comes, and not before its deadline.
Loopback aliases (127.0.0.2, ...) stand in for other hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from cti.app.service import daemon_service
from cti.calldata.service import CallDataService
from cti.calldata.store import CallDataStore
from cti.calls.publisher import EventPublisher
from cti.config import HostPort
from cti.screenpop.app import HttpServer, build_app
from cti.screenpop.auth import Sessions
from cti.screenpop.connections import HttpLimits
from cti.screenpop.health import metrics_app
from cti.screenpop.metrics import Metrics
from tests.integration.test_screenpop_api import PASSWORDS, SECRET, add_agents
from tests.processes import free_port
from tests.waiting import until

PARTIAL = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"  # and nothing more, ever
COMPLETE = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _slow(_request: web.Request) -> web.Response:
    await asyncio.sleep(1.5)  # longer than the header deadline: a handler is not cut
    return web.json_response({"status": "slow"})


@dataclasses.dataclass
class Port:
    server: HttpServer
    metrics: Metrics

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port


@contextlib.asynccontextmanager
async def _serving(
    limits: HttpLimits,
    routes: dict[str, Callable[[web.Request], Awaitable[web.Response]]] | None = None,
) -> AsyncIterator[Port]:
    metrics = Metrics()
    app = metrics_app(metrics)  # /metrics and /healthz, as on the metrics port
    app.router.add_get("/slow", _slow)
    for path, handler in (routes or {}).items():
        app.router.add_get(path, handler)
    server = HttpServer(app, limits)
    metrics.watch_http("sidebar", server.listener.source())
    await server.start("127.0.0.1", 0)
    try:
        yield Port(server, metrics)
    finally:
        await server.stop()


@pytest.fixture
async def short_deadlines() -> AsyncIterator[Port]:
    async with _serving(HttpLimits(header_timeout_s=0.5, keepalive_s=1.0)) as port:
        yield port


async def _closed_after(reader: asyncio.StreamReader) -> tuple[bytes, float]:
    """What the server still sent, and when it closed (monotonic), within 20 s."""
    data = await asyncio.wait_for(reader.read(), 20)
    return data, time.monotonic()


async def test_a_request_that_never_completes_is_closed_at_the_header_deadline(short_deadlines):
    http = short_deadlines
    with capture_logs() as logs:
        reader, writer = await asyncio.open_connection("127.0.0.1", http.port)
        sent = time.monotonic()
        writer.write(PARTIAL)
        data, closed = await _closed_after(reader)  # without the deadline: never (minutes)
        writer.close()
    assert data == b""  # nothing answered: no request arrived
    assert closed - sent >= 0.5 - 0.05  # not before its deadline (timer granularity)
    assert http.server.listener.header_timeouts == 1
    (line,) = [e for e in logs if "header deadline" in e["event"]]
    assert (line["peer"], line["closed"], line["log_level"]) == ("127.0.0.1", 1, "warning")
    await until(lambda: http.server.listener.admission.active == 0)  # the slot came back


async def test_a_connection_that_sends_nothing_is_closed_too(short_deadlines):
    reader, writer = await asyncio.open_connection("127.0.0.1", short_deadlines.port)
    data, _ = await _closed_after(reader)
    writer.close()
    assert data == b""
    assert short_deadlines.server.listener.header_timeouts == 1


async def test_an_idle_kept_alive_connection_is_closed_after_its_timeout(short_deadlines):
    http = short_deadlines
    reader, writer = await asyncio.open_connection("127.0.0.1", http.port)
    writer.write(COMPLETE)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
    answered = time.monotonic()
    assert head.startswith(b"HTTP/1.1 200 OK")
    length = int(
        next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[
            1
        ]
    )
    await reader.readexactly(length)
    data, closed = await _closed_after(reader)  # kept alive, idle: closed at keepalive_s
    writer.close()
    assert data == b""
    assert closed - answered >= 1.0 - 0.05
    assert http.server.listener.header_timeouts == 0  # a request arrived: not that deadline


async def test_a_handler_that_takes_longer_than_the_header_deadline_is_not_cut(short_deadlines):
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"http://127.0.0.1:{short_deadlines.port}/slow") as response,
    ):
        assert (response.status, await response.json()) == (200, {"status": "slow"})
    assert short_deadlines.server.listener.header_timeouts == 0


async def _held(port: int, source: str) -> asyncio.StreamWriter:
    _reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    return writer


async def _refused(port: int, source: str) -> bool:
    """Reset or closed at accept, before a byte is answered (the reset can arrive before
    our connect has returned)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    except ConnectionResetError:
        return True
    try:
        writer.write(COMPLETE)
        return await asyncio.wait_for(reader.read(), 20) == b""
    except ConnectionResetError:
        return True
    finally:
        writer.close()


def _sample(text: str, name: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.rsplit(" ", 1)[1])


async def _scrape(port: int) -> str:
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        assert response.status == 200
        return await response.text()


async def test_the_caps_refuse_at_accept_and_are_counted_in_metrics():
    """Beyond its address's cap a connection is refused; at the global cap it is refused
    only when no connection is idle (every one has a request in flight)."""
    limits = HttpLimits(header_timeout_s=30, max_per_address=2, max_connections=2)
    hold = asyncio.Event()

    async def _hold(_request: web.Request) -> web.Response:
        await hold.wait()
        return web.json_response({"status": "held"})

    async with _serving(limits, {"/hold": _hold}) as http:
        admission = http.server.listener.admission
        url = f"http://127.0.0.1:{http.port}/hold"
        with capture_logs() as logs:
            held = [await _held(http.port, "127.0.0.1"), await _held(http.port, "127.0.0.1")]
            await until(lambda: admission.active == 2)
            assert await _refused(http.port, "127.0.0.1")  # a third from one address
            for writer in held:
                writer.close()
            await until(lambda: admission.active == 0)
            async with aiohttp.ClientSession() as client:
                busy = [asyncio.create_task(client.get(url)) for _ in range(2)]
                listener = http.server.listener
                await until(lambda: admission.active == 2 and not listener.idle_connections())
                assert await _refused(http.port, "127.0.0.3")  # nothing idle to close
                hold.set()
                for response in await asyncio.gather(*busy):
                    assert response.status == 200
                    response.release()
            assert admission.refused == {"not_allowed": 0, "per_address": 1, "global": 1}
            await until(lambda: admission.active == 0)
        text = await _scrape(http.port)  # a slot is free again
        assert _sample(text, 'cti_http_refused_total{port="sidebar",reason="per_address"}') == 1
        assert _sample(text, 'cti_http_refused_total{port="sidebar",reason="global"}') == 1
        assert _sample(text, 'cti_http_header_timeouts_total{port="sidebar"}') == 0
        assert _sample(text, 'cti_http_evicted_total{port="sidebar"}') == 0
        lines = [e for e in logs if e["event"] == "http sidebar connections refused"]
        assert [(e["peer"], e["reason"]) for e in lines] == [
            ("127.0.0.1", "per_address"),
            ("127.0.0.3", "global"),
        ]


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), 20) == b""
    except ConnectionResetError:
        return True


async def test_at_the_global_cap_an_idle_connection_makes_room_for_a_new_client():
    """An idle flood from two addresses, each under its own cap, fills the global cap:
    the next client is not refused; the longest idle connection of the address holding
    the most is closed instead, counted and logged."""
    limits = HttpLimits(header_timeout_s=30, max_per_address=4, max_connections=6)
    async with _serving(limits) as http:
        admission = http.server.listener.admission
        with capture_logs() as logs:
            flood = []
            for n, source in enumerate(["127.0.0.2"] * 4 + ["127.0.0.3"] * 2, start=1):
                flood.append(
                    await asyncio.open_connection("127.0.0.1", http.port, local_addr=(source, 0))
                )
                await until(lambda n=n: admission.active == n)  # type: ignore[misc]
            flood[0][1].write(PARTIAL)  # waiting for the rest of its headers: idle too
            flood[4][1].write(PARTIAL)
            async with (
                aiohttp.ClientSession() as agent,
                agent.get(f"http://127.0.0.1:{http.port}/healthz") as response,
            ):
                assert (response.status, await response.json()) == (200, {"status": "ok"})
                assert admission.active == 6
            # 127.0.0.2 held the most: its longest idle connection was closed.
            assert await _closed_by_server(flood[0][0])
            assert http.server.listener.evicted == 1
            await until(lambda: admission.active == 5)  # the agent's connection closed
            flood.append(
                await asyncio.open_connection("127.0.0.1", http.port, local_addr=("127.0.0.3", 0))
            )
            await until(lambda: admission.active == 6)  # three idle from each address
            # Another from the flood holds as many idle as any: it displaces nobody.
            assert await _refused(http.port, "127.0.0.2")
            for _, writer in flood:
                writer.close()
            await until(lambda: admission.active == 0)
        assert admission.refused["global"] == 1
        text = await _scrape(http.port)
        assert _sample(text, 'cti_http_evicted_total{port="sidebar"}') == 1
        lines = [e for e in logs if e["event"] == "http sidebar connections refused"]
        # The refusal from 127.0.0.2 has a line of its own only a second after the first.
        assert (lines[0]["peer"], lines[0]["reason"], lines[0]["refused"]) == (
            "127.0.0.2",
            "evicted",
            1,
        )
        assert [(e["peer"], e["reason"]) for e in lines[1:]] in ([], [("127.0.0.2", "global")])


async def _status(port: int, path: str) -> int:
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status


async def test_metrics_bind_moves_metrics_to_a_port_of_its_own(config, redis_client):
    metrics_port = free_port()
    config = dataclasses.replace(
        config,
        http_enabled=True,
        session_secret="s" * 48,
        http_bind=HostPort("127.0.0.1", 0),
        metrics_bind=HostPort("127.0.0.1", metrics_port),
    )
    daemon = daemon_service(config)
    await daemon.start()
    try:
        assert daemon.http is not None and daemon.http.port is not None
        assert await _status(daemon.http.port, "/metrics") == 404  # not on the sidebar's port
        assert await _status(daemon.http.port, "/healthz") == 200
        text = await _scrape(metrics_port)
        assert "cti_route_decision_seconds" in text and "cti_agi_refused_total" in text
        assert _sample(text, 'cti_http_connections{port="sidebar"}') == 0
        assert _sample(text, "cti_password_checks_in_queue") == 0
        assert await _status(metrics_port, "/healthz") == 200
    finally:
        await daemon.shutdown(writer_grace_s=2)


async def test_routing_alone_serves_metrics_on_its_own_port(config, redis_client):
    """No sidebar in this process (routing and sidebar apart): its figures still are."""
    metrics_port = free_port()
    config = dataclasses.replace(config, metrics_bind=HostPort("127.0.0.1", metrics_port))
    daemon = daemon_service(config)
    await daemon.start()
    try:
        assert daemon.http is None
        text = await _scrape(metrics_port)
        assert "cti_writer_backlog" in text
        assert _sample(text, 'cti_http_connections{port="metrics"}') == 1  # this scrape
        async with (
            aiohttp.ClientSession() as client,
            client.get(f"http://127.0.0.1:{metrics_port}/readyz") as response,
        ):
            ready = await response.json()
        assert (response.status, ready["postgres"], ready["redis"]) == (200, True, True)
        assert set(ready["writers"]) >= {"interactions", "call-data"}
    finally:
        await daemon.shutdown(writer_grace_s=2)


async def test_an_agent_logs_in_while_idle_connections_fill_the_cap(database_url, redis_client):
    """The sidebar itself behind the admission: an idle flood at the global cap, and the
    agent's login (a POST with a password check) is answered 200 at the first attempt."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    try:
        await add_agents(pool)
        app = build_app(
            pool=pool,
            redis_client=redis_client,
            call_data=CallDataService(
                CallDataStore(redis_client, 3600, pool=pool),
                EventPublisher(redis_client, ttl_s=3600),
            ),
            sessions=Sessions(SECRET, 3600),
        )
        server = HttpServer(app, HttpLimits(header_timeout_s=30, max_connections=8))
        await server.start("127.0.0.1", 0)
        try:
            admission = server.listener.admission
            flood = []
            for n in range(1, 9):
                source = f"127.0.0.{2 + n % 2}"
                flood.append(
                    await asyncio.open_connection("127.0.0.1", server.port, local_addr=(source, 0))
                )
                await until(lambda n=n: admission.active == n)  # type: ignore[misc]
            async with (
                aiohttp.ClientSession() as agent,
                agent.post(
                    f"http://127.0.0.1:{server.port}/api/login",
                    json={"username": "bob", "password": PASSWORDS["bob"]},
                ) as response,
            ):
                assert response.status == 200, await response.text()
            assert server.listener.evicted == 1 and admission.refused["global"] == 0
            for _, writer in flood:
                writer.close()
        finally:
            await server.stop()
    finally:
        await pool.close()
