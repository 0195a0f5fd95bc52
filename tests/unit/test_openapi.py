"""The OpenAPI document (cti.screenpop.openapi) against the app's router and the prose.

The document is only worth having if it is complete: every route the app serves is in
it and nothing else, and docs/screenpop-api.md (the prose agents' developers read)
names every path. The live behaviour against the document is
tests/hostile/test_api_fuzz.py's business.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, cast

import redis.asyncio as redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from cti.calldata.service import CallDataService
from cti.screenpop import errors, openapi
from cti.screenpop.app import build_app
from cti.screenpop.auth import Sessions

DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenpop-api.md"
METHODS = {"get", "put", "post", "patch", "delete", "head", "options", "trace"}


def _app() -> web.Application:
    """The app as served, for its router only: nothing here connects to a store."""
    client = redis.from_url("redis://127.0.0.1:1/0")  # never used: no request reaches it
    return build_app(
        pool=cast(Any, None),
        redis_client=client,
        call_data=cast(CallDataService, None),
        sessions=Sessions(b"x" * 32, 60),
    )


def routed(app: web.Application) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every route; HEAD goes with GET (aiohttp adds it)."""
    out = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info["formatter"]
        if route.method != "HEAD":
            out.add((route.method.lower(), path))
    return out


def documented() -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, item in openapi.document()["paths"].items()
        for method in item
        if method in METHODS
    }


def test_every_route_is_documented_and_every_documented_operation_routed() -> None:
    app = _app()
    assert routed(app) - documented() == set(), "routes missing from the OpenAPI document"
    assert documented() - routed(app) == set(), "documented operations the app does not serve"


def test_the_prose_names_every_documented_path() -> None:
    text = DOCS.read_text()
    missing = [
        path
        for path in openapi.document()["paths"]
        if not re.search(r"(?<![\w/{}.-])" + re.escape(path) + r"(?![\w/{}.-])", text)
    ]
    assert missing == [], f"docs/screenpop-api.md does not mention {missing}"


def test_every_refusal_is_the_error_body() -> None:
    """Every 4xx/5xx documented is the one error shape (code and message)."""
    for path, item in openapi.document()["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            for status, response in operation["responses"].items():
                if int(status) < 400 or path == "/readyz":
                    continue
                schema = response["content"]["application/json"]["schema"]
                assert re.search(r"/(Error|StaleVersion)'", str(schema)), (method, path, status)


async def test_the_document_is_served() -> None:
    client = TestClient(TestServer(_app()))
    await client.start_server()
    try:
        async with client.get(openapi.PATH) as response:
            assert response.status == 200
            assert response.content_type == "application/json"
            assert await response.json() == openapi.document()
    finally:
        await client.close()


def test_every_documented_code_has_the_status_the_error_map_gives_it() -> None:
    """The document's refusals agree with the one code → status map (errors.STATUS) and
    the middleware's own codes (no route, wrong method, a store away)."""
    own = {"not_found": 404, "method_not_allowed": 405, "unavailable": 503}
    for path, item in openapi.document()["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            for status, response in operation["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                for part in (schema or {}).get("allOf", []):
                    for code in part.get("properties", {}).get("error", {}).get("enum", []):
                        expected = errors.STATUS.get(code) or own.get(code)
                        assert expected == int(status), (method, path, status, code)
