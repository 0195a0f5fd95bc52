"""The real two-PBX test bed, as ``bench.two_pbx_bench`` runs it: stores, ``cti serve``,
both sandbox Asterisks, both PBXes' SIPp agent phones, AMI connections and one sidebar
WebSocket per agent.

Why a module of its own: the bench's phases and figures (``two_pbx_bench.py``) should
read as the measurement alone; starting and stopping eight kinds of things is here.
Everything is built from the end-to-end test bed's pieces (``tests/e2e/stack.py``:
``Daemon``, ``Agents``, ``run_sandbox``, ``free_port``; ``tests/e2e/ami.py``) and the
load test's (``cti.loadtest``), so the bench drives the same processes the tests do.

Every process is ours, tracked by pid and stopped on the way out (an
``AsyncExitStack``), Ctrl-C included. Asterisk is started only while holding
``/tmp/cti-e2e.lock`` (the machine's one-Asterisk-test-at-a-time lock), taken here and
released once both PBXes are down.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.harness import BenchError, flush_redis, now, progress
from bench.pop_processes import Browsers
from cti.agent_phones import AGENTS, password_variable
from cti.sandbox_pbxes import HOME, SECOND, SandboxPbx, cti_pbxes
from cti.screenpop.agents import add_agent
from tests.e2e.ami import Ami
from tests.e2e.stack import Agents, Daemon, free_port, run_sandbox

LOCK_PATH = Path("/tmp/cti-e2e.lock")
AMI_USER = "cti"
PBXES = (HOME, SECOND)


@dataclass(frozen=True)
class BedOptions:
    pg_server: str  # postgresql://user@host:port (no database)
    template: str  # a migrated database to copy, when it exists
    redis_url: str  # flushed: never db 0
    customers: int
    agent_ring_ms: int
    workdir: Path


def sidebar_user(agent: int, pbx: SandboxPbx) -> tuple[str, str]:
    """(username, endpoint) of agent ``agent``'s sidebar on ``pbx``: the demo's
    ``agent2001`` / ``PJSIP/2001`` at home, ``agent2001b`` / ``PJSIP/2001@b`` on b."""
    if pbx == HOME:
        return f"agent{agent}", f"PJSIP/{agent}"
    return f"agent{agent}{pbx.name}", f"PJSIP/{agent}@{pbx.name}"


# ------------------------------------------------------------------ the database
def cti_argv(*args: str) -> list[str]:
    cti = Path(sys.executable).with_name("cti")
    return [str(cti), *args] if cti.exists() else [sys.executable, "-m", "cti", *args]


async def run_cti(env: dict[str, str], *args: str) -> None:
    """One ``cti`` command with ``env`` as its CTI_* settings; BenchError if it fails."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CTI_")} | env
    proc = await asyncio.create_subprocess_exec(
        *cti_argv(*args),
        env=full_env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise BenchError(f"cti {' '.join(args)}: exit {proc.returncode}: {out.decode()[-600:]}")


@contextlib.asynccontextmanager
async def bench_database(options: BedOptions, demo_password: str) -> AsyncIterator[str]:
    """A database of the run's own (``cti_bench_2pbx_<hex>``: from ``options.template``
    when that exists, then ``cti db migrate`` and ``cti db seed-demo``), the sidebar users
    of both PBXes' agents, no wrap-up (the phones take call after call, as in the e2e
    session); dropped on the way out."""
    name = f"cti_bench_2pbx_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(f"{options.pg_server}/postgres", timeout=10)
    try:
        if await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", options.template):
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{options.template}"')
    finally:
        await admin.close()
    url = f"{options.pg_server}/{name}"
    try:
        env = {"CTI_DATABASE_URL": url, "CTI_DEMO_PASSWORD": demo_password}
        await run_cti(env, "db", "migrate")
        await run_cti(env, "db", "seed-demo", "--customers", str(options.customers))
        conn = await asyncpg.connect(url, timeout=10)
        try:
            await conn.execute("UPDATE queues SET wrapup_s = 0")
            for agent in AGENTS:
                username, endpoint = sidebar_user(agent, SECOND)
                await add_agent(conn, username, endpoint, demo_password, replace=True)
        finally:
            await conn.close()
        yield url
    finally:
        admin = await asyncpg.connect(f"{options.pg_server}/postgres", timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


# ------------------------------------------------------------------ Asterisk
@dataclass(frozen=True)
class PbxSecrets:
    ami_secret: str
    agent_passwords: dict[int, str]

    @classmethod
    def draw(cls) -> PbxSecrets:
        # render-config accepts [A-Za-z0-9._~+/=@%^*!#-]: hex is safe.
        return cls(secrets.token_hex(16), {a: secrets.token_hex(12) for a in AGENTS})


async def sandbox(command: str, pbx: SandboxPbx, keys: PbxSecrets, agi_addr: str) -> None:
    """``scripts/asterisk-sandbox --pbx <pbx> <command>`` with the run's secrets."""
    env = {
        "CTI_SANDBOX_PBX": pbx.name,
        f"CTI_AMI_SECRET{pbx.env_suffix}": keys.ami_secret,
        "CTI_AGI_ADDR": agi_addr,
    } | {password_variable(a) + pbx.env_suffix: pw for a, pw in keys.agent_passwords.items()}
    code, out = await run_sandbox(command, env, timeout_s=300 if command == "up" else 60)
    if code != 0:
        raise BenchError(f"asterisk-sandbox --pbx {pbx.name} {command}: exit {code}:\n{out}")


@contextlib.asynccontextmanager
async def e2e_lock() -> AsyncIterator[None]:
    """The machine's Asterisk lock (what ``flock /tmp/cti-e2e.lock`` takes). Polled
    without blocking, so that Ctrl-C while waiting for it ends the bench at once."""
    handle = await asyncio.to_thread(LOCK_PATH.open, "a")
    with handle:
        progress(f"waiting for {LOCK_PATH} (one Asterisk test bed at a time)")
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def asterisk_pid(pbx: SandboxPbx) -> int | None:
    """The sandbox Asterisk's pid (its pid file under the repository's var/)."""
    path = Path(__file__).resolve().parents[1] / pbx.run_dir / "asterisk.pid"
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------ sidebars
@dataclass(frozen=True, slots=True)
class Pop:
    """A ``ringing`` frame on an agent's WebSocket: its arrival (wall clock, the one
    Asterisk stamps events with on this machine) and the event's ``at``."""

    arrived: float
    at: float
    agent: str
    pbx: str | None


class Sidebars(Browsers):
    """One logged-in sidebar WebSocket per agent of both PBXes: ``pop_latency``'s
    browsers (one socket per agent, the ``hello`` checked), each after a real
    ``POST /api/login``, and each ``ringing`` frame kept as a :class:`Pop`."""

    def __init__(self) -> None:
        super().__init__()
        self.pops: list[Pop] = []

    async def log_in(self, http_port: int, users: Sequence[tuple[str, str, str]]) -> None:
        """``users``: (username, endpoint, password); one at a time (the login throttle
        counts password checks per address)."""
        agents = []
        for username, endpoint, password in users:
            async with self.session.post(
                f"http://127.0.0.1:{http_port}/api/login",
                json={"username": username, "password": password},
            ) as reply:
                body: dict[str, Any] = await reply.json()
                if reply.status != 200:
                    raise BenchError(f"login {username}: HTTP {reply.status} {body}")
            agents.append((endpoint, str(body["token"])))
        await self.connect(http_port, agents)

    def ringing(self, event: dict[str, Any], stamp: float) -> None:
        arrived = time.time() - (now() - stamp)  # the arrival on the wall clock
        self.pops.append(Pop(arrived, float(event["at"]), event["agent"], event["pbx"]))


# ------------------------------------------------------------------ the whole bed
@dataclass
class Bed:
    daemon: Daemon
    http_port: int
    database_url: str
    amis: dict[str, Ami]
    sidebars: Sidebars
    workdir: Path

    async def metrics(self) -> str:
        async with self.sidebars.session.get(f"http://127.0.0.1:{self.http_port}/metrics") as reply:
            return await reply.text()

    async def quiet(self, within_s: float = 30) -> int:
        """Wait until both PBXes are without channels (the previous phase's calls gone);
        hang up what is still up after ``within_s``, and say how many. Why: a SIPp caller
        that aborts a call (an unexpected message on an overloaded machine) sends no BYE,
        and the sandbox has no RTP timeout, so its channel, and the agent bridged to it,
        would stay up through every later phase."""
        deadline = time.monotonic() + within_s
        while True:
            up = {
                name: await ami.list_action("CoreShowChannels") for name, ami in self.amis.items()
            }
            if not any(up.values()) or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        for name, channels in up.items():
            for channel in channels:
                await self.amis[name].action("Hangup", Channel=channel["Channel"])
        for ami in self.amis.values():
            ami.events.clear()
        return sum(len(channels) for channels in up.values())


@contextlib.asynccontextmanager
async def two_pbx_bed(options: BedOptions) -> AsyncIterator[Bed]:
    """Stores, ``cti serve`` following a (home) and b, both sandboxes (under the lock),
    six SIPp phones on each, AMI to each and twelve sidebars; all stopped on the way out."""
    password = secrets.token_urlsafe(12)
    keys = {pbx.name: PbxSecrets.draw() for pbx in PBXES}
    if options.redis_url.rstrip("/").endswith("/0"):
        raise BenchError("refusing Redis db 0: the bench flushes its db")
    async with contextlib.AsyncExitStack() as stack:
        progress("database: template copy, migrate, seed-demo")
        url = await stack.enter_async_context(bench_database(options, password))
        await flush_redis(options.redis_url)
        http_port, plan_cache = free_port(), options.workdir / "routing-plan.toml"
        env = {
            "CTI_DATABASE_URL": url,
            "CTI_REDIS_URL": options.redis_url,
            "CTI_PLAN_CACHE": str(plan_cache),
            "CTI_LOG_LEVEL": "warning",
            "CTI_PBXES": cti_pbxes(*(pbx.name for pbx in PBXES)),
            "CTI_AMI_SECRET": keys[HOME.name].ami_secret,
            f"CTI_AMI_SECRET{SECOND.env_suffix}": keys[SECOND.name].ami_secret,
            "CTI_SESSION_SECRET": secrets.token_hex(32),
            "CTI_HTTP_BIND": f"127.0.0.1:{http_port}",
            "CTI_CALL_DATA_TTL_S": "600",
        }
        progress("cti serve (CTI_PBXES=a,b)")
        daemon = await Daemon.start(
            port=free_port(), env=env, log=options.workdir / "daemon.log", ready_file=plan_cache
        )
        stack.push_async_callback(daemon.stop)
        await stack.enter_async_context(e2e_lock())
        for pbx in PBXES:  # a first: each renders a trunk to the other
            progress(f"asterisk-sandbox --pbx {pbx.name} up")
            await sandbox("up", pbx, keys[pbx.name], daemon.addr)
            stack.push_async_callback(sandbox, "down", pbx, keys[pbx.name], daemon.addr)
        amis: dict[str, Ami] = {}
        for pbx in PBXES:
            ami = await Ami.connect("127.0.0.1", pbx.ami_port, AMI_USER, keys[pbx.name].ami_secret)
            stack.push_async_callback(ami.close)
            await ami.action("Events", EventMask="agent")  # AgentConnect; not every event
            amis[pbx.name] = ami
            phones_dir = options.workdir / f"phones-{pbx.name}"
            phones_dir.mkdir(exist_ok=True)
            phones = Agents(phones_dir, keys[pbx.name].agent_passwords, pbx=pbx)
            stack.push_async_callback(phones.stop_all)
            await phones.start(*AGENTS, ring_ms=options.agent_ring_ms)
        progress("both PBXes up, 2 x 6 phones registered; sidebars logging in")
        sidebars = Sidebars()
        stack.push_async_callback(sidebars.close)
        await sidebars.log_in(
            http_port, [(*sidebar_user(a, pbx), password) for pbx in PBXES for a in AGENTS]
        )
        yield Bed(daemon, http_port, url, amis, sidebars, options.workdir)
