"""The API's error answers and request bodies, as docs/screenpop-api.md has them.

Every error is ``{"error": <code>, "message": <what to do about it>}`` (plus, for some,
the field or the current document). Handlers raise :class:`ApiError`; the middleware
here turns it, aiohttp's own HTTP errors (unknown route, wrong method, body too large)
and an unreachable PostgreSQL or Redis into that shape, so no handler builds an error
response itself and no stack trace ever reaches a client.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import structlog
from aiohttp import web
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)

#: Every request body is at most this (the contract's 64 KB).
MAX_BODY_BYTES = 64 * 1024

_HTTP_CODES = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.message, **self.extra)


def error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": code, "message": message, **extra}, status=status)


def invalid(field: str, message: str) -> ApiError:
    return ApiError(400, "invalid", f"{field}: {message}", field=field)


def too_large(limit: int = MAX_BODY_BYTES) -> ApiError:
    return ApiError(413, "too_large", f"request body: at most {limit // 1024} KB")


async def read_json_object(request: web.Request, limit: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The request body as a JSON object, or :class:`ApiError` 413 / 400.

    The application's ``client_max_size`` is the same limit (build_app), so a chunked
    body with no length is cut off while it is read, not after."""
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large(limit) from None
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise invalid("body", "not valid JSON") from None
    if not isinstance(body, dict):
        raise invalid("body", "must be a JSON object")
    return body


def only_fields(body: dict[str, Any], allowed: set[str]) -> None:
    """Refuse unknown fields: a typo must not be silently ignored."""
    for key in body:
        if key not in allowed:
            raise invalid(str(key)[:64], "unknown field; allowed: " + ", ".join(sorted(allowed)))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return too_large().response()  # also for routes that never read their body
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason if exc.status != 413 else too_large().message
        return error_response(exc.status, code, message)
    except TimeoutError:  # before OSError, of which it is one
        log.warning("request timed out", path=request.path)
        return error_response(503, "unavailable", "timed out; try again shortly")
    except (RedisError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        log.warning("request failed: a store is unavailable", path=request.path, error=repr(exc))
        return error_response(
            503, "unavailable", "PostgreSQL or Redis is not answering; try again shortly"
        )
    except Exception:
        log.exception("request failed", path=request.path)
        return error_response(500, "internal", "internal error; it has been logged")
