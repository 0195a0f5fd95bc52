"""The end-to-end test bed: real Asterisk (the sandbox), real ``cti serve``, real SIPp.

Session scope (started once, torn down at the end even when tests fail):
  - a fresh database from the migrated template, seeded with the demo data;
  - Redis database CTI_TEST_E2E_REDIS (default db 13), flushed;
  - ``cti serve`` as a subprocess, on an AGI port picked before Asterisk starts
    (4573 when free), because the sandbox renders that address into the dialplan;
  - ``scripts/asterisk-sandbox up`` with a per-run AMI secret, ``down`` at the end.

The daemon is a subprocess rather than the in-process ``Daemon`` of the integration
tests: it is the production entry point (console script, configuration from the
environment, signals), it has its own event loop so the tests' AMI reader and TCP
proxy never delay its answers, and a test can take it down or start a second one
with another configuration just as an operator would.

Function scope: an AMI connection, SIPp agents (only those a test asks for), SIPp
caller batches; all stopped by pid at the end of the test.

The second PBX (issue 12): ``sandbox_b`` starts ``scripts/asterisk-sandbox --pbx b``
(SIP 5160, AMI 5039, its own per-run AMI secret and agent passwords) only when a test
asks for it, once per session, and stops it at the end; ``ami_b`` and ``agents_b`` are
b's AMI connection and phones (517N).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as redis

from cti.agent_phones import AGENTS, password_variable
from cti.calls.lease import LEASE_KEY
from cti.demo.seed import seed_demo
from cti.sandbox_pbxes import HOME, SECOND, SandboxPbx
from tests.conftest import PG_SERVER
from tests.e2e.ami import Ami
from tests.e2e.stack import (
    Agents,
    CallBatch,
    Daemon,
    RedisServer,
    free_port,
    run_sandbox,
)
from tests.waiting import until

E2E_REDIS = os.environ.get("CTI_TEST_E2E_REDIS", "redis://127.0.0.1:6379/13")
AMI_USER = "cti"
AMI_PORT = 5038
DEMO_CUSTOMERS = 2_000


@dataclass(frozen=True)
class E2ESetup:
    workdir: Path
    agi_port: int
    ami_secret: str
    database_url: str
    plan_cache: Path
    http_port: int  # the session daemon's sidebar (HTTP) port
    session_secret: str
    agent_passwords: dict[int, str]  # SIP passwords of agents 2001-2006, per run
    b_ami_secret: str  # the second PBX's (sandbox_b), per run
    b_agent_passwords: dict[int, str]  # its agents 2001-2006's


@pytest.fixture(scope="session")
def e2e_prerequisites() -> None:
    if os.geteuid() != 0:
        pytest.skip("end-to-end tests need root: scripts/asterisk-sandbox uses chroot and mount")
    if shutil.which("sipp") is None:
        pytest.fail("sipp not found: install Debian's sip-tester package", pytrace=False)


@contextlib.asynccontextmanager
async def demo_database(
    template_db: str,
    prefix: str,
    customers: int,
    prepare: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
) -> AsyncIterator[str]:
    """A fresh database named ``<prefix>_<random>`` from the migrated template, seeded
    with the demo data and then ``prepare``d; its URL. Dropped on the way out."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(f"{PG_SERVER}/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    finally:
        await admin.close()
    url = f"{PG_SERVER}/{name}"
    try:
        conn = await asyncpg.connect(url)
        try:
            await seed_demo(conn, customers=customers)
            if prepare is not None:
                await prepare(conn)
        finally:
            await conn.close()
        yield url
    finally:
        admin = await asyncpg.connect(f"{PG_SERVER}/postgres")
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def _no_wrapup(conn: asyncpg.Connection) -> None:
    # No wrap-up for the session's daemon: its tests ring the same agents call after
    # call. tests/e2e/test_wrapup.py runs daemons of its own, with wrap-up.
    await conn.execute("UPDATE queues SET wrapup_s = 0")


@pytest.fixture(scope="session")
async def e2e_database(e2e_prerequisites, template_db: str) -> AsyncIterator[str]:
    async with demo_database(template_db, "cti_e2e", DEMO_CUSTOMERS, _no_wrapup) as url:
        yield url


@pytest.fixture(scope="session")
async def e2e_redis(e2e_prerequisites) -> AsyncIterator[redis.Redis]:
    client = redis.from_url(E2E_REDIS)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def testbed(e2e_database: str, tmp_path_factory) -> E2ESetup:
    workdir = tmp_path_factory.mktemp("e2e")
    return E2ESetup(
        workdir=workdir,
        agi_port=free_port(preferred=4573),
        # render-config accepts [A-Za-z0-9._~+/=@%^*!#-]: hex is safe.
        ami_secret=secrets.token_hex(16),
        database_url=e2e_database,
        plan_cache=workdir / "routing-plan.toml",
        http_port=free_port(),
        session_secret=secrets.token_hex(32),
        agent_passwords={agent: secrets.token_hex(12) for agent in AGENTS},
        b_ami_secret=secrets.token_hex(16),
        b_agent_passwords={agent: secrets.token_hex(12) for agent in AGENTS},
    )


def daemon_env(testbed: E2ESetup, **overrides: str) -> dict[str, str]:
    return {
        "CTI_DATABASE_URL": testbed.database_url,
        "CTI_REDIS_URL": E2E_REDIS,
        "CTI_PLAN_CACHE": str(testbed.plan_cache),
        "CTI_LOG_LEVEL": "info",
        # Follow calls over AMI (issue 4); Asterisk may come up after the daemon.
        "CTI_AMI_SECRET": testbed.ami_secret,
        "CTI_AMI_PING_S": "2",
        # A loaded machine's PostgreSQL can take longer than the default's 150 ms lookup;
        # a call that failed open is not what most tests are about (the outage test
        # sets the default back: its budget is what it measures).
        "CTI_ROUTE_BUDGET_MS": "2000",
    } | overrides


@pytest.fixture(scope="session")
async def daemon(testbed: E2ESetup, e2e_redis) -> AsyncIterator[Daemon]:
    """The healthy daemon; ready once it listens and has written the plan cache."""
    try:
        running = await Daemon.start(
            port=testbed.agi_port,
            # Only this daemon serves the sidebar (the others tests start have no HTTP).
            env=daemon_env(testbed)
            | {
                "CTI_SESSION_SECRET": testbed.session_secret,
                "CTI_HTTP_BIND": f"127.0.0.1:{testbed.http_port}",
            },
            log=testbed.workdir / "daemon.log",
            ready_file=testbed.plan_cache,
        )
    except RuntimeError as exc:
        pytest.fail(f"the CTI daemon did not start: {exc}", pytrace=False)
    yield running
    await running.stop()


async def _sandbox(
    command: str, testbed: E2ESetup, timeout_s: float, pbx: SandboxPbx = HOME
) -> tuple[int, str]:
    if pbx == HOME:
        secret, passwords = testbed.ami_secret, testbed.agent_passwords
    else:
        secret, passwords = testbed.b_ami_secret, testbed.b_agent_passwords
    suffix = pbx.env_suffix
    env = {
        "CTI_SANDBOX_PBX": pbx.name,
        f"CTI_AMI_SECRET{suffix}": secret,
        "CTI_AGI_ADDR": f"127.0.0.1:{testbed.agi_port}",
    } | {password_variable(agent) + suffix: pw for agent, pw in passwords.items()}
    return await run_sandbox(command, env, timeout_s)


@pytest.fixture(scope="session")
async def sandbox(testbed: E2ESetup, daemon: Daemon, e2e_redis) -> AsyncIterator[E2ESetup]:
    """Asterisk up for the session, its dialplan pointing at the daemon; down at the end.
    Ready once the daemon follows it: it holds the AMI lease, which it takes only with its
    AMI connection up and resynced (the daemon started first and reconnects with
    backoff; a call placed before that would be seen only from its snapshot, with no
    ``ringing``)."""
    code, out = await _sandbox("up", testbed, timeout_s=300)
    if code != 0:
        if "already running" not in out:  # never stop an Asterisk we did not start
            await _sandbox("down", testbed, timeout_s=60)
        pytest.fail(
            f"Asterisk did not start (scripts/asterisk-sandbox up exit {code}):\n{out}",
            pytrace=False,
        )
    try:
        await until(lambda: e2e_redis.get(LEASE_KEY), within_s=90)
        yield testbed
    finally:
        code, out = await _sandbox("down", testbed, timeout_s=60)
        if code != 0:
            print(f"scripts/asterisk-sandbox down failed ({code}):\n{out}")


@pytest.fixture(scope="session")
async def sandbox_b(sandbox: E2ESetup) -> AsyncIterator[E2ESetup]:
    """The second Asterisk (PBX b), for the tests that ask for it: up once, after the home
    one (each renders a trunk to the other), down at the end of the session."""
    code, out = await _sandbox("up", sandbox, timeout_s=120, pbx=SECOND)
    if code != 0:
        if "already running" not in out:
            await _sandbox("down", sandbox, timeout_s=60, pbx=SECOND)
        pytest.fail(
            f"PBX b did not start (scripts/asterisk-sandbox --pbx b up exit {code}):\n{out}",
            pytrace=False,
        )
    try:
        yield sandbox
    finally:
        code, out = await _sandbox("down", sandbox, timeout_s=60, pbx=SECOND)
        if code != 0:
            print(f"scripts/asterisk-sandbox --pbx b down failed ({code}):\n{out}")


async def quiet_ami(port: int, secret: str) -> Ami:
    """An AMI connection, once that Asterisk has no call of an earlier test still up."""
    client = await Ami.connect("127.0.0.1", port, AMI_USER, secret)

    async def idle() -> bool:
        return not await client.list_action("CoreShowChannels")

    try:
        await until(idle, within_s=15, every_s=0.2)
    except BaseException:
        await client.close()
        raise
    return client


@pytest.fixture
async def ami(sandbox: E2ESetup) -> AsyncIterator[Ami]:
    client = await quiet_ami(AMI_PORT, sandbox.ami_secret)
    yield client
    await client.close()


@pytest.fixture
async def ami_b(sandbox_b: E2ESetup) -> AsyncIterator[Ami]:
    """PBX b's AMI, from a quiet Asterisk."""
    client = await quiet_ami(SECOND.ami_port, sandbox_b.b_ami_secret)
    yield client
    await client.close()


@pytest.fixture
async def agents(sandbox, tmp_path: Path) -> AsyncIterator[Agents]:
    phones = Agents(tmp_path, sandbox.agent_passwords)
    yield phones
    await phones.stop_all()


@pytest.fixture
async def agents_b(sandbox_b, tmp_path: Path) -> AsyncIterator[Agents]:
    """PBX b's agents 2001-2006 (phones on 517N, b's passwords): only those started."""
    workdir = tmp_path / "pbx-b"
    workdir.mkdir()
    phones = Agents(workdir, sandbox_b.b_agent_passwords, pbx=SECOND)
    yield phones
    await phones.stop_all()


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A redis-server of the test's own, which it may restart (the shared one is not ours)."""
    server = RedisServer(free_port(), tmp_path)
    await server.start()
    yield server
    await server.stop()


PlaceCalls = Callable[..., Awaitable[CallBatch]]


@pytest.fixture
async def place_calls(sandbox, tmp_path: Path) -> AsyncIterator[PlaceCalls]:
    """``await place_calls(rows, hold_ms=..., rate=...)`` starts one SIPp caller batch."""
    batches: list[CallBatch] = []

    async def place(rows, *, hold_ms: int, rate: float = 2, **more) -> CallBatch:
        batch = await CallBatch.start(
            tmp_path, rows, hold_ms=hold_ms, rate=rate, name=f"calls-{len(batches) + 1}", **more
        )
        batches.append(batch)
        return batch

    yield place
    for batch in batches:
        await batch.stop()


@pytest.fixture
async def agi_target(ami: Ami, sandbox: E2ESetup) -> AsyncIterator[Callable[[str], Awaitable]]:
    """Point the dialplan's global CTI_AGI_ADDR somewhere else for one test (AMI Setvar)."""

    async def point_to(addr: str) -> None:
        reply = await ami.action("Setvar", Variable="CTI_AGI_ADDR", Value=addr)
        assert reply.get("Response") == "Success", reply

    yield point_to
    await point_to(f"127.0.0.1:{sandbox.agi_port}")
