"""Hostile bytes at the FastAGI edge: routed, recorded, and nothing downstream jammed.

A NUL in an AGI header or argument used to be routed and then refused by PostgreSQL
(``CharacterNotInRepertoireError``) in the record writers' batch, which they retried
for ever: every later call's record waited behind it. Fake Asterisk over a real socket,
the real daemon, real PostgreSQL and Redis.
"""

from __future__ import annotations

import json
import uuid

import pytest

from cti.calldata.store import call_key
from tests.waiting import until

pytestmark = pytest.mark.hostile

GOLD = {"callerid": "2120000002", "dnid": "5550100"}


async def _all_rows(db, table: str, call_ids: list[uuid.UUID], where: str = "TRUE"):
    rows = await db.fetch(
        f"SELECT * FROM {table} WHERE call_id = ANY($1) AND {where}",  # our own table names
        call_ids,
    )
    return rows if len(rows) == len(call_ids) else None


async def test_a_nul_in_an_ivr_argument_then_50_calls_all_land(running, db, redis_client):
    bad = await running.call(**GOLD, args=["intent=bill\0ing", "lang=en"])
    # Routed, by the rules: the argument with the NUL is dropped, the others kept.
    assert (bad.var("CTI_ROUTE"), bad.var("CTI_QUEUE"), bad.var("CTI_RULE")) == (
        "queue",
        "support",
        "gold",
    )
    normal = [await running.call(**GOLD, uniqueid=f"1795407778.{i}") for i in range(50)]
    assert all(r.var("CTI_RULE") == "gold" for r in normal)

    call_ids = [uuid.UUID(r.var("CTI_CALL_ID")) for r in [bad, *normal]]
    rows = await until(lambda: _all_rows(db, "interactions", call_ids), within_s=20)
    history = await until(
        lambda: _all_rows(db, "call_data_history", call_ids, "version = 1"), within_s=20
    )
    assert len(rows) == len(history) == 51
    bad_id = call_ids[0]
    (bad_row,) = [r for r in rows if r["call_id"] == bad_id]
    assert json.loads(bad_row["ivr"]) == {"lang": "en"}
    doc = json.loads(await redis_client.get(call_key(str(bad_id))))
    assert doc["ivr"] == {"lang": "en"}
    daemon = running.daemon
    assert daemon.routing.interactions.backlog == daemon.parts.call_data.history.backlog == 0


async def test_control_characters_in_headers_are_stripped_and_the_call_recorded(running, db):
    result = await running.call(
        callerid="212000\x000002",
        dnid="5550\x00100",
        channel="PJSIP/trunk-\x1b[31m\x9b00000042",
        uniqueid="1795407778.\x0742",
        args=["account=A00\x7f00002"],  # dropped: the caller id still finds the customer
    )
    assert (result.var("CTI_QUEUE"), result.var("CTI_RULE")) == ("support", "gold")
    call_id = uuid.UUID(result.var("CTI_CALL_ID"))
    (row,) = await until(lambda: _all_rows(db, "interactions", [call_id]), within_s=20)
    assert (row["ani"], row["ani_e164"], row["dnis"]) == ("2120000002", "+12120000002", "5550100")
    assert (row["channel"], row["uniqueid"]) == ("PJSIP/trunk-[31m00000042", "1795407778.42")
    assert json.loads(row["ivr"]) == {}
    await until(lambda: _all_rows(db, "call_data_history", [call_id]), within_s=20)
