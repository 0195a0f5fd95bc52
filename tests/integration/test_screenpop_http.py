"""The sidebar's HTTP server at its edges (cti.screenpop.security): every answer carries
the security headers, whatever produced it, and a request that cannot even be parsed
costs one log line, not a traceback, however many of them arrive."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import pytest
import redis.asyncio as redis
from aiohttp import web
from structlog.testing import capture_logs

from cti.screenpop.app import HttpServer
from cti.screenpop.security import ServerLog
from tests.conftest import REDIS_URL
from tests.integration.test_screenpop_api import running_stack
from tests.processes import free_port, json_log, killed_on_exit, stop
from tests.waiting import until

EXPECTED = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self';"
        " frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def test_every_kind_of_answer_carries_the_security_headers(
    database_url: str, redis_client: redis.Redis
) -> None:
    async with running_stack(database_url, redis_client) as stack:
        token = stack.tokens["alice"]
        answers = [
            ("GET", "/", {}, 200),
            ("GET", "/static/app.js", {}, 200),
            ("GET", "/static/missing.js", {}, 404),
            ("GET", "/nowhere", {}, 404),
            ("DELETE", "/", {}, 405),
            ("GET", "/healthz", {}, 200),
            ("GET", "/api/me", {}, 401),
            ("GET", "/api/me", {"headers": {"Authorization": f"Bearer {token}"}}, 200),
            ("POST", "/api/login", {"data": b"{not json"}, 400),
        ]
        for method, path, options, status in answers:
            async with stack.client.request(method, path, **options) as response:
                assert response.status == status, (method, path)
                for name, value in EXPECTED.items():
                    assert response.headers.get(name) == value, (method, path, name)
        socket_ = await stack.client.ws_connect("/ws", params={"token": token})
        try:
            handshake = socket_._response.headers  # the 101 Switching Protocols
            assert {name: handshake.get(name) for name in EXPECTED} == EXPECTED
        finally:
            await socket_.close()


#: Requests aiohttp cannot parse, each on a connection of its own.
MALFORMED = [
    b"GARBAGE\r\n\r\n",  # not a method (a first request: aiohttp's quieter case)
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",  # TLS on the HTTP port
    b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\n\r\n",  # request line past 8190 bytes
    b"POST /api/login HTTP/1.1\r\nContent-Length: x\r\n\r\n",
    b"GET /x\x1b[31m HTTP/1.1\r\n\x00\r\n\r\n",  # control characters
    b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n",  # good, then garbage
]


async def _send(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 15)  # the server closes after a 400
    finally:
        writer.close()


async def test_a_malformed_request_is_one_log_line_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The logging is the runner's (HttpServer), whatever the application."""
    server = HttpServer(web.Application())
    await server.start("127.0.0.1", 0)
    assert server.port is not None
    try:
        with capture_logs() as logs, caplog.at_level(logging.DEBUG):
            for payload in MALFORMED:
                answer = await _send(server.port, payload)
                assert b" 400 Bad Request\r\n" in answer, (payload, answer)
    finally:
        await server.stop()
    malformed = [line for line in logs if line["event"] == "http request malformed"]
    assert len(malformed) == len(MALFORMED), logs
    assert all(line["log_level"] == "warning" and "exc_info" not in line for line in malformed)
    assert all(line["remote"] == "127.0.0.1" and line["status"] == 400 for line in malformed)
    assert not any("\x1b" in line["reason"] or "\n" in line["reason"] for line in malformed)
    assert [r for r in caplog.records if r.name.startswith("aiohttp")] == []  # no tracebacks


async def test_cti_serve_writes_one_json_line_per_malformed_request(seeded, tmp_path) -> None:
    """The whole chain, as operators see it: ``cti serve``'s stderr, counted."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cti", "serve",
        stderr=asyncio.subprocess.PIPE,
        env={
            **os.environ, "CTI_DATABASE_URL": seeded, "CTI_REDIS_URL": REDIS_URL,
            "CTI_AGI_BIND": f"127.0.0.1:{free_port()}", "CTI_LOG_FORMAT": "json",
            "CTI_PLAN_CACHE": str(tmp_path / "plan.toml"), "CTI_HTTP_BIND": f"127.0.0.1:{port}",
            "CTI_SESSION_SECRET": "process-test-secret-not-a-real-one-0123456789",
        },
    )  # fmt: skip
    async with killed_on_exit(process):

        async def serving() -> bool:
            try:
                return b"200 OK" in await _send(port, b"GET /healthz HTTP/1.0\r\n\r\n")
            except OSError:
                return False

        await until(serving, within_s=20, every_s=0.1)
        for payload in MALFORMED:
            await _send(port, payload)
        stderr = await stop(process, within_s=15)
    assert process.returncode == 0
    lines = json_log(stderr)  # every line is JSON
    malformed = [line for line in lines if line["event"] == "http request malformed"]
    assert len(malformed) == len(MALFORMED)
    assert {line["level"] for line in malformed} == {"warning"}


def test_any_other_server_error_keeps_its_traceback() -> None:
    """Only the parser's refusals are shortened: a fault of the server itself is not."""
    fault = RuntimeError("a bug")
    with capture_logs() as logs:
        ServerLog().exception("Error handling request from %s", "127.0.0.1", exc_info=fault)
    assert logs == [
        {
            "event": "http server: Error handling request from 127.0.0.1",
            "log_level": "error",
            "exc_info": fault,
        }
    ]


async def test_a_wrong_method_says_which_methods_the_route_takes(
    database_url: str, redis_client: redis.Redis
) -> None:
    """405 is the JSON error, and keeps aiohttp's ``Allow`` (RFC 9110 requires it)."""
    async with running_stack(database_url, redis_client) as stack:
        for method, path, allowed in [
            ("TRACE", "/api/login", {"POST"}),
            ("DELETE", "/api/calls/x", {"GET", "HEAD", "PATCH"}),
            ("POST", "/healthz", {"GET", "HEAD"}),
        ]:
            async with stack.client.request(method, path) as response:
                assert response.status == 405
                assert await response.json() == {
                    "error": "method_not_allowed",
                    "message": "Method Not Allowed",
                }
                assert set(response.headers["Allow"].split(",")) == allowed


async def test_the_page_assets_are_served_by_name_and_anything_else_is_the_json_404(
    database_url: str, redis_client: redis.Redis
) -> None:
    async with running_stack(database_url, redis_client) as stack:
        async with stack.client.get("/static/app.js") as response:
            assert response.status == 200
            assert "javascript" in response.content_type
        for path in [
            "/static/missing.js",
            "/static/00",
            "/static/..%2Fapp.py",
            "/static/%2E%2E/app.py",
            "/static/%2Fetc%2Fpasswd",
            "/static/",
        ]:
            async with stack.client.get(path) as response:
                assert response.status == 404, path
                assert (await response.json())["error"] == "not_found", path
