"""A real softphone as an agent: baresip registers as 2005 with its password, a routed
queue call rings it, it answers, and agent2005's sidebar gets the pop with the customer.

Proves what the SIPp phones cannot: that an ordinary SIP client, configured as a person
would configure Linphone or Zoiper (user, password, domain; README "Connect your own
softphone"), is an agent. Barbara Liskov (delinquent) calling 5550300 goes to the
collections queue, whose only member is PJSIP/2005.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import asyncpg
import pytest

from cti.screenpop.agents import add_agent
from tests.e2e.conftest import E2ESetup
from tests.e2e.softphone import Baresip, baresip_missing
from tests.waiting import until

pytestmark = pytest.mark.e2e

PASSWORD = "softphone sidebar password"
DELINQUENT = ("2120000005", "5550300", "", "")  # Barbara Liskov -> collections -> 2005
AGENT = 2005


async def next_event(ws: aiohttp.ClientWebSocketResponse, kind: str, seen: list) -> dict:
    while True:
        frame = await ws.receive_json()
        seen.append(frame)
        if frame.get("type") == "event" and frame["event"]["event"] == kind:
            return frame["event"]


async def test_a_registered_softphone_answers_a_routed_call_and_its_agent_gets_the_pop(
    sandbox: E2ESetup,
    ami,  # waits until Asterisk has no call left from an earlier test
    place_calls,
    tmp_path,
):
    if (why := baresip_missing()) is not None:
        pytest.fail(why, pytrace=False)
    db = await asyncpg.connect(sandbox.database_url)
    try:
        await add_agent(db, f"agent{AGENT}", f"PJSIP/{AGENT}", PASSWORD, replace=True)
    finally:
        await db.close()

    phone = await Baresip.start(
        tmp_path, user=str(AGENT), password=sandbox.agent_passwords[AGENT], registrar="127.0.0.1"
    )
    try:
        await phone.wait_for("200 OK", within_s=20)  # the REGISTER, after the 401
        contacts = await ami.list_action("PJSIPShowContacts")
        mine = [c for c in contacts if c.get("ObjectName", "").startswith(f"{AGENT};")]
        assert len(mine) == 1, contacts  # max_contacts=1: the softphone replaced any SIPp
        assert "baresip" in mine[0].get("UserAgent", "").lower(), mine[0]

        async with aiohttp.ClientSession(f"http://127.0.0.1:{sandbox.http_port}") as http:
            login = await http.post(
                "/api/login", json={"username": f"agent{AGENT}", "password": PASSWORD}
            )
            assert login.status == 200, await login.text()
            token = (await login.json())["token"]
            auth = {"Authorization": f"Bearer {token}"}

            # The daemon follows calls over AMI; run first, this test may beat its login.
            async def following() -> bool:
                async with http.get("/readyz") as ready:
                    return (await ready.json()).get("ami") is True

            await until(following, within_s=30, every_s=0.2)
            now = f"{int(time.time() * 1000)}-0"  # only what comes after now
            async with http.ws_connect(f"/ws?token={token}&after={now}") as ws:
                hello = await ws.receive_json(timeout=5)
                assert hello["type"] == "hello", hello
                calls = await place_calls([DELINQUENT], hold_ms=6_000)
                seen: list[dict] = []
                try:
                    async with asyncio.timeout(30):
                        ringing = await next_event(ws, "ringing", seen)
                        # baresip answered by itself: the queue connected the caller to it.
                        connected = await next_event(ws, "connected", seen)
                except TimeoutError:
                    raise AssertionError(f"frames on agent{AGENT}'s socket: {seen}") from None
                assert ringing["agent"] == f"PJSIP/{AGENT}", ringing
                assert ringing["queue"] == "collections", ringing
                assert connected["agent"] == f"PJSIP/{AGENT}", connected
                await phone.wait_for("Call established", within_s=10)

                # The pop: the call's data as the sidebar reads it, with the customer.
                answer = await http.get(f"/api/calls/{ringing['call_key']}", headers=auth)
                assert answer.status == 200, await answer.text()
                call = (await answer.json())["call"]
                assert call["customer"]["name"] == "Barbara Liskov", call
                assert call["routing"]["queue"] == "collections", call
                await calls.wait(timeout_s=30)
    finally:
        await phone.stop()
