"""The named schemas of the sidebar's OpenAPI document (:mod:`cti.screenpop.openapi`),
with the patterns and the ``$ref`` helper that the operations share.

Kept apart so that each module reads in one sitting; every limit is still the constant
the code enforces.
"""

from __future__ import annotations

from typing import Any

from cti.calldata import document as calldata
from cti.calls.control import MAX_PAUSE_REASON_CHARS, TARGET
from cti.screenpop import api
from cti.screenpop.auth import MAX_PASSWORD_CHARS
from cti.screenpop.errors import MAX_BODY_BYTES

Schema = dict[str, Any]

_UUID = "^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
#: Text with no control character (cti.text's rule: C0, DEL, C1).
NO_CONTROL = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
#: Free text: the same, but newline and tab are allowed (cti.calldata.document).
_FREE_TEXT = "^[^\\u0000-\\u0008\\u000b-\\u001f\\u007f-\\u009f]*$"


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def json_response(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error(description: str, *codes: str) -> Schema:
    """A refusal: the error body, its ``error`` one of ``codes``."""
    schema = {"allOf": [ref("Error"), {"properties": {"error": {"enum": list(codes)}}}]}
    return json_response(schema, description)


def request_body(schema: Schema, description: str) -> Schema:
    return {
        "required": True,
        "description": f"{description} At most {MAX_BODY_BYTES // 1024} KB (413 too_large).",
        "content": {"application/json": {"schema": schema}},
    }


def schemas() -> dict[str, Schema]:
    """The named schemas (``components.schemas``) that the operations refer to."""
    string = {"type": "string"}
    agent = {
        "type": "object",
        "required": ["username", "display_name", "endpoint", "role"],
        "properties": {
            "username": string,
            "display_name": string,
            "endpoint": string,
            "role": {"enum": ["agent", "supervisor"]},
        },
    }
    attribute_value = {
        "type": ["string", "null"],
        "maxLength": calldata.MAX_ATTRIBUTE_VALUE_CHARS,
        "pattern": _FREE_TEXT,
    }
    return {
        "Error": {
            "type": "object",
            "description": "Every refusal: a code to act on and a message for people.",
            "required": ["error", "message"],
            "properties": {
                "error": {"type": "string", "pattern": "^[a-z_]+$"},
                "message": string,
                "field": {"type": ["string", "null"], "description": "The field at fault."},
            },
        },
        "StaleVersion": {
            "allOf": [
                ref("Error"),
                {
                    "required": ["current"],
                    "properties": {
                        "error": {"const": "stale_version"},
                        "current": ref("CallData"),
                    },
                },
            ]
        },
        "Empty": {"type": "object", "maxProperties": 0},
        "Agent": agent,
        "LoginRequest": {
            "type": "object",
            "required": ["username", "password"],
            "additionalProperties": False,
            "properties": {
                "username": {"type": "string", "maxLength": api.MAX_USERNAME_CHARS},
                "password": {"type": "string", "maxLength": MAX_PASSWORD_CHARS},
            },
        },
        "Login": {
            "type": "object",
            "required": ["token", "expires_at", "agent"],
            "properties": {
                "token": string,
                "expires_at": {"type": "string", "format": "date-time"},
                "agent": ref("Agent"),
            },
        },
        "Me": {
            "type": "object",
            "required": ["agent", "calls"],
            "properties": {
                "agent": ref("Agent"),
                "calls": {"type": "array", "items": string},
                "agent_state": {
                    "description": (
                        "The agent's state as the AMI leader keeps it (cti.agents), null"
                        " when unknown: the same object as an agent_state event carries."
                    ),
                    "oneOf": [ref("AgentState"), {"type": "null"}],
                },
                "partial": {"const": True, "description": "Redis did not answer."},
            },
        },
        "AgentState": {
            "type": "object",
            "required": ["agent", "state", "since", "memberships"],
            "properties": {
                "agent": string,
                "state": {
                    "enum": [
                        "logged_out",
                        "available",
                        "ringing",
                        "on_call",
                        "on_hold",
                        "wrap_up",
                        "paused",
                    ]
                },
                "reason": {"type": ["string", "null"]},
                "since": {"type": "number"},
                "call_id": {"type": ["string", "null"]},
                "queue": {"type": ["string", "null"]},
                "wrapup_until": {
                    "type": ["number", "null"],
                    "description": "When cti ends the pending wrap-up (epoch seconds).",
                },
                "memberships": {"type": "array", "items": {"type": "object"}},
            },
        },
        "CallData": {
            "type": "object",
            "description": "The call's attached data (cti/calldata/document.py).",
            "required": ["call_id", "version"],
            "properties": {
                "call_id": {"type": "string", "pattern": _UUID},
                "version": {"type": "integer", "minimum": 1},
            },
        },
        "CallView": {
            "type": "object",
            "required": ["call", "recent", "timeline"],
            "properties": {
                "call": {"oneOf": [ref("CallData"), {"type": "null"}]},
                "recent": {"type": "array", "items": {"type": "object"}},
                "timeline": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["kind", "at"],
                        "properties": {"kind": string, "at": string},
                    },
                },
                "partial": {"const": True, "description": "PostgreSQL did not answer."},
            },
        },
        "CallEdit": {
            "type": "object",
            "required": ["version", "change"],
            "additionalProperties": False,
            "properties": {
                "version": {"type": "integer", "minimum": 1},
                "change": {
                    "type": "object",
                    "minProperties": 1,
                    "additionalProperties": False,
                    "properties": {
                        "note": {
                            "type": "string",
                            "maxLength": calldata.MAX_NOTE_CHARS,
                            "pattern": _FREE_TEXT,
                        },
                        "disposition": {
                            "type": ["string", "null"],
                            "maxLength": calldata.MAX_DISPOSITION_CHARS,
                            "pattern": calldata.DISPOSITION.pattern.replace("\\Z", "$"),
                        },
                        "tags": {
                            "type": "array",
                            "maxItems": calldata.MAX_TAGS,
                            "uniqueItems": True,
                            "items": {
                                "type": "string",
                                "maxLength": calldata.MAX_TAG_CHARS,
                                "pattern": calldata.TAG.pattern.replace("\\Z", "$"),
                            },
                        },
                        "attributes": {
                            "type": "object",
                            "description": (
                                f"null removes a key; at most {calldata.MAX_ATTRIBUTES} keys "
                                "once merged (413 too_large)."
                            ),
                            "propertyNames": {
                                "maxLength": calldata.MAX_ATTRIBUTE_KEY_CHARS,
                                "pattern": calldata.ATTRIBUTE_KEY.pattern.replace("\\Z", "$"),
                            },
                            "additionalProperties": attribute_value,
                        },
                    },
                },
            },
        },
        "Transfer": {
            "type": "object",
            "required": ["kind", "target"],
            "additionalProperties": False,
            "properties": {
                "kind": {"enum": ["blind", "attended"]},
                "target": {"type": "string", "pattern": f"^{TARGET.pattern}$"},
            },
        },
        "Pause": {
            "type": "object",
            "required": ["paused"],
            "additionalProperties": False,
            "properties": {
                "paused": {"type": "boolean"},
                "reason": {
                    "type": ["string", "null"],
                    "description": "To pause: one of the plan's pause reasons "
                    "(GET /api/pause-reasons); another is 400 invalid.",
                    "maxLength": MAX_PAUSE_REASON_CHARS,
                    "pattern": NO_CONTROL,
                },
            },
        },
        "Paused": {
            "type": "object",
            "required": ["paused"],
            "properties": {"paused": {"type": "boolean"}},
        },
        "Report": {
            "type": "object",
            "required": ["kind", "timezone", "rows"],
            "properties": {
                "kind": string,
                "timezone": string,
                "definitions": {
                    "type": "object",
                    "description": "Each figure's formula in words (not for agents, calls).",
                    "additionalProperties": string,
                },
                "rows": {
                    "type": "array",
                    "description": "One object per row; columns in docs/reports.md.",
                    "items": {"type": "object"},
                },
            },
        },
        "AgentList": {
            "type": "object",
            "required": ["agents"],
            "properties": {
                "agents": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["username", "display_name", "endpoint", "state"],
                        "properties": {
                            "username": string,
                            "display_name": string,
                            "endpoint": string,
                            "state": {"enum": ["on_call", "ringing", "idle", "unknown"]},
                            "call_key": string,
                        },
                    },
                }
            },
        },
        "Wallboard": {
            "type": "object",
            "description": (
                "Every figure as of the leader's last frame (docs/screenpop-api.md, "
                "'The wallboard'); `seq` 0 and no queues before the first."
            ),
            "required": ["seq", "formula", "queues", "agents"],
            "properties": {
                "seq": {"type": "integer", "minimum": 0},
                "at": {"type": ["number", "null"]},
                "day": {"type": "string", "description": "The centre's date (ISO)."},
                "timezone": string,
                "formula": string,
                "queues": {"type": "object", "additionalProperties": ref("Queue")},
                "agents": {
                    "type": "object",
                    "additionalProperties": ref("WallboardAgent"),
                },
            },
        },
        "Queue": {
            "type": "object",
            "required": ["waiting", "oldest_wait_since", "agents", "today", "rolling_30m"],
            "properties": {
                "waiting": {"type": "integer"},
                "oldest_wait_since": {
                    "type": ["number", "null"],
                    "description": "When the longest-waiting caller queued (epoch s).",
                },
                "agents": {"type": "object", "additionalProperties": {"type": "integer"}},
                "paused_by_reason": {
                    "type": "object",
                    "additionalProperties": {"type": "integer"},
                },
                "today": ref("Period"),
                "rolling_30m": ref("Period"),
                "sl_threshold_s": {"type": "number"},
                "short_abandon_s": {"type": "number"},
                "tiers": {"type": "object", "additionalProperties": ref("Group")},
                "rules": {"type": "object", "additionalProperties": ref("Group")},
            },
        },
        "Period": {
            "type": "object",
            "properties": {
                "offered": {"type": "integer"},
                "answered": {"type": "integer"},
                "answered_within": {"type": "integer"},
                "abandoned": {"type": "integer"},
                "short_abandoned": {"type": "integer"},
                "service_level": {"type": ["number", "null"]},
                "asa_s": {"type": ["number", "null"]},
                "abandon_rate": {"type": ["number", "null"]},
            },
        },
        "Group": {
            "type": "object",
            "properties": {
                "waiting": {"type": "integer"},
                "waited_today": {"type": "integer"},
                "avg_wait_s": {"type": ["number", "null"]},
            },
        },
        "WallboardAgent": {
            "type": "object",
            "properties": {
                "pbx": {
                    "type": ["string", "null"],
                    "description": "The PBX the agent's device is on (CTI_PBXES; "
                    "'default' without it).",
                },
                "state": {"type": ["string", "null"]},
                "reason": {"type": ["string", "null"]},
                "since": {"type": ["number", "null"]},
                "max_minutes": {"type": ["number", "null"]},
                "pause_over_max": {"type": "boolean"},
                "queues": {"type": "array", "items": string},
                "call": {"type": ["object", "null"]},
                "handled_today": {"type": "integer"},
            },
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"const": "ok"}},
        },
        "Readiness": {
            "type": "object",
            "required": ["postgres", "redis", "ami"],
            "properties": {
                "postgres": {"type": "boolean"},
                "redis": {"type": "boolean"},
                "ami": {
                    "type": ["boolean", "null"],
                    "description": "null: AMI is off here; false: some PBX's AMI is down.",
                },
                "pbxes": {
                    "type": "object",
                    "additionalProperties": {"type": "boolean"},
                    "description": "Each PBX's AMI by name (up: true).",
                },
                "ami_down": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "The PBXes whose AMI is down (503 only when all are).",
                },
                "writers": {"type": "object", "additionalProperties": {"type": "object"}},
            },
        },
    }
