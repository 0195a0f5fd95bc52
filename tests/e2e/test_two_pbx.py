"""Two Asterisk servers behind one cti (issue 12), everything real: PBX a (the session's
sandbox) and PBX b (``scripts/asterisk-sandbox --pbx b``), joined by the inter-PBX
trunk the sandbox renders (endpoints pbx-a / pbx-b, context from-pbx), SIPp callers
and agents on both, and a ``cti serve`` that follows both (``CTI_PBXES``).

The daemon of this module is its own: a private redis-server and a fresh demo database,
so that the session daemon (which follows a alone) neither sees nor doubles what this
one publishes. For the module both PBXes' dialplans send FastAGI to it (AMI Setvar of
the global CTI_AGI_ADDR), and back to the session daemon afterwards.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cti.sandbox_pbxes import SECOND, cti_pbxes
from tests.e2e.ami import Ami, call_id_of, is_event
from tests.e2e.conftest import (
    AMI_PORT,
    AMI_USER,
    DEMO_CUSTOMERS,
    E2ESetup,
    _no_wrapup,
    daemon_env,
    demo_database,
)
from tests.e2e.stack import Daemon, RedisServer, free_port

pytestmark = pytest.mark.e2e

GOLD = ("2120000002", "5550100", "", "")  # Alan Turing, gold -> support on a


@dataclass(frozen=True)
class TwoPbx:
    """The module's daemon, following a (home) and b."""

    daemon: Daemon
    redis: RedisServer
    database_url: str
    http_port: int
    session_secret: str


async def point_agi(port: int, secret: str, addr: str) -> None:
    """Set a PBX's global CTI_AGI_ADDR (where its dialplan sends FastAGI)."""
    client = await Ami.connect("127.0.0.1", port, AMI_USER, secret)
    try:
        reply = await client.action("Setvar", Variable="CTI_AGI_ADDR", Value=addr)
        assert reply.get("Response") == "Success", reply
    finally:
        await client.close()


@pytest.fixture(scope="module")
async def two_pbx(sandbox_b: E2ESetup, template_db: str, tmp_path_factory) -> AsyncIterator[TwoPbx]:
    testbed = sandbox_b
    workdir = tmp_path_factory.mktemp("two-pbx")
    redis_server = RedisServer(free_port(), workdir)
    await redis_server.start()
    try:
        async with demo_database(template_db, "cti_2pbx", DEMO_CUSTOMERS, _no_wrapup) as url:
            port, http_port, session_secret = free_port(), free_port(), secrets.token_hex(32)
            plan_cache = workdir / "routing-plan.toml"
            env = daemon_env(testbed) | {
                "CTI_DATABASE_URL": url,
                "CTI_REDIS_URL": redis_server.url,
                "CTI_PLAN_CACHE": str(plan_cache),
                "CTI_PBXES": cti_pbxes("a", "b"),
                "CTI_AMI_SECRET_B": testbed.b_ami_secret,
                "CTI_SESSION_SECRET": session_secret,
                "CTI_HTTP_BIND": f"127.0.0.1:{http_port}",
            }
            try:
                daemon = await Daemon.start(
                    port=port, env=env, log=workdir / "daemon.log", ready_file=plan_cache
                )
            except RuntimeError as exc:
                pytest.fail(f"the two-PBX daemon did not start: {exc}", pytrace=False)
            try:
                await point_agi(AMI_PORT, testbed.ami_secret, daemon.addr)
                await point_agi(SECOND.ami_port, testbed.b_ami_secret, daemon.addr)
                yield TwoPbx(daemon, redis_server, url, http_port, session_secret)
            finally:
                session_agi = f"127.0.0.1:{testbed.agi_port}"
                await point_agi(AMI_PORT, testbed.ami_secret, session_agi)
                await point_agi(SECOND.ami_port, testbed.b_ami_secret, session_agi)
                await daemon.stop()
    finally:
        await redis_server.stop()


def agent_connect(queue: str):
    return lambda e: e.get("Event") == "AgentConnect" and e.get("Queue") == queue


async def test_a_blind_transfer_to_a_queue_on_b_carries_the_call_id(
    two_pbx: TwoPbx, ami: Ami, ami_b: Ami, agents, agents_b, place_calls, tmp_path: Path
):
    """A call routed on a, answered by a's agent 2001, blind-transferred (AMI
    BlindTransfer to b-support@agents) reaches queue support on b over trunk pbx-a,
    carrying a's CTI_CALL_ID in X-CTI-Call-ID; b's agent 2002 answers it."""
    await agents.start(2001)
    await agents_b.start(2002)
    since, since_b = ami.mark(), ami_b.mark()
    calls = await place_calls([GOLD], hold_ms=25_000, rate=1)

    answered = await ami.wait_event(
        agent_connect("support"), since=since, within_s=30, what="a's agent answering"
    )
    call_id = call_id_of(answered)
    assert uuid.UUID(call_id), f"CTI_CALL_ID not set on {answered['Channel']}"
    assert answered["Interface"] == "PJSIP/2001"

    reply = await ami.action(
        "BlindTransfer", Channel=answered["DestChannel"], Context="agents", Exten="b-support"
    )
    assert reply.get("Response") == "Success", reply

    # a: the caller dials b over the trunk, with the call id on the outgoing leg.
    dial = await ami.wait_event(
        lambda e: (
            e.get("Event") == "DialBegin" and e.get("DestChannel", "").startswith("PJSIP/pbx-b-")
        ),
        since=since,
        what="a dialling b over pbx-b",
    )
    assert dial["DialString"] == "support@pbx-b"
    assert call_id_of(dial) == call_id

    # b: the call arrives on trunk pbx-a and joins b's queue support with the header.
    join = await ami_b.wait_event(
        is_event("QueueCallerJoin", Queue="support"), since=since_b, what="b's QueueCallerJoin"
    )
    assert join["Channel"].startswith("PJSIP/pbx-a-"), join["Channel"]
    assert await ami_b.getvar(join["Channel"], "PJSIP_HEADER(read,X-CTI-Call-ID)") == call_id
    assert await ami_b.getvar(join["Channel"], "CHANNEL(endpoint)") == "pbx-a"

    connect_b = await ami_b.wait_event(
        is_event("AgentConnect", Uniqueid=join["Uniqueid"]), since=since_b, within_s=30
    )
    assert connect_b["Interface"] == "PJSIP/2002"
    await calls.wait(timeout_s=60)
