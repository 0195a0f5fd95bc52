"""The supervisor's actions over real HTTP, against a fake Asterisk at the AMI socket and
the audit table in real PostgreSQL (issue 11).

What must hold: each action is exactly the AMI action Asterisk needs (QueuePause's
Interface/Paused/Reason/Queue, QueueAdd/QueueRemove, an Originate of the supervisor's
phone into ChanSpy with the agent's leg and the mode's options); every one is in the
audit table with its result, refusals included; a refusal sends nothing; an agent gets
403 for every route and leaves no trace; an action that cannot be recorded is not sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as redis

from cti.calls.control import CallControl
from tests.fakes.ami_server import FakeAmi
from tests.integration.test_screenpop_api import (
    BOB,
    BOSS,
    Stack,
    ami_on_a_call,
    running_stack,
)

AUDIT_COLUMNS = "supervisor, action, target_agent, queue, reason, call_id, result"


@pytest.fixture
async def supervised(
    database_url: str, redis_client: redis.Redis
) -> AsyncIterator[tuple[Stack, FakeAmi, str, str]]:
    """A stack on a fake Asterisk where alice (2001) talks on a recorded call:
    (stack, fake, the call's id, alice's leg)."""
    async with ami_on_a_call() as (fake, ami, sink, connected):
        control = CallControl(ami, sink.model)
        async with running_stack(database_url, redis_client, control=control, ami=ami) as stack:
            yield stack, fake, connected.call_id, connected.channel


async def audit_rows(stack: Stack) -> list[tuple[Any, ...]]:
    rows = await stack.pool.fetch(f"SELECT {AUDIT_COLUMNS} FROM supervisor_audit ORDER BY id")
    return [tuple(row) for row in rows]


def fields(action: Any, *names: str) -> tuple[str | None, ...]:
    return tuple(action.get(name) for name in names)


async def test_a_supervisor_pauses_and_unpauses_an_agent_with_a_plan_reason(supervised) -> None:
    stack, fake, _call_id, _leg = supervised
    fake.responses["QueuePause"] = {"Message": "Interface paused successfully"}
    status, answer = await stack.request(
        "POST", "/api/supervisor/agents/bob/pause", "boss", json={"paused": True, "reason": "lunch"}
    )
    assert (status, answer) == (200, {"paused": True})
    status, answer = await stack.request(
        "POST",
        "/api/supervisor/agents/bob/pause",
        "boss",
        json={"paused": False, "queue": "sales"},
    )
    assert (status, answer) == (200, {"paused": False})
    pause, unpause = fake.actions("QueuePause")
    names = ("Interface", "Paused", "Reason", "Queue")
    assert fields(pause, *names) == (BOB, "true", "lunch", None)  # no queue: every queue
    assert fields(unpause, *names) == (BOB, "false", None, "sales")
    assert await audit_rows(stack) == [
        ("boss", "pause", "bob", None, "lunch", None, "ok"),
        ("boss", "unpause", "bob", "sales", None, None, "ok"),
    ]


NOT_IN_PLAN = (422, "not_in_plan")
INVALID = (400, "invalid")


@pytest.mark.parametrize(
    ("body", "refusal", "field", "row"),
    [
        # Not the plan's reason or queue (well formed: 422), or no reason at all (a
        # supervisor's pause says why): refused and recorded.
        ({"paused": True, "reason": "nap"}, NOT_IN_PLAN, "reason", (None, "nap")),
        (
            {"paused": True, "reason": "lunch", "queue": "nowhere"},
            NOT_IN_PLAN,
            "queue",
            ("nowhere", "lunch"),
        ),
        ({"paused": True}, INVALID, "reason", (None, None)),
        # Malformed: refused on reading, before anything is attempted (nothing recorded).
        ({"paused": True, "reason": "lunch\r\nAction: Hangup"}, INVALID, "reason", None),
        ({"paused": True, "reason": "lunch\x00"}, INVALID, "reason", None),
        ({"paused": True, "reason": "lunch", "queue": "sales\x00"}, INVALID, "queue", None),
        ({"paused": "yes", "reason": "lunch"}, INVALID, "paused", None),
    ],
)
async def test_a_pause_the_plan_does_not_allow_is_refused(
    supervised, body: dict, refusal: tuple, field: str, row: tuple | None
) -> None:
    stack, fake, _call_id, _leg = supervised
    status, answer = await stack.request(
        "POST", "/api/supervisor/agents/bob/pause", "boss", json=body
    )
    assert (status, answer["error"], answer["field"]) == (*refusal, field)
    assert fake.actions("QueuePause") == []
    expected = [] if row is None else [("boss", "pause", "bob", *row, None, refusal[1])]
    assert await audit_rows(stack) == expected


async def test_a_supervisor_logs_an_agent_in_and_out_of_a_queue(supervised) -> None:
    stack, fake, _call_id, _leg = supervised
    fake.responses["QueueAdd"] = {"Message": "Added interface to queue"}
    fake.responses["QueueRemove"] = {"Message": "Removed interface from queue"}
    path = "/api/supervisor/agents/bob/queue"
    status, answer = await stack.request(
        "POST", path, "boss", json={"queue": "sales", "logged_in": True}
    )
    assert (status, answer) == (200, {"queue": "sales", "logged_in": True})
    status, _ = await stack.request(
        "POST", path, "boss", json={"queue": "sales", "logged_in": False}
    )
    assert status == 200
    status, answer = await stack.request(
        "POST", path, "boss", json={"queue": "nowhere", "logged_in": True}
    )
    assert (status, answer["error"], answer["field"]) == (422, "not_in_plan", "queue")
    ((add,), (remove,)) = fake.actions("QueueAdd"), fake.actions("QueueRemove")
    assert fields(add, "Queue", "Interface") == ("sales", BOB)
    assert fields(remove, "Queue", "Interface") == ("sales", BOB)
    assert await audit_rows(stack) == [
        ("boss", "queue_login", "bob", "sales", None, None, "ok"),
        ("boss", "queue_logout", "bob", "sales", None, None, "ok"),
        ("boss", "queue_login", "bob", "nowhere", None, None, "not_in_plan"),
    ]


@pytest.mark.parametrize(
    ("mode", "options"), [("listen", "qES"), ("whisper", "qESw"), ("barge", "qESB")]
)
async def test_listen_whisper_and_barge_ring_the_supervisors_phone_into_chanspy(
    supervised, mode: str, options: str
) -> None:
    stack, fake, call_id, leg = supervised
    fake.responses["Originate"] = {"Message": "Originate successfully queued"}
    status, answer = await stack.request(
        "POST", "/api/supervisor/agents/alice/spy", "boss", json={"mode": mode}
    )
    assert (status, answer) == (202, {"mode": mode, "call_key": call_id})
    (originate,) = fake.actions("Originate")
    assert fields(originate, "Channel", "Application", "Data", "Async") == (
        BOSS,  # the supervisor's own phone
        "ChanSpy",
        f"{leg},{options}",  # the agent's leg exactly, quiet, ends with it
        "true",
    )
    rows = await audit_rows(stack)
    assert [row[:3] + row[5:] for row in rows] == [("boss", mode, "alice", call_id, "ok")]


async def test_listening_to_an_agent_on_no_call_is_refused_and_recorded(supervised) -> None:
    stack, fake, _call_id, _leg = supervised
    status, answer = await stack.request(
        "POST", "/api/supervisor/agents/bob/spy", "boss", json={"mode": "listen"}
    )
    assert (status, answer["error"]) == (409, "not_on_call")
    assert fake.actions("Originate") == []
    assert await audit_rows(stack) == [("boss", "listen", "bob", None, None, None, "not_on_call")]


async def test_asterisks_refusal_keeps_its_code_and_is_recorded(supervised) -> None:
    stack, fake, call_id, _leg = supervised  # the fake answers Originate with an Error
    status, answer = await stack.request(
        "POST", "/api/supervisor/agents/alice/spy", "boss", json={"mode": "barge"}
    )
    assert (status, answer["error"]) == (502, "refused")
    assert len(fake.actions("Originate")) == 1
    rows = await audit_rows(stack)
    assert [row[:3] + row[5:] for row in rows] == [("boss", "barge", "alice", call_id, "refused")]


async def test_an_action_that_cannot_be_recorded_is_not_sent(supervised) -> None:
    stack, fake, _call_id, _leg = supervised
    fake.responses["Originate"] = {"Message": "Originate successfully queued"}
    await stack.pool.execute("DROP TABLE supervisor_audit")
    status, answer = await stack.request(
        "POST", "/api/supervisor/agents/alice/spy", "boss", json={"mode": "listen"}
    )
    assert (status, answer["error"]) == (503, "unavailable")
    assert fake.actions("Originate") == []


SUPERVISOR_ROUTES = [
    ("POST", "/api/supervisor/agents/bob/pause", {"paused": True, "reason": "lunch"}),
    ("POST", "/api/supervisor/agents/bob/queue", {"queue": "sales", "logged_in": True}),
    ("POST", "/api/supervisor/agents/alice/spy", {"mode": "listen"}),
    ("POST", "/api/supervisor/agents/bob/spy", {"mode": "barge"}),
    ("GET", "/api/supervisor/audit", None),
]


@pytest.mark.parametrize(("method", "path", "body"), SUPERVISOR_ROUTES)
async def test_agents_cannot_use_the_supervisor_actions(
    supervised, method: str, path: str, body: dict | None
) -> None:
    stack, fake, _call_id, _leg = supervised
    for who in ("alice", "bob"):
        status, answer = await stack.request(method, path, who, json=body)
        assert (status, answer["error"]) == (403, "forbidden")
    status, answer = await stack.request(method, path, json=body)  # no token at all
    assert (status, answer["error"]) == (401, "unauthorized")
    for action in ("QueuePause", "QueueAdd", "Originate"):
        assert fake.actions(action) == []
    assert await audit_rows(stack) == []


async def test_an_unknown_agent_is_404_and_a_malformed_body_400(supervised) -> None:
    stack, fake, _call_id, _leg = supervised
    for path in ("/api/supervisor/agents/nobody/spy", "/api/supervisor/agents/NO%20ONE/spy"):
        status, answer = await stack.request("POST", path, "boss", json={"mode": "listen"})
        assert (status, answer["error"]) == (404, "unknown_agent")
    for body in ({"mode": "eavesdrop"}, {}, {"mode": "listen", "loud": True}):
        status, answer = await stack.request(
            "POST", "/api/supervisor/agents/alice/spy", "boss", json=body
        )
        assert (status, answer["error"]) == (400, "invalid"), body
    assert fake.actions("Originate") == []
    assert await audit_rows(stack) == []  # nothing was attempted


async def test_the_audit_reads_newest_first(supervised) -> None:
    stack, fake, call_id, _leg = supervised
    fake.responses["QueuePause"] = {"Message": "Interface paused successfully"}
    fake.responses["Originate"] = {"Message": "Originate successfully queued"}
    await stack.request(
        "POST", "/api/supervisor/agents/bob/pause", "boss", json={"paused": True, "reason": "lunch"}
    )
    await stack.request("POST", "/api/supervisor/agents/alice/spy", "boss", json={"mode": "listen"})
    status, answer = await stack.request("GET", "/api/supervisor/audit", "boss")
    assert status == 200
    entries = answer["entries"]
    assert [(e["action"], e["target_agent"], e["call_id"], e["result"]) for e in entries] == [
        ("listen", "alice", call_id, "ok"),
        ("pause", "bob", None, "ok"),
    ]
    assert entries[0]["supervisor"] == "boss" and entries[0]["at"].endswith("+00:00")
    status, answer = await stack.request("GET", "/api/supervisor/audit?agent=bob&limit=5", "boss")
    assert [e["action"] for e in answer["entries"]] == ["pause"]
    for query in ("limit=0", "limit=501", "limit=%C2%B2", "agent=Bob!"):
        status, answer = await stack.request("GET", f"/api/supervisor/audit?{query}", "boss")
        assert (status, answer["error"]) == (400, "invalid"), query


async def test_without_ami_the_actions_are_unavailable(
    database_url: str, redis_client: redis.Redis
) -> None:
    async with running_stack(database_url, redis_client) as stack:
        for method, path, body in SUPERVISOR_ROUTES[:3]:
            status, answer = await stack.request(method, path, "boss", json=body)
            assert (status, answer["error"]) == (503, "ami_unavailable"), path
