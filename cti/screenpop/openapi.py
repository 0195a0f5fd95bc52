"""The sidebar's HTTP API as an OpenAPI 3.1 document, served at ``GET /api/openapi.json``.

Built in Python rather than kept as a JSON file so that every limit in it is the
constant the code enforces (body size, field lengths, the call data rules, the
transfer target's pattern): the document cannot drift from a limit that changes.
tests/integration/test_openapi.py fails when a route exists that the document lacks (or
the reverse) and when docs/screenpop-api.md does not mention a path;
tests/hostile/test_api_fuzz.py fuzzes the live app against it (schemathesis).

Patterns are written for both dialects that read them: ECMA-262 (JSON Schema's) and
Python's ``re`` (the server's and the fuzzer's); ``$`` is anchored to the end because
JSON Schema validators and our fuzzing read it that way, and the server uses
``fullmatch``/``\\Z``.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from aiohttp import web

from cti.calldata import document as calldata
from cti.reports import rows as report_rows
from cti.reports.intervals import INTERVALS
from cti.screenpop import openapi_supervision
from cti.screenpop.errors import MAX_BODY_BYTES
from cti.screenpop.openapi_schemas import Schema, ref, schemas
from cti.screenpop.openapi_schemas import error as _error
from cti.screenpop.openapi_schemas import json_response as _json
from cti.screenpop.openapi_schemas import request_body as _body

PATH = "/api/openapi.json"


_UNAUTHORIZED = _error(
    "No token, or a malformed, forged, expired or revoked one: log in again.", "unauthorized"
)
_RETRY_AFTER = {
    "description": "Whole seconds to wait before trying again.",
    "schema": {"type": "integer", "minimum": 1},
}
_TOO_LARGE = _error(f"The body is over {MAX_BODY_BYTES // 1024} KB.", "too_large")
_UNAVAILABLE = _error("PostgreSQL or Redis is not answering; try again shortly.", "unavailable")
_INVALID_BODY = _error("The body is not a JSON object of the documented shape.", "invalid")
_NOT_YOURS = _error(
    "Not the caller's call (to an agent also: no such call, so ids cannot be probed).",
    "forbidden",
)
_CALL_ID = {
    "name": "call_id",
    "in": "path",
    "required": True,
    "description": "The call's key: the route's call id (a UUID) or `L:<linkedid>`.",
    "schema": {"type": "string", "minLength": 1},
}


def _query(name: str, description: str, schema: Schema, required: bool = False) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


_MOMENT = {"type": "string", "minLength": 10, "maxLength": 40}
_REPORT: Schema = {
    "operationId": "report",
    "summary": "A report: queues, tiers, rules, dnis, services, agents, or the calls list"
    " (supervisors only; docs/reports.md defines every column).",
    "security": [{"bearer": []}],
    "parameters": [
        {
            "name": "kind",
            "in": "path",
            "required": True,
            "description": "What each row is about.",
            "schema": {"enum": list(report_rows.KINDS)},
        },
        _query("from", "A date or ISO time in the centre's zone.", _MOMENT, required=True),
        _query("to", "A date (included) or a time (excluded).", _MOMENT, required=True),
        _query("interval", "The rows' interval.", {"enum": list(INTERVALS), "default": "30m"}),
        _query(
            "queue",
            "Only these queues (repeat the parameter).",
            {
                "type": "array",
                "items": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"},
                "maxItems": 50,
            },
        ),
        _query("format", "JSON, or a CSV download.", {"enum": ["json", "csv"], "default": "json"}),
    ],
    "responses": {
        "200": {
            "description": "The rows (CSV: the same columns, a header line first).",
            "content": {
                "application/json": {"schema": ref("Report")},
                "text/csv": {"schema": {"type": "string"}},
            },
        },
        "400": _error("A parameter cannot be used (the field says which).", "invalid"),
        "401": _UNAUTHORIZED,
        "403": _error("The caller is not a supervisor.", "forbidden"),
        "503": _UNAVAILABLE,
    },
}


#: The handshake's headers (RFC 6455 §4.1), as far as OpenAPI can say it: without them
#: the request is a plain GET and is refused 400.
_UPGRADE = [
    {"name": name, "in": "header", "required": True, "schema": schema}
    for name, schema in (
        ("Upgrade", {"enum": ["websocket"]}),
        ("Connection", {"enum": ["Upgrade"]}),
        ("Sec-WebSocket-Version", {"enum": ["13"]}),
        ("Sec-WebSocket-Key", {"type": "string", "pattern": "^[A-Za-z0-9+/]{21}[AQgw]==$"}),
    )
]


def _control_responses() -> Schema:
    """What a call control action answers (cti.calls.control's errors)."""
    return {
        "202": _json(ref("Empty"), "Asterisk accepted the action."),
        "400": _error("The target or the agent's device is malformed.", "invalid"),
        "401": _UNAUTHORIZED,
        "403": _NOT_YOURS,
        "404": _error("No live call by that key (to a supervisor).", "unknown_call"),
        "409": _error("The agent is not talking on that call.", "not_on_call"),
        "502": _error("Asterisk refused the action.", "refused"),
        "503": _error(
            "No AMI connection here, or PostgreSQL or Redis is not answering.",
            "ami_unavailable",
            "unavailable",
        ),
    }


def _operations() -> dict[str, Schema]:
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "/api/login": {
            "post": {
                "operationId": "login",
                "summary": "Log in: a signed token for the agent.",
                "security": [],
                "requestBody": _body(ref("LoginRequest"), "The agent's credentials."),
                "responses": {
                    "200": _json(ref("Login"), "The token and who it speaks for."),
                    "400": _INVALID_BODY,
                    "401": _error(
                        "Wrong user name or password (the same answer for both).",
                        "bad_credentials",
                    ),
                    "413": _TOO_LARGE,
                    "429": {
                        **_error(
                            "Too many failed logins for this user name or from this address:"
                            " nothing was checked; wait Retry-After seconds.",
                            "too_many_attempts",
                        ),
                        "headers": {"Retry-After": _RETRY_AFTER},
                    },
                    "503": {
                        **_error(
                            "Too many logins at once (busy: retry after Retry-After seconds),"
                            " or PostgreSQL or Redis is not answering.",
                            "busy",
                            "unavailable",
                        ),
                        "headers": {"Retry-After": _RETRY_AFTER},
                    },
                },
            }
        },
        "/api/logout": {
            "post": {
                "operationId": "logout",
                "summary": "End every session of the agent: all their tokens are revoked.",
                "security": bearer,
                "responses": {
                    "200": _json(ref("Empty"), "Logged out everywhere."),
                    "401": _UNAUTHORIZED,
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/api/me": {
            "get": {
                "operationId": "me",
                "summary": "Who the token speaks for, and the calls they are on now.",
                "security": bearer,
                "responses": {
                    "200": _json(ref("Me"), "The agent and their current call keys."),
                    "401": _UNAUTHORIZED,
                },
            }
        },
        "/api/calls/{call_id}": {
            "parameters": [_CALL_ID],
            "get": {
                "operationId": "getCall",
                "summary": "A call's data, the customer's recent calls and its timeline.",
                "security": bearer,
                "responses": {
                    "200": _json(ref("CallView"), "The call."),
                    "401": _UNAUTHORIZED,
                    "403": _NOT_YOURS,
                    "404": _error("No such call (to a supervisor).", "unknown_call"),
                    "503": _UNAVAILABLE,
                },
            },
            "patch": {
                "operationId": "patchCall",
                "summary": "Edit the call's data, against the version read.",
                "security": bearer,
                "requestBody": _body(ref("CallEdit"), "The edit."),
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["call"],
                            "properties": {"call": ref("CallData")},
                        },
                        "The new document.",
                    ),
                    "400": _INVALID_BODY,
                    "401": _UNAUTHORIZED,
                    "403": _NOT_YOURS,
                    "404": _error(
                        "No such call (to a supervisor), or a call with no call data.",
                        "unknown_call",
                    ),
                    "409": _json(
                        ref("StaleVersion"),
                        "The edit was made against an older version: merge and retry.",
                    ),
                    "413": _error(
                        "The body, a field, or the resulting document is over its limit "
                        f"(the document: {calldata.MAX_DOCUMENT_BYTES // 1024} KB).",
                        "too_large",
                    ),
                    "503": _UNAVAILABLE,
                },
            },
        },
        "/api/calls/{call_id}/transfer": {
            "parameters": [_CALL_ID],
            "post": {
                "operationId": "transfer",
                "summary": "Transfer the caller (blind) or consult the target (attended).",
                "security": bearer,
                "requestBody": _body(ref("Transfer"), "Where to."),
                "responses": {**_control_responses(), "413": _TOO_LARGE},
            },
        },
        "/api/calls/{call_id}/transfer/complete": {
            "parameters": [_CALL_ID],
            "post": {
                "operationId": "completeTransfer",
                "summary": "Complete an attended transfer (the agent's leg hangs up).",
                "security": bearer,
                "responses": _control_responses(),
            },
        },
        "/api/calls/{call_id}/transfer/cancel": {
            "parameters": [_CALL_ID],
            "post": {
                "operationId": "cancelTransfer",
                "summary": "Cancel an attended transfer (back to the caller).",
                "security": bearer,
                "responses": _control_responses(),
            },
        },
        "/api/calls/{call_id}/hangup": {
            "parameters": [_CALL_ID],
            "post": {
                "operationId": "hangup",
                "summary": "Hang up the agent's leg of the call.",
                "security": bearer,
                "responses": _control_responses(),
            },
        },
        "/api/agent/pause": {
            "post": {
                "operationId": "pause",
                "summary": "Pause or unpause the agent in every queue (AMI QueuePause).",
                "security": bearer,
                "requestBody": _body(ref("Pause"), "Paused or not, and why."),
                "responses": {
                    "200": _json(ref("Paused"), "Asterisk accepted it."),
                    "400": _INVALID_BODY,
                    "401": _UNAUTHORIZED,
                    "413": _TOO_LARGE,
                    "422": openapi_supervision.NOT_IN_PLAN,
                    "502": _error("Asterisk refused it.", "refused"),
                    "503": _error("No AMI connection here.", "ami_unavailable"),
                },
            }
        },
        "/api/supervisor/agents": {
            "get": {
                "operationId": "supervisorAgents",
                "summary": "Every agent and what they are doing now (supervisors only).",
                "security": bearer,
                "responses": {
                    "200": _json(ref("AgentList"), "The agents."),
                    "401": _UNAUTHORIZED,
                    "403": _error("The caller is not a supervisor.", "forbidden"),
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/api/wallboard": {
            "get": {
                "operationId": "wallboard",
                "summary": "The wallboard's figures as of the last frame (supervisors only).",
                "security": bearer,
                "responses": {
                    "200": _json(ref("Wallboard"), "Every queue's and agent's figures."),
                    "401": _UNAUTHORIZED,
                    "403": _error("The caller is not a supervisor.", "forbidden"),
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/ws/wallboard": {
            "get": {
                "operationId": "wallboardSocket",
                "summary": "The wallboard's frames over a WebSocket (supervisors only).",
                "description": (
                    "A WebSocket upgrade: a snapshot frame, then one frame per change "
                    "(docs/screenpop-api.md, 'The wallboard')."
                ),
                "security": [{"queryToken": []}],
                "parameters": list(_UPGRADE),
                "responses": {
                    "101": {"description": "Switched to the WebSocket protocol."},
                    "400": _error("The request is not a WebSocket upgrade.", "invalid"),
                    "401": _UNAUTHORIZED,
                    "403": _error("The caller is not a supervisor.", "forbidden"),
                },
            }
        },
        "/wallboard": {
            "get": {
                "operationId": "wallboardPage",
                "summary": "The wallboard page (its figures need a supervisor's sign-in).",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The page.",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    },
                    "404": _error("The page is not installed.", "not_found"),
                },
            }
        },
        **openapi_supervision.operations(),
        "/api/reports/{kind}": {"get": _REPORT},
        PATH: {
            "get": {
                "operationId": "openapi",
                "summary": "This document.",
                "security": [],
                "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")},
            }
        },
        "/ws": {
            "get": {
                "operationId": "websocket",
                "summary": "The agent's call events over a WebSocket (docs/screenpop-api.md).",
                "description": (
                    "A WebSocket upgrade; frames are described in docs/screenpop-api.md "
                    "(OpenAPI cannot). The token is a query parameter because browsers "
                    "cannot set headers on a WebSocket."
                ),
                "security": [{"queryToken": []}],
                "parameters": [
                    *_UPGRADE,
                    {
                        "name": "after",
                        "in": "query",
                        "required": False,
                        "description": "The last stream id the client saw.",
                        "schema": {"type": "string", "pattern": "^[0-9]{1,20}(-[0-9]{1,20})?$"},
                    },
                ],
                "responses": {
                    "101": {"description": "Switched to the WebSocket protocol."},
                    "400": _error(
                        "`after` is malformed, or the request is not a WebSocket upgrade.",
                        "invalid",
                    ),
                    "401": _UNAUTHORIZED,
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "The process serves.",
                "security": [],
                "responses": {"200": _json(ref("Health"), "Serving.")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "PostgreSQL, Redis (and AMI, and the record writers) answer.",
                "security": [],
                "responses": {
                    "200": _json(ref("Readiness"), "Ready."),
                    "503": _json(ref("Readiness"), "Not ready: the body says what is not."),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (on their own port if CTI_METRICS_BIND is set).",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The Prometheus text format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/": {
            "get": {
                "operationId": "page",
                "summary": "The sidebar page.",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The page.",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    },
                    "404": _error("The page is not installed.", "not_found"),
                },
            }
        },
        "/static/{filename}": {
            "get": {
                "operationId": "asset",
                "summary": "The page's scripts and styles.",
                "security": [],
                "parameters": [
                    {
                        "name": "filename",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The file.",
                        "content": {"*/*": {"schema": {"type": "string"}}},
                    },
                    "403": _error("Outside the static folder.", "forbidden"),
                    "404": _error("No such file.", "not_found"),
                },
            }
        },
    }


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once; treat it as read-only)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "cti sidebar API",
            "version": "1",
            "description": (
                "The agent sidebar's HTTP API (docs/screenpop-api.md has the prose). "
                'Every refusal is `{"error": <code>, "message": <text>}`, sometimes with '
                "`field`; an unknown route is 404 `not_found`, a wrong method 405 "
                "`method_not_allowed` (with `Allow`)."
            ),
        },
        "security": [{"bearer": []}],
        "paths": _operations(),
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "POST /api/login"},
                "queryToken": {"type": "apiKey", "in": "query", "name": "token"},
            },
            "schemas": {**schemas(), **openapi_supervision.schemas()},
        },
    }


@functools.cache
def _serialized() -> bytes:
    return json.dumps(document(), separators=(",", ":")).encode()


async def serve(_request: web.Request) -> web.Response:
    return web.Response(body=_serialized(), content_type="application/json")


def add_routes(app: web.Application) -> None:
    app.router.add_get(PATH, serve)
