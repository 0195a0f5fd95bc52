"""The API's error answers and request bodies, as docs/screenpop-api.md has them.

Every error is ``{"error": <code>, "message": <what to do about it>}`` (plus, for some,
the field or the current document). Handlers, and the features they call, raise
:class:`cti.errors.DomainError`; the middleware here gives it its HTTP status from the
one map of codes to statuses (:data:`STATUS`) and turns it, aiohttp's own HTTP errors
(unknown route, wrong method, body too large) and an unreachable PostgreSQL or Redis
into that shape, so no handler builds an error response or picks a status itself and no
stack trace ever reaches a client.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import structlog
from aiohttp import web
from redis.exceptions import RedisError

from cti.errors import DomainError, ErrorCode

log = structlog.get_logger(__name__)

#: Every request body is at most this (the contract's 64 KB).
MAX_BODY_BYTES = 64 * 1024

#: The HTTP status of every error code (docs/screenpop-api.md).
STATUS: dict[ErrorCode, int] = {
    "invalid": 400,
    "unauthorized": 401,
    "bad_credentials": 401,
    "forbidden": 403,
    "unknown_call": 404,
    "unknown_agent": 404,
    "not_in_plan": 422,
    "stale_version": 409,
    "not_on_call": 409,
    "other_pbx": 409,
    "too_large": 413,
    "refused": 502,
    "ami_unavailable": 503,
    "too_many_attempts": 429,
    "busy": 503,
}

#: aiohttp's own refusals (no route, wrong method, ...), in the API's words.
_HTTP_CODES = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}


def domain_error_response(error: DomainError) -> web.Response:
    status = STATUS.get(error.code)
    if status is None:  # a code added to ErrorCode but not here (tests/unit check)
        log.error("error code without an HTTP status", code=error.code)
        status = 500
    body = error.as_json()
    if body["field"] is None:  # the API names a field only where there is one
        del body["field"]
    response = web.json_response(body, status=status)
    if error.retry_after_s is not None:
        # Whole seconds, rounded up: HTTP has no finer unit, and early is refused again.
        response.headers["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
    return response


def error_response(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def invalid(field: str, message: str) -> DomainError:
    return DomainError("invalid", f"{field}: {message}", field)


def too_large(limit: int = MAX_BODY_BYTES) -> DomainError:
    return DomainError("too_large", f"request body: at most {limit // 1024} KB")


async def read_json_object(request: web.Request, limit: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The request body as a JSON object, or ``too_large`` / ``invalid``.

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
        return domain_error_response(too_large())  # also for routes that never read their body
    try:
        return await handler(request)
    except DomainError as exc:
        return domain_error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason if exc.status != 413 else too_large().message
        response = error_response(exc.status, code, message)
        if "Allow" in exc.headers:  # a 405 must say which methods the route takes (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
        return response
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
