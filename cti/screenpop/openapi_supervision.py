"""The supervisor's routes and the pause reasons in the OpenAPI document
(:mod:`cti.screenpop.openapi`), with their schemas: :mod:`cti.screenpop.supervision_api`
is what they describe."""

from __future__ import annotations

from cti.agents.audit import ACTIONS
from cti.agents.supervision import SPY_MODES
from cti.routing.plan import NAME
from cti.screenpop import supervision_api as api
from cti.screenpop.openapi_schemas import (
    NO_CONTROL,
    Schema,
    error,
    json_response,
    ref,
    request_body,
)

_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_UNAUTHORIZED = error("No token, or a bad or revoked one: log in again.", "unauthorized")
_NOT_SUPERVISOR = error("The caller is not a supervisor.", "forbidden")
_TOO_LARGE = error("The body is over its limit.", "too_large")
#: A well-formed reason or queue that the routing plan does not have.
NOT_IN_PLAN = error(
    "The reason or queue is not the routing plan's (GET /api/supervisor/plan).", "not_in_plan"
)
_QUEUE_NAME = NAME.pattern.replace("\\Z", "$")
_USERNAME = {
    "name": "username",
    "in": "path",
    "required": True,
    "description": "The agent acted on (their user name).",
    "schema": {"type": "string", "minLength": 1},
}


def _action_responses(ok: Schema) -> Schema:
    """What a supervisor's action answers (cti.agents.supervision's errors)."""
    return {
        **ok,
        "400": error("Malformed (the message names the field).", "invalid"),
        "401": _UNAUTHORIZED,
        "403": _NOT_SUPERVISOR,
        "404": error("No agent of that user name.", "unknown_agent"),
        "413": _TOO_LARGE,
        "422": NOT_IN_PLAN,
        "502": error("Asterisk refused the action.", "refused"),
        "503": error(
            "No AMI connection here, or PostgreSQL or Redis is not answering.",
            "ami_unavailable",
            "unavailable",
        ),
    }


def operations() -> dict[str, Schema]:
    return {
        "/api/pause-reasons": {
            "get": {
                "operationId": "pauseReasons",
                "summary": "The routing plan's pause reasons (the sidebar's Pause button).",
                "security": _BEARER,
                "responses": {
                    "200": json_response(ref("PauseReasons"), "The reasons, in plan order."),
                    "401": _UNAUTHORIZED,
                },
            }
        },
        "/api/supervisor/agents/{username}/pause": {
            "parameters": [_USERNAME],
            "post": {
                "operationId": "supervisorPause",
                "summary": "Pause (with a plan reason) or unpause an agent (AMI QueuePause).",
                "security": _BEARER,
                "requestBody": request_body(ref("SupervisorPause"), "Paused or not, and why."),
                "responses": _action_responses(
                    {"200": json_response(ref("Paused"), "Asterisk accepted it.")}
                ),
            },
        },
        "/api/supervisor/agents/{username}/queue": {
            "parameters": [_USERNAME],
            "post": {
                "operationId": "supervisorQueue",
                "summary": "Log an agent in to or out of a queue (AMI QueueAdd / QueueRemove).",
                "security": _BEARER,
                "requestBody": request_body(ref("QueueMembership"), "Which queue, in or out."),
                "responses": _action_responses(
                    {"200": json_response(ref("QueueMembership"), "Asterisk accepted it.")}
                ),
            },
        },
        "/api/supervisor/agents/{username}/spy": {
            "parameters": [_USERNAME],
            "post": {
                "operationId": "supervisorSpy",
                "summary": "Listen, whisper or barge: the supervisor's phone rings into "
                "ChanSpy on the agent's call (AMI Originate).",
                "security": _BEARER,
                "requestBody": request_body(ref("Spy"), "How to join."),
                "responses": {
                    **_action_responses(
                        {"202": json_response(ref("Spying"), "The supervisor's phone rings.")}
                    ),
                    "409": error(
                        "The agent is on no call (not_on_call), or on another PBX than "
                        "the supervisor's phone (other_pbx: ChanSpy spies on one "
                        "Asterisk's channels only).",
                        "not_on_call",
                        "other_pbx",
                    ),
                },
            },
        },
        "/api/supervisor/plan": {
            "get": {
                "operationId": "supervisorPlan",
                "summary": "The routing plan's queues and pause reasons (what actions name).",
                "security": _BEARER,
                "responses": {
                    "200": json_response(ref("SupervisorPlan"), "The queues and reasons."),
                    "401": _UNAUTHORIZED,
                    "403": _NOT_SUPERVISOR,
                },
            }
        },
        "/api/supervisor/audit": {
            "get": {
                "operationId": "supervisorAudit",
                "summary": "The supervisors' recent actions, newest first.",
                "security": _BEARER,
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": api.MAX_AUDIT_ROWS,
                            "default": api.DEFAULT_AUDIT_ROWS,
                        },
                    },
                    {
                        "name": "agent",
                        "in": "query",
                        "required": False,
                        "description": "Only the actions on this agent (a user name).",
                        "schema": {"type": "string", "pattern": "^[a-z0-9._-]{1,64}$"},
                    },
                ],
                "responses": {
                    "200": json_response(ref("AuditList"), "The actions."),
                    "400": error(
                        "`limit` or `agent` is malformed, or another parameter is given.",
                        "invalid",
                    ),
                    "401": _UNAUTHORIZED,
                    "403": _NOT_SUPERVISOR,
                    "503": error("PostgreSQL is not answering.", "unavailable"),
                },
            }
        },
    }


def schemas() -> dict[str, Schema]:
    string = {"type": "string"}
    optional = {"type": ["string", "null"]}
    reasons = {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["name", "productive", "max_minutes"],
            "properties": {
                "name": string,
                "productive": {"type": "boolean"},
                "max_minutes": {"type": ["integer", "null"]},
            },
        },
    }
    return {
        "PauseReasons": {
            "type": "object",
            "required": ["pause_reasons"],
            "properties": {"pause_reasons": reasons},
        },
        "SupervisorPlan": {
            "type": "object",
            "required": ["queues", "pause_reasons"],
            "properties": {
                "queues": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "description"],
                        "properties": {"name": string, "description": string},
                    },
                },
                "pause_reasons": reasons,
            },
        },
        "SupervisorPause": {
            "type": "object",
            "required": ["paused"],
            "additionalProperties": False,
            "properties": {
                "paused": {"type": "boolean"},
                "reason": {
                    **optional,
                    "minLength": 1,
                    "maxLength": api.MAX_REASON_CHARS,
                    "pattern": NO_CONTROL,
                    "description": "Required to pause: one of the plan's pause reasons "
                    "(another is 422 not_in_plan).",
                },
                "queue": {
                    **optional,
                    "maxLength": api.MAX_QUEUE_CHARS,
                    "pattern": _QUEUE_NAME,
                    "description": "One queue of the plan; absent: every queue.",
                },
            },
        },
        "QueueMembership": {
            "type": "object",
            "required": ["queue", "logged_in"],
            "additionalProperties": False,
            "properties": {
                "queue": {**string, "maxLength": api.MAX_QUEUE_CHARS, "pattern": _QUEUE_NAME},
                "logged_in": {"type": "boolean"},
            },
        },
        "Spy": {
            "type": "object",
            "required": ["mode"],
            "additionalProperties": False,
            "properties": {"mode": {"enum": list(SPY_MODES)}},
        },
        "Spying": {
            "type": "object",
            "required": ["mode", "call_key"],
            "properties": {"mode": {"enum": list(SPY_MODES)}, "call_key": string},
        },
        "AuditList": {
            "type": "object",
            "required": ["entries"],
            "properties": {
                "entries": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": [
                            "id",
                            "at",
                            "supervisor",
                            "action",
                            "target_agent",
                            "queue",
                            "reason",
                            "call_id",
                            "device",
                            "result",
                        ],
                        "properties": {
                            "id": {"type": "integer"},
                            "at": {**string, "format": "date-time"},
                            "supervisor": string,
                            "action": {"enum": list(ACTIONS)},
                            "target_agent": string,
                            "queue": optional,
                            "reason": optional,
                            "call_id": optional,
                            "device": {
                                **optional,
                                "description": "the agent's device as cti names it "
                                "(PJSIP/2001@b on PBX b): which Asterisk the action went "
                                "to; null on rows older than that.",
                            },
                            "result": {
                                **string,
                                "description": "ok, pending (outcome never learnt) "
                                "or the refusal's error code.",
                            },
                        },
                    },
                }
            },
        },
    }
