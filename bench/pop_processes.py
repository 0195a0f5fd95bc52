"""The processes of bench.pop_latency besides the orchestrating one, and its database.

- **sender** (``sender_main``): bench/sender.py's fake Asterisk playing the recorded
  answered call, its member renamed to one bench agent per call, round-robin.
- **A** and **B** (``server_main``): per phase, the cti or floor pipeline and/or the
  sidebar's HTTP app (cti.screenpop.app.build_app), with stamps where the pop passes.
- **client** (``client_main``): N sidebars, one WebSocket per agent, stamping every
  ``ringing`` frame as the socket hands it over.

Each answers the orchestrator's commands over its pipe; see bench/README.md.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bench.harness import (
    EVENT_TTL_S,
    RINGING_MARK,
    BenchError,
    CtiPipeline,
    FloorPipeline,
    Pipeline,
    Stamps,
    child_process,
    now,
    poll_until,
    redis_client,
)
from bench.sender import (
    Capture,
    PhaseSpec,
    Schedule,
    build_schedule,
    event_blocks,
    load_captures,
    run_sender,
)
from cti.calldata.service import CallDataService
from cti.calldata.store import CallDataStore
from cti.calls.publisher import AGENT_STREAM_PREFIX, EventPublisher
from cti.db.migrate import migrate
from cti.logs import configure_logging
from cti.screenpop.agents import check_agent
from cti.screenpop.app import HttpServer, build_app
from cti.screenpop.auth import Sessions, hash_password
from cti.screenpop.context import WsLimits
from cti.screenpop.metrics import Metrics
from tests.unit import ami_replay

CAPTURE = "answered_call"
#: The capture's member in every header that names it: ``PJSIP/2001`` (Channel,
#: DestChannel, Interface, StateInterface, DialString), ``2001`` (caller id numbers),
#: ``Agent 2001`` (MemberName, caller id names).
CAPTURE_MEMBER = re.compile(rb"(: (?:PJSIP/|Agent )?)2001(?=-|\r\n)")
SESSION_TTL_S = 3600
POOL_SIZE = 4  # the app's PostgreSQL pool (min 0: the WebSocket path never uses it)
CONNECT_TIMEOUT_S = 30.0
COLLECT_TIMEOUT_S = 5.0  # after the sender's last write, for frames still on their way


def agent_names(count: int) -> list[tuple[str, str]]:
    """(username, endpoint) of the bench agents: ``b0001``, ``PJSIP/b0001``, ..."""
    return [(f"b{i:04d}", f"PJSIP/b{i:04d}") for i in range(1, count + 1)]


# -- the traffic (sender side) ------------------------------------------------------------
@dataclass(frozen=True)
class PopSpec(PhaseSpec):
    agents: int


class AgentCalls:
    """The capture as a call to any bench agent: one Renamer per agent, made on demand."""

    def __init__(self, max_gap_s: float) -> None:
        capture = next(c for c in load_captures(max_gap_s) if c.name == CAPTURE)
        self.offsets = capture.offsets
        # The same blocks load_captures keeps, so that the offsets line up.
        self._blocks = event_blocks(ami_replay.load(CAPTURE))
        if len(self._blocks) != len(self.offsets):
            raise BenchError(f"{CAPTURE}: blocks and offsets disagree")
        self._calls: dict[int, Capture] = {}

    def to(self, agent: int) -> Capture:
        """The call, ringing bench agent ``agent`` (1-based)."""
        call = self._calls.get(agent)
        if call is None:
            name = agent_names(agent)[-1][0].encode()
            blocks = [CAPTURE_MEMBER.sub(rb"\g<1>" + name, block) for block in self._blocks]
            renamer = ami_replay.Renamer(blocks)
            call = self._calls[agent] = Capture(f"{CAPTURE}-{agent}", renamer, self.offsets, 1)
        return call


def agents_round_robin(calls: AgentCalls, spec: PopSpec) -> Schedule:
    """Call k starts at k / rate and rings agent k mod N (1-based names)."""
    return build_schedule(spec, lambda copy: calls.to(copy % spec.agents + 1))


def sender_main(conn: Connection, max_gap_s: float) -> None:
    """The fake Asterisk's process (bench.ringing_latency's, with these calls)."""
    run_sender(conn, lambda: functools.partial(agents_round_robin, AgentCalls(max_gap_s)))


# -- the servers (A: pipeline [+ HTTP]; B: HTTP) --------------------------------------------
class StampedReader(aioredis.Redis):
    """A WebSocket's Redis client (as cti.screenpop.ws.reader_factory makes it) that notes
    when its XREAD returned each ringing entry."""

    stamps: dict[str, float]

    async def xread(self, *args: Any, **kwargs: Any) -> Any:
        reply = await super().xread(*args, **kwargs)
        stamp = now()
        if reply:
            streams = reply.values() if isinstance(reply, dict) else [s[1] for s in reply]
            for entries in streams:
                for _entry_id, fields in entries:
                    payload = fields.get(b"e", b"")
                    if RINGING_MARK in payload:
                        self.stamps.setdefault(json.loads(payload)["channel"], stamp)
        return reply


def stamped_readers(client: aioredis.Redis, block_ms: int, stamps: dict[str, float]) -> Any:
    """cti.screenpop.ws.reader_factory, making :class:`StampedReader`\\ s."""
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "socket_timeout": block_ms / 1000 + 10}

    def open_reader() -> aioredis.Redis:
        reader = StampedReader.from_pool(
            aioredis.ConnectionPool(
                connection_class=pool.connection_class, max_connections=1, **kwargs
            )
        )
        assert isinstance(reader, StampedReader)
        reader.stamps = stamps
        return reader

    return open_reader


@dataclass(frozen=True)
class ServerSpec:
    target: str | None  # cti | floor | None (HTTP only)
    http: bool
    ami_port: int
    redis_url: str
    database_url: str
    secret: bytes


class ServerPhase:
    """One phase of a server process: its pipeline and/or HTTP app, started and stopped."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.stamps = Stamps()
        self.xread: dict[str, float] = {}
        self.client = redis_client(spec.redis_url)
        self.pipeline: Pipeline | None = None
        if spec.target == "cti":
            self.pipeline = CtiPipeline(self.client, spec.ami_port, self.stamps)
        elif spec.target == "floor":
            self.pipeline = FloorPipeline(
                self.client, spec.ami_port, self.stamps, stream_prefix=AGENT_STREAM_PREFIX
            )
        self.pool: asyncpg.Pool | None = None
        self.http: HttpServer | None = None
        self.events_before = 0
        self.cpu = time.process_time()

    async def start(self) -> dict[str, Any]:
        if self.spec.http:
            self.pool = asyncpg.create_pool(
                self.spec.database_url, min_size=0, max_size=POOL_SIZE, timeout=5
            )
            await self.pool
            publisher = (
                self.pipeline.publisher
                if isinstance(self.pipeline, CtiPipeline)
                else EventPublisher(self.client, ttl_s=EVENT_TTL_S)
            )
            limits = WsLimits()
            self.http = HttpServer(
                build_app(
                    pool=self.pool,
                    redis_client=self.client,
                    call_data=CallDataService(
                        CallDataStore(self.client, EVENT_TTL_S, pool=self.pool), publisher
                    ),
                    sessions=Sessions(self.spec.secret, SESSION_TTL_S),
                    metrics=Metrics(),
                    ws_limits=limits,
                    open_reader=stamped_readers(self.client, limits.block_ms, self.xread),
                )
            )
            await self.http.start("127.0.0.1", 0)
        if self.pipeline is not None:
            await self.pipeline.start()
        return {"http_port": self.http.port if self.http is not None else None}

    def mark(self) -> None:
        self.events_before = self.pipeline.ami.stats.events if self.pipeline else 0
        self.cpu = time.process_time()
        gc.collect()

    async def drain(self, events: int) -> dict[str, Any]:
        """Once the pipeline took in ``events`` and published them: what it saw."""
        pipeline = self.pipeline
        drained = pipeline is None or await poll_until(
            lambda: (
                pipeline.ami.stats.events - self.events_before >= events and not pipeline.backlog
            ),
            COLLECT_TIMEOUT_S,
        )
        result: dict[str, Any] = {
            "drained": drained,
            "cpu_s": time.process_time() - self.cpu,
            "taken_in": pipeline.ami.stats.events - self.events_before if pipeline else 0,
            "apply": self.stamps.apply,
            "publish": self.stamps.publish,
            "xread": self.xread,
            "published": pipeline.publisher.published if isinstance(pipeline, CtiPipeline) else 0,
            "problems": pipeline.problems() if pipeline is not None else {},
        }
        return result

    async def close(self) -> None:
        if self.http is not None:  # first, as the daemon does
            await self.http.stop()
        if self.pipeline is not None:
            await self.pipeline.close()
        if self.pool is not None:
            await self.pool.close()
        await self.client.aclose()


def server_main(conn: Connection) -> None:
    configure_logging("console", "warning")
    child_process(_server, conn)


async def _server(conn: Connection) -> None:
    conn.send(("ready", None))
    phase: ServerPhase | None = None
    try:
        while True:
            try:
                command, arg = await asyncio.to_thread(conn.recv)
            except EOFError:
                return
            try:
                if command == "start":
                    phase = ServerPhase(arg)
                    conn.send(("started", await phase.start()))
                elif command == "mark" and phase is not None:
                    phase.mark()
                    conn.send(("marked", None))
                elif command == "drain" and phase is not None:
                    conn.send(("drained", await phase.drain(arg)))
                elif command == "end":
                    if phase is not None:
                        await phase.close()
                    phase = None
                    conn.send(("ended", None))
                else:
                    return
            except (BenchError, RedisError, OSError, asyncpg.PostgresError) as exc:
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        if phase is not None:
            await phase.close()


# -- the browsers -------------------------------------------------------------------------
class Browsers:
    """N sidebars: one WebSocket per agent; each ringing frame stamped on arrival."""

    def __init__(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None)
        )
        self.sockets: list[aiohttp.ClientWebSocketResponse] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.records: list[tuple[str, float]] = []
        self.frames = 0
        self.wrong_agent = 0
        self.closed_early = 0
        self.closing = False
        self.cpu = time.process_time()

    async def connect(self, port: int, agents: Sequence[tuple[str, str]]) -> int:
        async def one(endpoint: str, token: str) -> None:
            ws = await self.session.ws_connect(
                f"http://127.0.0.1:{port}/ws", params={"token": token}, compress=0
            )
            hello = await ws.receive_json(timeout=CONNECT_TIMEOUT_S)
            if hello.get("type") != "hello" or hello["agent"]["endpoint"] != endpoint:
                raise BenchError(f"unexpected first frame for {endpoint}: {hello}")
            self.sockets.append(ws)
            self.tasks.append(asyncio.create_task(self._read(ws, endpoint)))

        await asyncio.gather(*(one(endpoint, token) for endpoint, token in agents))
        return len(self.sockets)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse, endpoint: str) -> None:
        while True:
            msg = await ws.receive()
            stamp = now()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            self.frames += 1
            frame = json.loads(msg.data)
            event = frame.get("event") if frame.get("type") == "event" else None
            if isinstance(event, dict) and event.get("event") == "ringing":
                self.ringing(event, stamp)
                if event.get("agent") != endpoint:
                    self.wrong_agent += 1
        if not self.closing:
            self.closed_early += 1

    def ringing(self, event: dict[str, Any], stamp: float) -> None:
        """A ``ringing`` frame arrived at ``stamp`` (:func:`now`): kept by channel."""
        self.records.append((event["channel"], stamp))

    def flush(self) -> dict[str, Any]:
        records, self.records = self.records, []
        return {
            "records": records,
            "cpu_s": time.process_time() - self.cpu,
            "frames": self.frames,
            "wrong_agent": self.wrong_agent,
            "closed_early": self.closed_early,
        }

    async def close(self) -> None:
        self.closing = True
        await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.session.close()


def client_main(conn: Connection) -> None:
    child_process(_client, conn)


async def _client(conn: Connection) -> None:
    conn.send(("ready", None))
    browsers: Browsers | None = None
    try:
        while True:
            try:
                command, arg = await asyncio.to_thread(conn.recv)
            except EOFError:
                return
            try:
                if command == "connect":
                    browsers = Browsers()
                    port, agents = arg
                    connected = await asyncio.wait_for(
                        browsers.connect(port, agents), CONNECT_TIMEOUT_S
                    )
                    browsers.cpu = time.process_time()
                    conn.send(("connected", connected))
                elif command == "flush" and browsers is not None:
                    conn.send(("records", browsers.flush()))
                elif command == "close":
                    if browsers is not None:
                        await browsers.close()
                    browsers = None
                    conn.send(("closed", None))
                else:
                    return
            except (BenchError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        if browsers is not None:
            await browsers.close()


# -- the database ---------------------------------------------------------------------------
async def create_database(pg_server: str, agents: int) -> str:
    """A migrated throwaway database holding the bench agents; its name."""
    name = f"cti_bench_pop_{secrets.token_hex(4)}"
    url = f"{pg_server}/{name}"
    await migrate(url)
    password_hash = hash_password(secrets.token_urlsafe(16))  # one hash serves them all
    rows = []
    for username, endpoint in agent_names(agents):
        display = f"Agent {username}"
        check_agent(username, endpoint, display, "agent")
        rows.append((username, display, endpoint, "agent", password_hash))
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.executemany(
            "INSERT INTO agents (username, display_name, endpoint, role, password_hash)"
            " VALUES ($1, $2, $3, $4, $5)",
            rows,
        )
    finally:
        await conn.close()
    return name


async def drop_database(pg_server: str, name: str) -> None:
    admin = await asyncpg.connect(f"{pg_server}/postgres", timeout=10)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
