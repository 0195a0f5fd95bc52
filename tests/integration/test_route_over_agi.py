"""The ``route`` script end to end: fake Asterisk → real daemon → real PostgreSQL/Redis."""

from __future__ import annotations

import json
import uuid

import pytest

from cti.calldata.store import call_key
from tests.waiting import until

# (ANI as the trunk sends it, DNIS, IVR args) → (ROUTE, QUEUE, PRIORITY, TIER, RULE, account)
CALLERS = [
    ("2120000001", "5550100", [], ("queue", "support", "20", "platinum", "platinum", "A0000001")),
    ("+12120000002", "5550100", [], ("queue", "support", "10", "gold", "gold", "A0000002")),
    ("12120000003", "5550300", [], ("queue", "billing", "5", "silver", "silver", "A0000003")),
    # A European trunk's international form: 00 + country code, though the region is US.
    ("0012120000002", "5550100", [], ("queue", "support", "10", "gold", "gold", "A0000002")),
    ("2120000004", "5550100", [], ("queue", "support", "1", "bronze", "bronze", "A0000004")),
    ("2120000005", "5550100", [], ("queue", "collections", "5", "gold", "collections", "A0000005")),
    ("2120000006", "5550100", [], ("queue", "spanish", "5", "gold", "spanish", "A0000006")),
    (
        "2120000004",
        "5550100",
        ["intent=balance"],
        ("selfservice", "", "0", "bronze", "balance-self-service", "A0000004"),
    ),
    ("3125550199", "5550100", [], ("queue", "support", "0", "unknown", "unknown-caller", None)),
    ("anonymous", "5550300", [], ("queue", "billing", "0", "unknown", "unknown-caller", None)),
    ("unknown", "5559999", [], ("queue", "default", "0", "unknown", "unknown-caller", None)),
    (
        "anonymous",
        "5550100",
        ["account=A0000002", "intent=order"],
        ("queue", "support", "10", "gold", "gold", "A0000002"),
    ),
]


@pytest.mark.parametrize(("ani", "dnis", "args", "expected"), CALLERS)
async def test_each_kind_of_caller_gets_its_route(running, db, ani, dnis, args, expected):
    result = await running.call(callerid=ani, dnid=dnis, args=args)
    route, queue, priority, tier, rule, account = expected
    assert result.closed_by_server
    assert (
        result.var("CTI_ROUTE"),
        result.var("CTI_QUEUE"),
        result.var("CTI_PRIORITY"),
        result.var("CTI_TIER"),
        result.var("CTI_RULE"),
    ) == (route, queue, priority, tier, rule)
    customer_id = result.var("CTI_CUSTOMER_ID")
    if account is None:
        assert customer_id == ""
    else:
        assert customer_id == str(
            await db.fetchval("SELECT id FROM customers WHERE account_number = $1", account)
        )
    # The call id is inherited by every leg: it must be set with the __ prefix.
    assert uuid.UUID(result.variables["__CTI_CALL_ID"])
    # CTI_ROUTE comes last so the dialplan can read "route set" as "all set".
    assert list(result.variables)[-1] == "CTI_ROUTE"
    # ... and all of them in one round trip.
    assert [c[:2] for c in result.commands] == [["EXEC", "MSet"]]


async def test_without_mset_each_variable_is_set_on_its_own(running):
    with_mset = await running.call(callerid="2120000002", dnid="5550100")
    without = await running.call(callerid="2120000002", dnid="5550100", applications=frozenset())
    assert without.commands[0][:2] == ["EXEC", "MSet"]  # tried, answered result=-2
    assert [c[:2] for c in without.commands[1:]] == [["SET", "VARIABLE"]] * 7
    assert without.variables.keys() == with_mset.variables.keys()
    for name in with_mset.variables.keys() - {"__CTI_CALL_ID"}:
        assert without.variables[name] == with_mset.variables[name]


async def test_caller_hanging_up_during_the_route_stops_the_script(running):
    result = await running.call(
        callerid="2120000002", dnid="5550100", applications=frozenset(), hangup_before_reply=2
    )
    # HANGUP arrived before the reply to the 2nd command: nothing is sent after it.
    assert len(result.commands) == 2
    assert result.closed_by_server


async def test_dnid_unknown_falls_back_to_the_extension(running):
    result = await running.call(callerid="2120000002", dnid="unknown", extension="5550300")
    assert result.var("CTI_QUEUE") == "billing"


async def test_call_data_and_interaction_are_recorded(running, db, redis_client):
    result = await running.call(
        callerid="2120000002",
        dnid="5550100",
        channel="PJSIP/trunk-00000042",
        uniqueid="1795407778.42",
        args=["account=", "intent=order", "garbage", "lang=en"],
    )
    call_id = result.var("CTI_CALL_ID")
    raw = await until(lambda: redis_client.get(call_key(call_id)))
    doc = json.loads(raw)
    assert doc["customer"]["name"] == "Alan Turing"
    assert doc["routing"] == {
        "route": "queue",
        "queue": "support",
        "priority": 10,
        "rule": "gold",
        "tier": "gold",
        "fail_open": None,
    }
    assert doc["ivr"] == {"intent": "order", "lang": "en"}  # empty and malformed dropped
    assert doc["version"] == 1
    assert 0 < await redis_client.ttl(call_key(call_id)) <= 86_400

    row = await until(
        lambda: db.fetchrow("SELECT * FROM interactions WHERE call_id = $1", uuid.UUID(call_id))
    )
    assert row["channel"] == "PJSIP/trunk-00000042"
    assert row["uniqueid"] == "1795407778.42"
    assert (row["ani"], row["ani_e164"], row["dnis"]) == ("2120000002", "+12120000002", "5550100")
    assert (row["queue"], row["priority"], row["rule"]) == ("support", 10, "gold")
    assert row["fail_open_reason"] is None
    assert 0 < row["decision_us"] < 200_000


async def test_a_rule_edited_in_the_database_changes_the_next_decision(running, db):
    before = await running.call(callerid="2120000002", dnid="5550100")
    assert (before.var("CTI_PRIORITY"), before.var("CTI_QUEUE")) == ("10", "support")
    reloads = running.daemon.plan.reloads
    await db.execute(
        "UPDATE routing_rules SET priority = 42, queue = 'billing' WHERE name = 'gold'"
    )
    await until(lambda: running.daemon.plan.reloads > reloads)
    after = await running.call(callerid="2120000002", dnid="5550100")
    assert (after.var("CTI_PRIORITY"), after.var("CTI_QUEUE")) == ("42", "billing")


async def test_opening_hours_edited_in_the_database_send_calls_to_after_hours(running, db):
    reloads = running.daemon.plan.reloads
    # Open no day at all: the number is closed now, whatever the time.
    await db.execute("UPDATE dialled_numbers SET hours = '{}' WHERE dnis = '5550100'")
    await until(lambda: running.daemon.plan.reloads > reloads)
    result = await running.call(callerid="2120000002", dnid="5550100")
    assert (result.var("CTI_ROUTE"), result.var("CTI_QUEUE"), result.var("CTI_RULE")) == (
        "afterhours",
        "",
        "closed",
    )


async def test_an_invalid_rule_in_the_database_keeps_the_previous_plan(running, db):
    reloads = running.daemon.plan.reloads
    await db.execute(
        """UPDATE routing_rules SET match = '{"tier": ["gould"]}' WHERE name = 'gold'"""
    )
    # Another change afterwards proves the watcher is alive and still refusing the bad row.
    await db.execute("UPDATE routing_rules SET priority = 11 WHERE name = 'silver'")
    await until(lambda: running.daemon.plan.reloads == reloads, within_s=0.5)
    result = await running.call(callerid="2120000002", dnid="5550100")
    assert (result.var("CTI_RULE"), result.var("CTI_PRIORITY")) == ("gold", "10")
