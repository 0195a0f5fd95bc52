"""Pop latency: AgentCalled on the AMI socket → the ``ringing`` frame on the agent's WebSocket.

    .venv/bin/python -m bench.pop_latency            # full run, about 2.5 minutes
    .venv/bin/python -m bench.pop_latency --quick    # smoke run, about 30 s
    .venv/bin/python -m bench.pop_latency --loads 100x100 --instances 2 --json

What issue 5 asks: the time from Asterisk's ``AgentCalled`` to the pop frame arriving at
the agent's browser, p50 and p99, with 20 and 100 agents receiving pops at once, with one
daemon instance and with two; target p99 under 50 ms end to end.

Processes (each its own event loop, uvloop where installed, as ``cti serve`` runs):

* **sender**: tests/fakes/ami_server.FakeAmi, playing Asterisk. Every call is a copy of
  the recorded tests/fixtures/ami/answered_call.txt (33 events: the caller's leg, queue
  join, the member leg's Newchannel, AgentCalled, DialBegin, ..., AgentConnect, bridge,
  hangups) with the member renamed to one of the N bench agents, round-robin
  (``PJSIP/2001`` → ``PJSIP/b0007``, ``Agent 2001`` → ``Agent b0007``, in every header
  that names it) and its channels, Uniqueids, Linkedids and CTI_CALL_ID renamed per copy
  (tests/unit/ami_replay.Renamer). Calls start at a steady rate; pauses in a call longer
  than ``--max-gap`` (0.1 s) are cut, so a call lasts 0.3 s. Each write holding an
  AgentCalled is stamped just before ``write()`` (bench/ringing_latency.play).
* **A**: follows AMI and publishes: what cti/daemon.py's ``CallFollowing`` wires minus
  PostgreSQL (AmiClient → CallTracker, leader through the Lease → Outbox →
  EventPublisher → Redis Streams; bench/ringing_latency.CtiPipeline). With **one
  instance** A also serves the HTTP app (cti.screenpop.app.build_app on A's own Redis
  client, as ``cti serve`` does); with **two**, process **B** serves it alone (no AMI,
  no lease, as ``cti screenpop`` without call control) and every pop crosses Redis from
  A's publish to B's blocking ``XREAD``.
* **client**: one process holding the N WebSockets (aiohttp ``ws_connect`` to
  ``/ws?token=...``, one per agent, tokens minted with ``Sessions`` and a random
  secret); each ``ringing`` frame is stamped as the socket hands it over.

Latency = client's stamp − sender's stamp, matched by the event's ``channel`` (the
AgentCalled's DestChannel). Both are ``CLOCK_MONOTONIC``, one clock for every process of
a Linux machine. Only AgentCalleds scheduled inside the measured window count: calls
start ``--warmup`` seconds before it and go on 0.3 s after it.

**Floor**, in the same run and the same processes: A's sink replaced by one that
``XADD``\\ s each AgentCalled to the agent's stream (``cti:events:agent:<Interface>``,
one round trip awaited in ``apply``; no model, tracker, outbox or Lua), with the same
HTTP app, WebSocket and client. Per configuration the phases run floor, cti, cti,
floor (``--rounds`` 2; ``--quick``: 1), the measured ``--duration`` split between them.

Where the time goes, from stamps taken in A and in the HTTP process: ``ami→sink``
(socket, parse, the AMI client's queue), ``sink→pub`` (model, tracker, the Outbox),
``pub→xread`` (publish_many called → the socket's blocking XREAD returned it in the HTTP
process; the HTTP app's readers are the default ones plus that stamp, through
build_app's ``open_reader``), ``xread→ws`` (frame built, sent, received by the client),
and ``pub call`` (publish_many's whole duration). The table's ``other`` column is the
rest of the machine's busy CPU meanwhile (/proc/stat minus the bench's processes and
Redis): the noise of a shared machine; rows over 50 % of a core are listed in a note.

Needs Redis on 127.0.0.1:6379 (db 12, ``--redis-url``; flushed before every phase and at
the end) and PostgreSQL on 127.0.0.1:5432 (``--pg-server``): a throwaway database
``cti_bench_pop_<hex>`` is migrated (cti.db.migrate), given the bench agents, and
dropped at the end. Prints a table; ``--json [PATH]`` also writes the results (default
bench/results/pop-<UTC timestamp>.json). Exit 0; 2 when the bench cannot run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import os
import platform
import re
import secrets
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bench.ringing_latency import (
    AMI_SECRET,
    AMI_USER,
    EVENT_TTL_S,
    RINGING_MARK,
    TAIL_S,
    BenchError,
    Child,
    CtiPipeline,
    FloorSink,
    Pipeline,
    Schedule,
    Stamps,
    dest_channel,
    flush_redis,
    load_captures,
    loop_factory,
    now,
    poll_until,
    progress,
    redis_client,
    redis_cpu_s,
    run_sender,
    summary_ms,
)
from cti.ami.client import AmiClient
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

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
DEFAULT_PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
CAPTURE = "answered_call"
#: The capture's member in every header that names it: ``PJSIP/2001`` (Channel,
#: DestChannel, Interface, StateInterface, DialString), ``2001`` (caller id numbers),
#: ``Agent 2001`` (MemberName, caller id names).
CAPTURE_MEMBER = re.compile(rb"(: (?:PJSIP/|Agent )?)2001(?=-|\r\n)")
TARGET_P99_MS = 50.0
#: A row during which the rest of the machine kept more than this share of one core busy
#: is flagged: its tail is other tenants' (2 cores in all), compare it with its floor.
NOISY_OTHER_PCT = 50.0
SESSION_TTL_S = 3600
POOL_SIZE = 4  # the app's PostgreSQL pool (min 0: the WebSocket path never uses it)
CONNECT_TIMEOUT_S = 30.0
COLLECT_TIMEOUT_S = 5.0  # after the sender's last write, for frames still on their way
LOADS_FULL = ((20, 20), (20, 100), (100, 20), (100, 100))  # (agents, calls/s)
LOADS_QUICK = ((20, 20), (100, 100))


def host_busy_s() -> float | None:
    """CPU-seconds every core of the machine spent busy since boot (steal included)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def agent_names(count: int) -> list[tuple[str, str]]:
    """(username, endpoint) of the bench agents: ``b0001``, ``PJSIP/b0001``, ..."""
    return [(f"b{i:04d}", f"PJSIP/b{i:04d}") for i in range(1, count + 1)]


# -- options -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    loads: tuple[tuple[int, int], ...]  # (agents, calls/s)
    instances: tuple[int, ...]
    duration_s: float
    warmup_s: float
    max_gap_s: float
    rounds: int
    redis_url: str
    pg_server: str
    json_path: Path | None
    quick: bool


def _loads(text: str) -> tuple[tuple[int, int], ...]:
    loads = []
    for part in text.split(","):
        agents, sep, rate = part.strip().partition("x")
        if not sep or not agents.isdigit() or not rate.isdigit():
            raise argparse.ArgumentTypeError(f"not AGENTSxRATE: {part!r}")
        if not 1 <= int(agents) <= 9999 or int(rate) < 1:
            raise argparse.ArgumentTypeError("agents 1..9999, rate >= 1")
        loads.append((int(agents), int(rate)))
    return tuple(loads)


def _instances(text: str) -> tuple[int, ...]:
    values = tuple(part.strip() for part in text.split(",") if part.strip())
    if not values or any(v not in ("1", "2") for v in values):
        raise argparse.ArgumentTypeError("instances: 1, 2 or 1,2")
    return tuple(int(v) for v in values)


def parse_options(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pop_latency", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="smoke run, under 40 s")
    parser.add_argument(
        "--loads",
        type=_loads,
        help="AGENTSxCALLS_PER_S, comma separated (20x20,20x100,100x20,100x100;"
        " --quick: 20x20,100x100)",
    )
    parser.add_argument("--instances", type=_instances, help="1, 2 or 1,2 (1,2)")
    parser.add_argument("--duration", type=float, help="measured seconds per row (6; quick 2)")
    parser.add_argument("--warmup", type=float, help="seconds of calls before it (1; quick 0.5)")
    parser.add_argument(
        "--max-gap", type=float, default=0.1, help="longest pause inside a call, s (0.1)"
    )
    parser.add_argument("--rounds", type=int, help="floor/cti alternations per row (2; quick 1)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument(
        "--pg-server",
        default=os.environ.get("CTI_TEST_PG", DEFAULT_PG_SERVER),
        help="PostgreSQL server URL without a database (a throwaway one is created)",
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="",
        metavar="PATH",
        help="write the results (default bench/results/pop-<ts>.json)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    duration = args.duration if args.duration is not None else (2.0 if quick else 6.0)
    warmup = args.warmup if args.warmup is not None else (0.5 if quick else 1.0)
    rounds = args.rounds if args.rounds is not None else (1 if quick else 2)
    if duration <= 0 or warmup < 0 or args.max_gap <= 0 or rounds < 1:
        parser.error("--duration and --max-gap must be > 0, --warmup >= 0, --rounds >= 1")
    if urlsplit(args.redis_url).path.strip("/") in ("", "0"):
        parser.error("refusing Redis db 0: the bench flushes its db (use e.g. /12)")
    if urlsplit(args.pg_server).path.strip("/"):
        parser.error("--pg-server is a server URL without a database name")
    json_path: Path | None = None
    if args.json is not None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        json_path = Path(args.json) if args.json else BENCH_DIR / "results" / f"pop-{stamp}.json"
    return Options(
        loads=args.loads or (LOADS_QUICK if quick else LOADS_FULL),
        instances=args.instances or (1, 2),
        duration_s=duration,
        warmup_s=warmup,
        max_gap_s=args.max_gap,
        rounds=rounds,
        redis_url=args.redis_url,
        pg_server=args.pg_server.rstrip("/"),
        json_path=json_path,
        quick=quick,
    )


# -- the traffic (sender side) ------------------------------------------------------------
@dataclass(frozen=True)
class PopSpec:
    tag: str  # unique per phase: every channel of the phase carries it
    agents: int
    rate: int
    warmup_s: float
    duration_s: float
    tail_s: float


class AgentCalls:
    """The capture as a call to any bench agent: one Renamer per agent, made on demand."""

    def __init__(self, max_gap_s: float) -> None:
        capture = next(c for c in load_captures(max_gap_s) if c.name == CAPTURE)
        self.offsets = capture.offsets
        _, blocks = ami_replay.split_blocks(ami_replay.load(CAPTURE))
        # The same blocks load_captures keeps, so that the offsets line up.
        self._blocks = [
            block
            for block in blocks
            if ami_replay.is_event_block(block) and not block.startswith(b"Event: FullyBooted\r\n")
        ]
        if len(self._blocks) != len(self.offsets):
            raise BenchError(f"{CAPTURE}: blocks and offsets disagree")
        self._renamers: dict[int, ami_replay.Renamer] = {}

    def renamer(self, agent: int) -> ami_replay.Renamer:
        renamer = self._renamers.get(agent)
        if renamer is None:
            name = agent_names(agent)[-1][0].encode()
            blocks = [CAPTURE_MEMBER.sub(rb"\g<1>" + name, block) for block in self._blocks]
            renamer = self._renamers[agent] = ami_replay.Renamer(blocks)
        return renamer


def build_schedule(calls: AgentCalls, spec: PopSpec) -> Schedule:
    """Call k starts at k / rate and rings agent k mod N (1-based names)."""
    window = (spec.warmup_s, spec.warmup_s + spec.duration_s)
    end = window[1] + spec.tail_s
    items: list[tuple[float, int, int, bytes]] = []
    copy = 0
    while (start := copy / spec.rate) < end:
        renamer = calls.renamer(copy % spec.agents + 1)
        blocks = ami_replay.split_blocks(renamer.render(f"{spec.tag}c{copy}x"))[1]
        for position, (block, offset) in enumerate(zip(blocks, calls.offsets, strict=True)):
            due = start + offset
            if due >= end:
                break
            items.append((due, copy, position, block))
        copy += 1
    items.sort(key=lambda item: item[:3])
    blocks = [item[3] for item in items]
    return Schedule(
        dues=[item[0] for item in items],
        blocks=blocks,
        channels=[dest_channel(block) for block in blocks],
        calls=copy,
        window=window,
    )


def sender_main(conn: Connection, max_gap_s: float) -> None:
    """The fake Asterisk's process (bench.ringing_latency's, with these calls)."""
    run_sender(conn, lambda: functools.partial(build_schedule, AgentCalls(max_gap_s)))


# -- the servers (A: pipeline [+ HTTP]; B: HTTP) --------------------------------------------
class AgentFloorPipeline(Pipeline):
    def __init__(self, client: aioredis.Redis, port: int, stamps: Stamps) -> None:
        super().__init__()
        self.sink = FloorSink(client, stamps, stream_prefix=AGENT_STREAM_PREFIX)
        self.ami = AmiClient(
            "127.0.0.1", port, AMI_USER, AMI_SECRET, events_sink=self.sink, id_prefix="floor"
        )

    async def start(self) -> None:
        self._spawn(self.ami.run(self._stop), "ami")
        await self._until(lambda: self.sink.up, "AMI not up")


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
            self.pipeline = AgentFloorPipeline(self.client, spec.ami_port, self.stamps)
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
            "published": 0,
            "problems": {},
        }
        if isinstance(pipeline, CtiPipeline):
            stats = pipeline.model.stats
            result["published"] = pipeline.publisher.published
            result["problems"] = {
                name: value
                for name, value in (
                    ("unknown", stats.unknown),
                    ("late_channels", stats.late_channels),
                    ("late_events", stats.late_events),
                    ("unattributed", stats.unattributed),
                    ("call_id_conflicts", stats.call_id_conflicts),
                )
                if value
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
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops us
    configure_logging("console", "warning")
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_server(conn))


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
        records = self.records
        while True:
            msg = await ws.receive()
            stamp = now()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
            self.frames += 1
            frame = json.loads(msg.data)
            event = frame.get("event") if frame.get("type") == "event" else None
            if isinstance(event, dict) and event.get("event") == "ringing":
                records.append((event["channel"], stamp))
                if event.get("agent") != endpoint:
                    self.wrong_agent += 1
        if not self.closing:
            self.closed_early += 1

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
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops us
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_client(conn))


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


# -- one phase ---------------------------------------------------------------------------
SEGMENTS = ("ami_to_sink", "sink_to_publish", "publish_to_xread", "xread_to_ws", "publish_call")


@dataclass(frozen=True)
class Setup:
    instances: int
    agents: int
    rate: int

    @property
    def label(self) -> str:
        return f"{self.instances} inst {self.agents:>3} agents {self.rate:>3}/s"


@dataclass
class Kids:
    sender: Child
    server_a: Child
    server_b: Child
    client: Child
    ami_port: int = 0


@dataclass
class PhaseRun:
    setup: Setup
    target: str  # floor | cti
    calls: int
    events: int
    pops: int  # AgentCalled written inside the measured window
    latencies: list[float]
    segments: dict[str, list[float]]
    taken_in: int
    span_s: float  # mark -> everything collected
    play_s: float  # the sender's first write -> last write
    cpu_a_s: float
    cpu_b_s: float | None
    cpu_client_s: float
    redis_cpu_s: float | None
    other_s: float | None  # the machine's busy CPU minus the bench's processes and Redis
    lag_p99_ms: float
    buffered_writes: int
    published: int
    frames: int
    problems: dict[str, Any]


@dataclass
class PhaseResult:
    instances: int
    agents: int
    rate: int
    target: str
    rounds: int
    calls: int
    events: int
    pops: int
    received: int
    events_per_s: float
    cpu_a_pct: float
    cpu_b_pct: float | None
    cpu_client_pct: float
    redis_cpu_pct: float | None
    other_pct: float | None
    latency_ms: dict[str, float | None]
    round_p99_ms: list[float | None]  # each round's own p99: a noisy round shows here
    segments_ms: dict[str, dict[str, float | None]]
    send_lag_p99_ms: float
    buffered_writes: int
    published: int
    frames: int
    problems: dict[str, Any] = field(default_factory=dict)


async def run_phase(
    index: int,
    setup: Setup,
    target: str,
    options: Options,
    kids: Kids,
    tokens: Sequence[tuple[str, str]],
    database_url: str,
    secret: bytes,
) -> PhaseRun:
    duration = options.duration_s / options.rounds
    spec = PopSpec(f"p{index}", setup.agents, setup.rate, options.warmup_s, duration, TAIL_S)
    await flush_redis(options.redis_url)  # nothing of the last phase: empty streams, no lease
    prepared = await kids.sender.ask("prepare", spec, timeout_s=120)
    two = setup.instances == 2
    server = ServerSpec(
        target=target,
        http=not two,
        ami_port=kids.ami_port,
        redis_url=options.redis_url,
        database_url=database_url,
        secret=secret,
    )
    try:
        started = await kids.server_a.ask("start", server)
        if two:
            started = await kids.server_b.ask(
                "start", ServerSpec(None, True, 0, options.redis_url, database_url, secret)
            )
        await kids.client.ask(
            "connect", (started["http_port"], tokens[: setup.agents]), CONNECT_TIMEOUT_S + 5
        )
        await kids.server_a.ask("mark")
        if two:
            await kids.server_b.ask("mark")
        gc.collect()
        redis_before, host_before, main_before = redis_cpu_s(), host_busy_s(), time.process_time()
        begun = now()
        done = await kids.sender.ask("go", timeout_s=options.warmup_s + duration + TAIL_S + 60)
        wanted = {channel: stamp for channel, stamp, measured in done["sent"] if measured}
        seen: dict[str, float] = {}
        deadline = now() + COLLECT_TIMEOUT_S
        browsers: dict[str, Any] = {}
        while True:
            browsers = await kids.client.ask("flush")
            for channel, stamp in browsers["records"]:
                seen.setdefault(channel, stamp)
            if wanted.keys() <= seen.keys() or now() > deadline:
                break
            await asyncio.sleep(0.05)
        span = now() - begun
        redis_after, host_after, main_after = redis_cpu_s(), host_busy_s(), time.process_time()
        a = await kids.server_a.ask("drain", done["events"], timeout_s=COLLECT_TIMEOUT_S + 10)
        b = await kids.server_b.ask("drain", 0) if two else None
    finally:
        with contextlib.suppress(BenchError, OSError):
            await kids.client.ask("close")
        with contextlib.suppress(BenchError, OSError):
            await kids.server_a.ask("end")
        if two:
            with contextlib.suppress(BenchError, OSError):
                await kids.server_b.ask("end")
    http = b if b is not None else a
    latencies: list[float] = []
    segments: dict[str, list[float]] = {name: [] for name in SEGMENTS}
    for channel, sent_at in wanted.items():
        received_at = seen.get(channel)
        if received_at is None:
            continue
        latencies.append(received_at - sent_at)
        applied = a["apply"].get(channel)
        published = a["publish"].get(channel)
        xread = http["xread"].get(channel)
        if applied is None or published is None or xread is None:
            continue
        segments["ami_to_sink"].append(applied - sent_at)
        segments["sink_to_publish"].append(published[0] - applied)
        segments["publish_to_xread"].append(xread - published[0])
        segments["xread_to_ws"].append(received_at - xread)
        segments["publish_call"].append(published[1] - published[0])
    problems: dict[str, Any] = dict(a["problems"])
    if not a["drained"]:
        problems["not_drained"] = 1
    for name in ("wrong_agent", "closed_early"):
        if browsers.get(name):
            problems[name] = browsers[name]
    redis_used = None if redis_before is None or redis_after is None else redis_after - redis_before
    other = None
    if host_before is not None and host_after is not None and redis_used is not None:
        ours = (
            a["cpu_s"]
            + (b["cpu_s"] if b is not None else 0.0)
            + browsers.get("cpu_s", 0.0)
            + done["cpu_s"]
            + (main_after - main_before)
            + redis_used
        )
        other = max(0.0, host_after - host_before - ours)
    return PhaseRun(
        setup=setup,
        target=target,
        calls=prepared["calls"],
        events=done["events"],
        pops=len(wanted),
        latencies=latencies,
        segments=segments,
        taken_in=a["taken_in"],
        span_s=span,
        play_s=done["span_s"],
        cpu_a_s=a["cpu_s"],
        cpu_b_s=b["cpu_s"] if b is not None else None,
        cpu_client_s=browsers.get("cpu_s", 0.0),
        redis_cpu_s=redis_used,
        other_s=other,
        lag_p99_ms=done["lag_p99_ms"],
        buffered_writes=done["buffered_writes"],
        published=a["published"],
        frames=browsers.get("frames", 0),
        problems=problems,
    )


def aggregate(runs: Sequence[PhaseRun]) -> PhaseResult:
    span = sum(run.span_s for run in runs)
    problems: dict[str, Any] = {}
    for run in runs:
        for name, value in run.problems.items():
            if isinstance(value, dict):
                merged = problems.setdefault(name, {})
                for key, count in value.items():
                    merged[key] = merged.get(key, 0) + count
            else:
                problems[name] = problems.get(name, 0) + value

    def pct(seconds: float) -> float:
        return round(100 * seconds / span, 1)

    redis_cpu = [run.redis_cpu_s for run in runs]
    other = [run.other_s for run in runs]
    cpu_b = [run.cpu_b_s for run in runs]
    setup = runs[0].setup
    return PhaseResult(
        instances=setup.instances,
        agents=setup.agents,
        rate=setup.rate,
        target=runs[0].target,
        rounds=len(runs),
        calls=sum(run.calls for run in runs),
        events=sum(run.events for run in runs),
        pops=sum(run.pops for run in runs),
        received=sum(len(run.latencies) for run in runs),
        events_per_s=round(sum(run.taken_in for run in runs) / sum(r.play_s for r in runs), 1),
        cpu_a_pct=pct(sum(run.cpu_a_s for run in runs)),
        cpu_b_pct=None if None in cpu_b else pct(sum(filter(None, cpu_b))),
        cpu_client_pct=pct(sum(run.cpu_client_s for run in runs)),
        redis_cpu_pct=None if None in redis_cpu else pct(sum(filter(None, redis_cpu))),
        other_pct=None if None in other else pct(sum(filter(None, other))),
        latency_ms=summary_ms([x for run in runs for x in run.latencies]),
        round_p99_ms=[summary_ms(list(run.latencies))["p99"] for run in runs],
        segments_ms={
            name: summary_ms([x for run in runs for x in run.segments[name]]) for name in SEGMENTS
        },
        send_lag_p99_ms=round(max(run.lag_p99_ms for run in runs), 3),
        buffered_writes=sum(run.buffered_writes for run in runs),
        published=sum(run.published for run in runs),
        frames=sum(run.frames for run in runs),
        problems=problems,
    )


def _ratio(ours: float | None, floor: float | None) -> float | None:
    return round(ours / floor, 2) if ours is not None and floor else None


def passed(phase: PhaseResult) -> bool:
    p99 = phase.latency_ms["p99"]
    return p99 is not None and p99 < TARGET_P99_MS and phase.received == phase.pops


async def run_bench(options: Options) -> dict[str, Any]:
    configure_logging("console", "warning")  # as the route bench runs the daemon
    max_agents = max(agents for agents, _rate in options.loads)
    secret = secrets.token_bytes(32)
    sessions = Sessions(secret, SESSION_TTL_S)
    tokens = []
    for username, endpoint in agent_names(max_agents):
        token, _claims = sessions.issue(
            username=username, display_name=f"Agent {username}", endpoint=endpoint, role="agent"
        )
        tokens.append((endpoint, token))
    await flush_redis(options.redis_url)
    meta: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loop": "uvloop" if loop_factory() else "asyncio",
        "loadavg_start": os.getloadavg()[0],
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "capture": CAPTURE,
        "clock": "CLOCK_MONOTONIC across processes",
    }
    started = now()
    database = await create_database(options.pg_server, max_agents)
    database_url = f"{options.pg_server}/{database}"
    kids: Kids | None = None
    phases: list[PhaseResult] = []
    try:
        kids = Kids(
            sender=Child("sender", sender_main, options.max_gap_s),
            server_a=Child("server-a", server_main),
            server_b=Child("server-b", server_main),
            client=Child("client", client_main),
        )
        kids.ami_port = await kids.sender.receive(30)
        for kid in (kids.server_a, kids.server_b, kids.client):
            await kid.receive(30)
        index = 0
        for instances in options.instances:
            for agents, rate in options.loads:
                setup = Setup(instances, agents, rate)
                runs: dict[str, list[PhaseRun]] = {"floor": [], "cti": []}
                for round_ in range(options.rounds):
                    for target in ("floor", "cti") if round_ % 2 == 0 else ("cti", "floor"):
                        progress(f"{setup.label}, {target}, round {round_ + 1} ...")
                        run = await run_phase(
                            index, setup, target, options, kids, tokens, database_url, secret
                        )
                        lat = summary_ms(list(run.latencies))
                        other = (
                            "-" if run.other_s is None else f"{100 * run.other_s / run.span_s:.0f}%"
                        )
                        progress(
                            f"  {len(run.latencies)}/{run.pops} pops, p50 {lat['p50']} ms,"
                            f" p99 {lat['p99']} ms, max {lat['max']} ms, other {other}"
                        )
                        runs[target].append(run)
                        index += 1
                phases += [aggregate(runs["floor"]), aggregate(runs["cti"])]
    finally:
        if kids is not None:
            for kid in (kids.client, kids.server_a, kids.server_b, kids.sender):
                kid.stop()
        with contextlib.suppress(RedisError, OSError):
            await flush_redis(options.redis_url)
        with contextlib.suppress(asyncpg.PostgresError, OSError):
            await drop_database(options.pg_server, database)
    meta["loadavg_end"] = os.getloadavg()[0]
    meta["wall_s"] = round(now() - started, 1)
    ratios = []
    for i in range(0, len(phases), 2):
        floor, cti = phases[i], phases[i + 1]
        ratios.append(
            {
                "instances": cti.instances,
                "agents": cti.agents,
                "rate": cti.rate,
                "p50": _ratio(cti.latency_ms["p50"], floor.latency_ms["p50"]),
                "p99": _ratio(cti.latency_ms["p99"], floor.latency_ms["p99"]),
            }
        )
    ctis = [p for p in phases if p.target == "cti"]
    target = {
        "p99_ms_under": TARGET_P99_MS,
        "passed": all(passed(p) for p in ctis),
        "worst_p99_ms": max((p.latency_ms["p99"] or 0.0) for p in ctis) if ctis else None,
    }
    return {
        "meta": meta,
        "phases": [asdict(p) for p in phases],
        "ratios": ratios,
        "target": target,
    }


# -- output ------------------------------------------------------------------------------
def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def render(report: dict[str, Any]) -> str:
    meta, opts = report["meta"], report["meta"]["options"]
    out = [
        f"pop latency {meta['started_at']}  {meta['cpus']} CPUs  python {meta['python']}"
        f" ({meta['loop']})  load avg {meta['loadavg_start']:.2f} -> {meta['loadavg_end']:.2f}"
        f"  {meta['wall_s']:g} s",
        f"{opts['duration_s']:g} s measured per row in {opts['rounds']} round(s), each after"
        f" {opts['warmup_s']:g} s of calls; {meta['capture']} calls, pauses cut to"
        f" {opts['max_gap_s']:g} s; latency = AgentCalled written -> ringing frame received"
        " on the agent's WebSocket (other process)",
        "",
        f"{'inst':>4} {'agents':>6} {'rate':>6} {'target':<6} {'pops':>5} {'lost':>4}"
        f" {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'cpu A':>6} {'cpu B':>6}"
        f" {'client':>6} {'redis':>6} {'other':>6} {'send lag':>8} {'p99<50':>6}",
    ]
    for p in report["phases"]:
        lat = p["latency_ms"]
        verdict = ""
        if p["target"] == "cti":
            ok = lat["p99"] is not None and lat["p99"] < TARGET_P99_MS
            verdict = "PASS" if ok and p["received"] == p["pops"] else "FAIL"
        out.append(
            f"{p['instances']:>4} {p['agents']:>6} {p['rate']:>4}/s {p['target']:<6}"
            f" {p['pops']:>5} {p['pops'] - p['received']:>4}"
            f" {_fmt(lat['p50'], '.2f'):>7} {_fmt(lat['p99'], '.2f'):>7}"
            f" {_fmt(lat['max'], '.2f'):>7} {_pct(p['cpu_a_pct']):>6} {_pct(p['cpu_b_pct']):>6}"
            f" {_pct(p['cpu_client_pct']):>6} {_pct(p['redis_cpu_pct']):>6}"
            f" {_pct(p['other_pct']):>6} {p['send_lag_p99_ms']:>6.1f}ms {verdict:>6}"
        )
    out += [
        "  (inst 1: A follows AMI and serves the WebSockets; inst 2: A follows AMI, B serves"
        " them. cpu: % of one core;",
        "   redis: every redis-server; other: the rest of the machine's busy CPU (other"
        " tenants, kernel, steal): the noise;",
        "   send lag: p99 of the fake Asterisk's writes behind schedule)",
        "",
        f"{'cti / floor':<27} {'p50':>6} {'p99':>6}",
    ]
    for r in report["ratios"]:
        label = Setup(r["instances"], r["agents"], r["rate"]).label
        out.append(f"{label:<27} {_fmt(r['p50'], '.2f') + 'x':>6} {_fmt(r['p99'], '.2f') + 'x':>6}")
    out += [
        "",
        "where the time goes, p50 / p99 ms (ami->sink: socket, parse, client queue; sink->pub:"
        " model, tracker, Outbox;",
        " pub->xread: publish called -> the socket's XREAD returned it in the HTTP process;"
        " xread->ws: frame sent and received; pub call: publish_many)",
        f"{'inst':>4} {'agents':>6} {'rate':>6} {'target':<6} {'ami->sink':>13}"
        f" {'sink->pub':>13} {'pub->xread':>13} {'xread->ws':>13} {'pub call':>13}",
    ]
    for p in report["phases"]:
        cells = [
            f"{_fmt(s['p50'], '.2f')} / {_fmt(s['p99'], '.2f')}" for s in p["segments_ms"].values()
        ]
        out.append(
            f"{p['instances']:>4} {p['agents']:>6} {p['rate']:>4}/s {p['target']:<6} "
            + " ".join(f"{c:>13}" for c in cells)
        )
    target = report["target"]
    out += [
        "",
        f"target p99 < {target['p99_ms_under']:g} ms end to end, nothing lost, every cti row:"
        f" {'PASS' if target['passed'] else 'FAIL'} (worst cti p99"
        f" {_fmt(target['worst_p99_ms'], '.2f')} ms)",
    ]
    notes: list[str] = []
    noisy: list[str] = []
    for p in report["phases"]:
        where = f"{p['instances']} inst {p['agents']} agents {p['rate']}/s {p['target']}"
        if p["received"] < p["pops"]:
            notes.append(f"note: {where}: {p['pops'] - p['received']} pops never received")
        if p["buffered_writes"]:
            notes.append(
                f"note: {where}: the AMI socket backed up {p['buffered_writes']} times"
                " (the pipeline fell behind)"
            )
        if p["problems"]:
            notes.append(f"note: {where}: {p['problems']}")
        if p["other_pct"] is not None and p["other_pct"] > NOISY_OTHER_PCT:
            noisy.append(f"{where} {p['other_pct']:.0f}%")
    if noisy:
        notes.append(
            f"note: noisy rows (the rest of the machine kept over {NOISY_OTHER_PCT:.0f}% of a core"
            f" busy): {'; '.join(noisy)}. Their tail is the machine's: compare cti with floor,"
            " or run again"
        )
    if notes:
        out += ["", *notes]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    # SIGTERM as Ctrl-C: the finally blocks stop the children and drop the database.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            report = runner.run(run_bench(options))
    except KeyboardInterrupt:
        progress("interrupted")
        return 130
    except (BenchError, RedisError, OSError, asyncpg.PostgresError) as exc:
        progress(f"pop_latency: {type(exc).__name__}: {exc}")
        return 2
    print(render(report))
    if options.json_path is not None:
        options.json_path.parent.mkdir(parents=True, exist_ok=True)
        options.json_path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nresults: {options.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
