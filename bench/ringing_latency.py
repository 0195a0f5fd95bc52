"""Ringing latency: AgentCalled on the AMI socket → the ``ringing`` entry readable in Redis.

    .venv/bin/python -m bench.ringing_latency            # full run, about 2 minutes
    .venv/bin/python -m bench.ringing_latency --quick    # smoke run, about 22 s
    .venv/bin/python -m bench.ringing_latency --rates 10,100 --duration 5 --json

Why: the ``ringing`` event is the one call event a person waits on (the agent's sidebar
shows who is calling while the phone rings), so what the issue asks for is its delay from
Asterisk's ``AgentCalled`` to the entry a sidebar's ``XREAD`` can see, under load, with
the floor that a socket and one Redis round trip set on this machine next to it.

Three processes, so that the reader and the fake Asterisk do not share an event loop
(or a core, when one is free) with the code under test:

* **sender**: tests/fakes/ami_server.FakeAmi in its own process and event loop, playing
  Asterisk. It plays the captures of tests/fixtures/ami as calls that start at a steady
  ``rate`` per second, every call a renamed copy (tests/unit/ami_replay.Renamer: its own
  channels, Uniqueids, Linkedids, CTI_CALL_ID; the same agents and queues) cycling
  through the captures (~50 events a call). Each event keeps its recorded offset from
  the one before, except that pauses longer than ``--max-gap`` (0.1 s: ringing, talking)
  are cut to it: the bursts Asterisk writes (the AgentCalled comes with the member
  leg's Newchannel, DialBegin, ... within a millisecond or two) arrive as recorded and a
  call lasts 0.2-0.8 s. Due events go out in one write per loop turn; each write holding
  an ``AgentCalled`` is stamped just before ``write()``, with the ``DestChannel`` it rings.
* **pipeline** (this process, on uvloop like ``cti serve``): what cti/daemon.py's
  ``CallFollowing`` wires, minus PostgreSQL: AmiClient → CallTracker (leader by the
  Lease on ``cti:ami:leader``) → Outbox → EventPublisher → Redis. The timeline writer
  and the data expiry are not wired (they are off the publish path). The lease task is
  started once AMI is up, which only saves its first 1 s retry.
* **reader**: its own process with a synchronous redis client, blocked in ``XREAD`` over
  every agent's stream; each ``ringing`` entry is stamped when ``XREAD`` returned it.

Latency = (reader's stamp) − (sender's write), matched by the payload's ``channel``
(the AgentCalled's DestChannel). Both stamps are ``CLOCK_MONOTONIC``, which on Linux is
one clock for every process of the machine (and, unlike ``time.time``, never stepped).
Only AgentCalled blocks scheduled inside the measured window count: calls start
``--warmup`` seconds before it (the load is steady once the first calls end) and go on
for a short tail after it (events past the tail are not sent).

**Floor**, measured in the same run: the same sender and AmiClient, the sink replaced by
one that ``XADD``\\ s every AgentCalled to ``bench:floor:agent:<Interface>`` (awaited
inside ``apply``): socket + parse + one round trip. The machine is shared and noisy, so
compare the cti / floor ratios; per rate the phases run floor, cti, cti, floor, ...
(``--rounds``, 2; ``--quick``: 1), the measured ``--duration`` split between them, so
that a drift of the machine's load hits both alike.

The pipeline's own stamps split the cti time: ``ami→sink`` (socket, parse, the client's
queue), ``sink→pub`` (model, tracker, waiting for the Outbox task to wake up or for the
batch in flight), ``pub→read`` (publish_many called → the reader has it) and ``pub call``
(publish_many's whole duration).

Needs Redis on 127.0.0.1:6379; uses db 12 (``--redis-url``), flushed at start and end.
Prints a table; ``--json [PATH]`` also writes the results (default
bench/results/ringing-<UTC timestamp>.json). Exit 0; 2 when the bench cannot run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import math
import multiprocessing
import os
import platform
import re
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from cti.ami.client import AmiClient
from cti.ami.protocol import Message
from cti.calls.events import CallEvent
from cti.calls.lease import Lease, instance_id
from cti.calls.model import CallModel
from cti.calls.publisher import STREAM_MAXLEN, EventPublisher, Outbox, agent_stream
from cti.calls.tracker import CallTracker
from cti.config import Config
from cti.daemon import create_redis
from cti.logs import configure_logging
from tests.fakes.ami_server import FakeAmi
from tests.unit import ami_replay

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
FLOOR_PREFIX = "bench:floor:agent:"
AMI_USER, AMI_SECRET = "cti", "s3cret"  # FakeAmi's defaults
LEASE_TTL_S = 5.0  # Config.ami_lease_ttl_s; the daemon renews every ttl / 5
EVENT_TTL_S = 600  # the publisher's seen/agents sets; costs the same as a day's
TAIL_S = 0.3  # calls keep starting this long after the measured window
READY_TIMEOUT_S = 10.0
DRAIN_TIMEOUT_S = 15.0  # the pipeline, after the sender's last write
COLLECT_TIMEOUT_S = 5.0  # the reader, once the pipeline has drained
RINGING_MARK = b'"event":"ringing"'


def now() -> float:
    """The one clock of every process here (see the module doc)."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where installed, as ``cti serve`` runs (cti/cli.py)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def poll_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    """Whether ``predicate`` came true within ``timeout_s`` (checked every 2 ms)."""
    deadline = now() + timeout_s
    while not predicate():
        if now() > deadline:
            return False
        await asyncio.sleep(0.002)
    return True


def redis_cpu_s() -> float | None:
    """CPU time of the machine's redis-server processes (None where /proc says nothing)."""
    total, found = 0.0, False
    with contextlib.suppress(OSError), os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                if Path(f"/proc/{entry.name}/comm").read_bytes().strip() != b"redis-server":
                    continue
                fields = Path(f"/proc/{entry.name}/stat").read_bytes().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            found = True
    return total if found else None


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- options -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    rates: tuple[int, ...]
    duration_s: float
    warmup_s: float
    max_gap_s: float
    rounds: int
    redis_url: str
    json_path: Path | None
    quick: bool


def _rates(text: str) -> tuple[int, ...]:
    try:
        rates = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not rates or min(rates) < 1:
        raise argparse.ArgumentTypeError("rates must be integers >= 1")
    return rates


def parse_options(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ringing_latency", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="smoke run, under 30 s")
    parser.add_argument("--rates", type=_rates, help="calls/s, comma separated (10,50,100,200)")
    parser.add_argument("--duration", type=float, help="measured seconds per target and rate (12)")
    parser.add_argument("--warmup", type=float, help="seconds of calls before it (1)")
    parser.add_argument(
        "--max-gap", type=float, default=0.1, help="longest pause inside a call, s (0.1)"
    )
    parser.add_argument(
        "--rounds", type=int, help="floor/cti alternations the duration is split into (2)"
    )
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument(
        "--json",
        nargs="?",
        const="",
        metavar="PATH",
        help="write the results (default bench/results/ringing-<ts>.json)",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    duration = args.duration if args.duration is not None else (2.0 if quick else 12.0)
    warmup = args.warmup if args.warmup is not None else 1.0
    rounds = args.rounds if args.rounds is not None else (1 if quick else 2)
    if duration <= 0 or warmup < 0 or args.max_gap <= 0 or rounds < 1:
        parser.error("--duration and --max-gap must be > 0, --warmup >= 0, --rounds >= 1")
    if urlsplit(args.redis_url).path.strip("/") in ("", "0"):
        parser.error("refusing Redis db 0: the bench flushes its db (use e.g. /12)")
    json_path: Path | None = None
    if args.json is not None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        json_path = (
            Path(args.json) if args.json else BENCH_DIR / "results" / f"ringing-{stamp}.json"
        )
    return Options(
        rates=args.rates or ((10, 50, 100) if quick else (10, 50, 100, 200)),
        duration_s=duration,
        warmup_s=warmup,
        max_gap_s=args.max_gap,
        rounds=rounds,
        redis_url=args.redis_url,
        json_path=json_path,
        quick=quick,
    )


# -- the traffic (sender side) ------------------------------------------------------------
@dataclass(frozen=True)
class PhaseSpec:
    tag: str  # unique per phase: every channel of the phase carries it
    rate: int
    warmup_s: float
    duration_s: float
    tail_s: float


@dataclass
class Capture:
    """One recording: its event blocks (renamable), their offsets in seconds from the
    first one, and how many customer calls it holds (distinct CTI_CALL_IDs, at least 1:
    interleaved_calls has 3)."""

    name: str
    renamer: ami_replay.Renamer
    offsets: list[float]
    calls: int


def load_captures(max_gap_s: float) -> list[Capture]:
    """Every fixture's event blocks but FullyBooted (the recording's login, no part of a
    call), at their recorded offsets except that no pause is longer than ``max_gap_s``
    (a block without a Timestamp goes with its predecessor)."""
    captures = []
    for name in ami_replay.fixture_names():
        data = ami_replay.load(name)
        _, blocks = ami_replay.split_blocks(data)
        events = [
            block
            for block in blocks
            if ami_replay.is_event_block(block) and not block.startswith(b"Event: FullyBooted\r\n")
        ]
        stamps = [ami_replay.block_timestamp(block) for block in events]
        first = next((stamp for stamp in stamps if stamp is not None), 0.0)
        offsets, offset, previous = [], 0.0, first
        for stamp in stamps:
            if stamp is not None and stamp > previous:
                offset += min(stamp - previous, max_gap_s)
                previous = stamp
            offsets.append(offset)
        calls = len(set(re.findall(rb"CTI_CALL_ID=([^\r\n]+)", data))) or 1
        captures.append(Capture(name, ami_replay.Renamer(events), offsets, calls))
    return captures


def watched_agents() -> list[str]:
    """Every member interface of the captures, as AgentCalled names it (the floor's
    streams) and as the model does (its StateInterface: the cti streams)."""
    agents: set[str] = set()
    for name in ami_replay.fixture_names():
        found = re.findall(rb"\r\n(?:Interface|StateInterface): ([^\r\n]+)", ami_replay.load(name))
        agents.update(value.decode() for value in found)
    return sorted(agents)


def dest_channel(block: bytes) -> str | None:
    """The DestChannel of an AgentCalled block, else None."""
    if not block.startswith(b"Event: AgentCalled\r\n"):
        return None
    start = block.index(b"\r\nDestChannel: ") + len(b"\r\nDestChannel: ")
    return block[start : block.index(b"\r\n", start)].decode()


@dataclass
class Schedule:
    dues: list[float]  # seconds from the start of the phase
    blocks: list[bytes]
    channels: list[str | None]  # the AgentCalled's DestChannel
    calls: int
    window: tuple[float, float]  # AgentCalled due inside it are measured


def build_schedule(captures: Sequence[Capture], spec: PhaseSpec) -> Schedule:
    """Copies of the captures in turn, each starting when the calls before it, at
    ``spec.rate`` calls per second, are done starting."""
    window = (spec.warmup_s, spec.warmup_s + spec.duration_s)
    end = window[1] + spec.tail_s
    items: list[tuple[float, int, int, bytes]] = []
    start = 0.0
    copy = calls = 0
    while start < end:
        capture = captures[copy % len(captures)]
        blocks = ami_replay.split_blocks(capture.renamer.render(f"{spec.tag}c{copy}x"))[1]
        for position, (block, offset) in enumerate(zip(blocks, capture.offsets, strict=True)):
            due = start + offset
            if due >= end:
                break
            items.append((due, copy, position, block))
        calls += capture.calls
        copy += 1
        start += capture.calls / spec.rate
    items.sort(key=lambda item: item[:3])
    blocks = [item[3] for item in items]
    return Schedule(
        dues=[item[0] for item in items],
        blocks=blocks,
        channels=[dest_channel(block) for block in blocks],
        calls=calls,
        window=window,
    )


async def play(fake: FakeAmi, schedule: Schedule) -> dict[str, Any]:
    """Write every block when due, all due blocks in one write; stamp AgentCalled writes."""
    sessions = fake.live
    if len(sessions) != 1:
        raise RuntimeError(f"expected one AMI session, found {len(sessions)}")
    writer = sessions[0].writer
    transport = writer.transport
    dues, blocks, channels = schedule.dues, schedule.blocks, schedule.channels
    low, high = schedule.window
    sent: list[tuple[str, float, bool]] = []
    lags: list[float] = []
    buffered = writes = size = 0
    total = len(dues)
    cpu = time.process_time()
    start = now() + 0.02
    i = 0
    while i < total:
        delay = start + dues[i] - now()
        if delay > 0:
            await asyncio.sleep(delay)
        due_by = now() - start
        j = i
        while j < total and dues[j] <= due_by:
            j += 1
        data = b"".join(blocks[i:j])
        # Stamped before: the woken reader of the socket may preempt us in write().
        stamp = now()
        writer.write(data)
        writes += 1
        size += len(data)
        lags.append(due_by - dues[i])
        for k in range(i, j):
            channel = channels[k]
            if channel is not None:
                sent.append((channel, stamp, low <= dues[k] < high))
        i = j
        if transport.get_write_buffer_size():
            buffered += 1  # the pipeline did not keep up with the socket
            await writer.drain()
    await writer.drain()
    lags.sort()
    return {
        "sent": sent,
        "events": total,
        "bytes": size,
        "writes": writes,
        "buffered_writes": buffered,
        "lag_p99_ms": 1000 * percentile(lags, 0.99),
        "lag_max_ms": 1000 * lags[-1],
        "span_s": now() - start,
        "cpu_s": time.process_time() - cpu,
    }


def run_sender(conn: Connection, make_build: Callable[[], Callable[[Any], Schedule]]) -> None:
    """The fake Asterisk's process: prepare / go / stop commands over ``conn``.
    ``make_build()`` (called in this process) gives the function that turns a
    ``prepare`` argument into a :class:`Schedule`; every benchmark shares the rest."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops us
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_serve_schedules(conn, make_build()))


def sender_main(conn: Connection, max_gap_s: float) -> None:
    run_sender(conn, lambda: functools.partial(build_schedule, load_captures(max_gap_s)))


async def _serve_schedules(conn: Connection, build: Callable[[Any], Schedule]) -> None:
    fake = await FakeAmi(username=AMI_USER, secret=AMI_SECRET).start()
    conn.send(("ready", fake.port))
    schedule: Schedule | None = None
    try:
        while True:
            try:
                command, arg = await asyncio.to_thread(conn.recv)
            except EOFError:
                return
            if command == "prepare":
                schedule = build(arg)
                conn.send(("prepared", {"events": len(schedule.dues), "calls": schedule.calls}))
            elif command == "go" and schedule is not None:
                try:
                    conn.send(("done", await play(fake, schedule)))
                except (RuntimeError, OSError) as exc:
                    conn.send(("error", f"{type(exc).__name__}: {exc}"))
                schedule = None
            else:
                return
    finally:
        await fake.close()


# -- the reader ------------------------------------------------------------------------
def reader_main(conn: Connection, redis_url: str, streams: Sequence[str]) -> None:
    """Blocks in XREAD over every stream; keeps (channel, stamp) of ``ringing`` entries
    and hands them over on ``flush``. Synchronous: nothing else runs in this process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops us
    client = redis.Redis.from_url(redis_url)
    client.ping()
    ids: dict[str, str | bytes] = {stream: "0-0" for stream in streams}
    records: list[tuple[str, float]] = []
    conn.send(("ready", None))
    cpu = time.process_time()
    try:
        while True:
            if conn.poll():
                command, _ = conn.recv()
                if command != "flush":
                    return
                conn.send(("records", (records, time.process_time() - cpu)))
                records = []
                cpu = time.process_time()
            answer = client.xread(ids, block=50)
            stamp = now()
            for stream, entries in answer:
                for _entry_id, fields in entries:
                    payload = fields.get(b"e", b"")
                    if RINGING_MARK in payload:
                        records.append((json.loads(payload)["channel"], stamp))
                ids[stream.decode()] = entries[-1][0]
    except EOFError:
        return
    finally:
        client.close()


# -- the pipelines -------------------------------------------------------------------------
@dataclass
class Stamps:
    """In-pipeline times by channel: AgentCalled handed to the sink; publish call/return."""

    apply: dict[str, float] = field(default_factory=dict)
    publish: dict[str, tuple[float, float]] = field(default_factory=dict)


class StampedSink:
    """The tracker, with the time each AgentCalled reaches it (one name test per event)."""

    def __init__(self, inner: CallTracker, stamps: Stamps) -> None:
        self._inner = inner
        self._stamps = stamps.apply

    def reset(self) -> None:
        self._inner.reset()

    def apply(self, msg: Message) -> None:
        if msg.name == "AgentCalled":
            self._stamps[msg.fields.get("destchannel", "")] = now()
        self._inner.apply(msg)

    def connected(self, up: bool) -> None:
        self._inner.connected(up)


class StampedPublisher(EventPublisher):
    """The publisher, with when each batch holding a ``ringing`` was sent and answered."""

    def __init__(self, client: aioredis.Redis, stamps: Stamps, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self._stamps = stamps.publish

    async def publish_many(self, events: Sequence[CallEvent], owner: str) -> None:
        start = now()
        await super().publish_many(events, owner)
        end = now()
        for event in events:
            if event.kind == "ringing":
                self._stamps[event.data["channel"]] = (start, end)


class FloorSink:
    """The floor: every AgentCalled straight into a stream (``stream_prefix`` + the
    member's interface), awaited inside ``apply``. bench.pop_latency uses it with the
    agents' own stream prefix, so that its WebSockets carry the floor's pops."""

    def __init__(
        self, client: aioredis.Redis, stamps: Stamps, stream_prefix: str = FLOOR_PREFIX
    ) -> None:
        self._redis = client
        self._stamps = stamps
        self._prefix = stream_prefix
        self.up = False

    def reset(self) -> None:
        pass

    async def apply(self, msg: Message) -> None:
        if msg.name != "AgentCalled":
            return
        fields = msg.fields
        channel = fields.get("destchannel", "")
        agent = fields.get("interface", "")
        payload = json.dumps(
            {"event": "ringing", "agent": agent, "channel": channel, "queue": fields.get("queue")},
            separators=(",", ":"),
        )
        start = now()
        await self._redis.xadd(
            self._prefix + agent, {"e": payload}, maxlen=STREAM_MAXLEN, approximate=True
        )
        self._stamps.apply[channel] = start
        self._stamps.publish[channel] = (start, now())

    def connected(self, up: bool) -> None:
        self.up = up


def redis_client(url: str) -> aioredis.Redis:
    """As cti/daemon.py's Daemon makes it."""
    return create_redis(Config(redis_url=url))


class Pipeline:
    """One phase's AMI client and whatever it feeds; ``start`` returns once it is ready."""

    ami: AmiClient

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))

    async def _until(self, ready: Callable[[], bool], what: str) -> None:
        if not await poll_until(ready, READY_TIMEOUT_S):
            raise BenchError(f"{what} within {READY_TIMEOUT_S:g} s")

    async def start(self) -> None:
        raise NotImplementedError

    @property
    def backlog(self) -> int:
        return self.ami.backlog

    async def close(self) -> None:
        self._stop.set()
        _done, pending = await asyncio.wait(self._tasks, timeout=5)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class CtiPipeline(Pipeline):
    """cti/daemon.py's CallFollowing without PostgreSQL (timeline, data expiry)."""

    def __init__(self, client: aioredis.Redis, port: int, stamps: Stamps) -> None:
        super().__init__()
        owner = instance_id()
        self.model = CallModel()
        self.publisher = StampedPublisher(client, stamps, ttl_s=EVENT_TTL_S)
        self.tracker = CallTracker(self.model, publish=lambda events: self.outbox.submit(events))
        self.outbox = Outbox(self.publisher, owner, on_not_leader=self.tracker.keep_unpublished)
        self.lease = Lease(
            client,
            owner,
            ttl_s=LEASE_TTL_S,
            renew_s=LEASE_TTL_S / 5,
            on_change=self.tracker.set_leader,
            eligible=lambda: self.tracker.ami_up,
        )
        self.ami = AmiClient(
            "127.0.0.1",
            port,
            AMI_USER,
            AMI_SECRET,
            events_sink=StampedSink(self.tracker, stamps),
            id_prefix=f"cti.{owner}",
        )

    async def start(self) -> None:
        self._spawn(self.ami.run(self._stop), "ami")
        self._spawn(self.outbox.run(self._stop), "call-events-outbox")
        await self._until(lambda: self.tracker.ami_up, "AMI not up")
        self._spawn(self.lease.run(self._stop), "ami-lease")
        await self._until(lambda: self.tracker.leader, "no lease")

    @property
    def backlog(self) -> int:
        return self.ami.backlog + self.outbox.backlog


class FloorPipeline(Pipeline):
    def __init__(self, client: aioredis.Redis, port: int, stamps: Stamps) -> None:
        super().__init__()
        self.sink = FloorSink(client, stamps)
        self.ami = AmiClient(
            "127.0.0.1", port, AMI_USER, AMI_SECRET, events_sink=self.sink, id_prefix="floor"
        )

    async def start(self) -> None:
        self._spawn(self.ami.run(self._stop), "ami")
        await self._until(lambda: self.sink.up, "AMI not up")


# -- one phase ---------------------------------------------------------------------------
class BenchError(Exception):
    """The bench could not run (message for stderr)."""


class Child:
    """A spawned process and its pipe; ``ask`` sends a command and awaits the answer."""

    def __init__(self, name: str, target: Callable[..., None], *args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process with a loop
        self.conn, child_conn = ctx.Pipe()
        self.name = name
        self.process = ctx.Process(target=target, args=(child_conn, *args), name=name, daemon=True)
        self.process.start()
        child_conn.close()

    async def receive(self, timeout_s: float) -> Any:
        def receive() -> tuple[str, Any]:
            if not self.conn.poll(timeout_s):
                raise BenchError(f"{self.name}: no answer within {timeout_s:g} s")
            return self.conn.recv()

        try:
            kind, value = await asyncio.to_thread(receive)
        except EOFError:
            raise BenchError(f"{self.name} exited (code {self.process.exitcode})") from None
        if kind == "error":
            raise BenchError(f"{self.name}: {value}")
        return value

    async def ask(self, command: str, arg: Any = None, timeout_s: float = 30.0) -> Any:
        self.conn.send((command, arg))
        return await self.receive(timeout_s)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(("stop", None))
        self.process.join(5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        self.conn.close()


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty sequence."""
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def summary_ms(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    values.sort()
    return {
        "p50": round(1000 * percentile(values, 0.50), 3),
        "p99": round(1000 * percentile(values, 0.99), 3),
        "max": round(1000 * values[-1], 3),
    }


SEGMENTS = ("ami_to_sink", "sink_to_publish", "publish_to_read", "publish_call")


@dataclass
class PhaseRun:
    """One phase (a target at a rate, one round): raw samples and counters."""

    rate: int
    target: str  # floor | cti
    calls: int  # calls started, warm-up and tail included
    events: int  # AMI events the sender wrote
    ringing: int  # AgentCalled written inside the measured window
    latencies: list[float]  # of those the reader saw
    segments: dict[str, list[float]]
    taken_in: int  # AMI events the client read
    span_s: float  # first write -> pipeline drained
    cpu_s: float
    redis_cpu_s: float | None
    sender_cpu_s: float
    reader_cpu_s: float
    lag_p99_ms: float
    buffered_writes: int
    published: int  # cti: events published (all kinds)
    problems: dict[str, Any]  # cti: the call model's nonzero trouble counters


@dataclass
class PhaseResult:
    """A target at a rate, every round merged (percentiles over all samples)."""

    rate: int
    target: str
    rounds: int
    calls: int
    events: int
    ringing: int
    read: int
    events_per_s: float  # AMI events the pipeline took in, per second
    pipeline_cpu_pct: float  # this process, % of one core, first write -> drained
    redis_cpu_pct: float | None  # every redis-server of the machine
    sender_cpu_pct: float
    reader_cpu_pct: float
    latency_ms: dict[str, float | None]
    segments_ms: dict[str, dict[str, float | None]]
    send_lag_p99_ms: float  # the worst round's
    buffered_writes: int
    published: int
    model_problems: dict[str, Any]


async def run_phase(
    index: int,
    rate: int,
    target: str,
    options: Options,
    sender: Child,
    reader: Child,
    port: int,
) -> PhaseRun:
    duration = options.duration_s / options.rounds
    spec = PhaseSpec(f"p{index}", rate, options.warmup_s, duration, TAIL_S)
    prepared = await sender.ask("prepare", spec, timeout_s=120)
    client = redis_client(options.redis_url)
    stamps = Stamps()
    pipeline: Pipeline = (
        CtiPipeline(client, port, stamps)
        if target == "cti"
        else FloorPipeline(client, port, stamps)
    )
    try:
        await pipeline.start()
        await reader.ask("flush")  # forget entries of earlier phases
        gc.collect()
        events_before = pipeline.ami.stats.events
        cpu = time.process_time()
        redis_before = redis_cpu_s()
        started = now()
        done = await sender.ask("go", timeout_s=options.warmup_s + duration + TAIL_S + 60)
        await poll_until(
            lambda: (
                pipeline.ami.stats.events - events_before >= done["events"] and not pipeline.backlog
            ),
            DRAIN_TIMEOUT_S,
        )
        span = now() - started
        cpu = time.process_time() - cpu
        redis_after = redis_cpu_s()
        taken_in = pipeline.ami.stats.events - events_before
        wanted = {channel: stamp for channel, stamp, measured in done["sent"] if measured}
        seen: dict[str, float] = {}
        reader_cpu = 0.0
        deadline = now() + COLLECT_TIMEOUT_S
        while True:
            records, used = await reader.ask("flush")
            reader_cpu += used
            for channel, stamp in records:
                seen.setdefault(channel, stamp)
            if wanted.keys() <= seen.keys() or now() > deadline:
                break
            await asyncio.sleep(0.05)
        published = 0
        problems: dict[str, Any] = {}
        if isinstance(pipeline, CtiPipeline):
            published = pipeline.publisher.published
            stats = pipeline.model.stats
            problems = {
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
    finally:
        await pipeline.close()
        await client.aclose()
    latencies: list[float] = []
    segments: dict[str, list[float]] = {name: [] for name in SEGMENTS}
    for channel, sent_at in wanted.items():
        read_at = seen.get(channel)
        if read_at is None:
            continue
        latencies.append(read_at - sent_at)
        applied = stamps.apply.get(channel)
        published_at = stamps.publish.get(channel)
        if applied is None or published_at is None:
            continue
        segments["ami_to_sink"].append(applied - sent_at)
        segments["sink_to_publish"].append(published_at[0] - applied)
        segments["publish_to_read"].append(read_at - published_at[0])
        segments["publish_call"].append(published_at[1] - published_at[0])
    return PhaseRun(
        rate=rate,
        target=target,
        calls=prepared["calls"],
        events=done["events"],
        ringing=len(wanted),
        latencies=latencies,
        segments=segments,
        taken_in=taken_in,
        span_s=span,
        cpu_s=cpu,
        redis_cpu_s=(
            None if redis_before is None or redis_after is None else redis_after - redis_before
        ),
        sender_cpu_s=done["cpu_s"],
        reader_cpu_s=reader_cpu,
        lag_p99_ms=done["lag_p99_ms"],
        buffered_writes=done["buffered_writes"],
        published=published,
        problems=problems,
    )


def aggregate(runs: Sequence[PhaseRun]) -> PhaseResult:
    span = sum(run.span_s for run in runs)
    redis_cpu = [run.redis_cpu_s for run in runs]
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

    return PhaseResult(
        rate=runs[0].rate,
        target=runs[0].target,
        rounds=len(runs),
        calls=sum(run.calls for run in runs),
        events=sum(run.events for run in runs),
        ringing=sum(run.ringing for run in runs),
        read=sum(len(run.latencies) for run in runs),
        events_per_s=round(sum(run.taken_in for run in runs) / span, 1),
        pipeline_cpu_pct=pct(sum(run.cpu_s for run in runs)),
        redis_cpu_pct=None if None in redis_cpu else pct(sum(filter(None, redis_cpu))),
        sender_cpu_pct=pct(sum(run.sender_cpu_s for run in runs)),
        reader_cpu_pct=pct(sum(run.reader_cpu_s for run in runs)),
        latency_ms=summary_ms([x for run in runs for x in run.latencies]),
        segments_ms={
            name: summary_ms([x for run in runs for x in run.segments[name]]) for name in SEGMENTS
        },
        send_lag_p99_ms=round(max(run.lag_p99_ms for run in runs), 3),
        buffered_writes=sum(run.buffered_writes for run in runs),
        published=sum(run.published for run in runs),
        model_problems=problems,
    )


async def flush_redis(url: str) -> None:
    client = aioredis.from_url(url, socket_connect_timeout=2)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


def _ratio(ours: float | None, floor: float | None) -> float | None:
    return round(ours / floor, 2) if ours is not None and floor else None


async def run_bench(options: Options) -> dict[str, Any]:
    configure_logging("console", "warning")  # as the route bench runs the daemon
    agents = watched_agents()
    streams = [agent_stream(a) for a in agents] + [FLOOR_PREFIX + a for a in agents]
    await flush_redis(options.redis_url)
    meta: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loop": "uvloop" if loop_factory() else "asyncio",
        "loadavg_start": os.getloadavg()[0],
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "agents": agents,
        "clock": "CLOCK_MONOTONIC across processes",
    }
    sender = Child("sender", sender_main, options.max_gap_s)
    reader = Child("reader", reader_main, options.redis_url, streams)
    phases: list[PhaseResult] = []
    try:
        port = await sender.receive(30)
        await reader.receive(30)
        index = 0
        for rate in options.rates:
            runs: dict[str, list[PhaseRun]] = {"floor": [], "cti": []}
            for round_ in range(options.rounds):
                # floor, cti, cti, floor, ...: a drift of the machine's load hits both alike
                for target in ("floor", "cti") if round_ % 2 == 0 else ("cti", "floor"):
                    progress(f"{rate} calls/s, {target}, round {round_ + 1} ...")
                    run = await run_phase(index, rate, target, options, sender, reader, port)
                    lat = summary_ms(list(run.latencies))
                    progress(
                        f"  {len(run.latencies)}/{run.ringing} ringing, p50 {lat['p50']} ms,"
                        f" p99 {lat['p99']} ms, {run.taken_in / run.span_s:,.0f} events/s"
                    )
                    runs[target].append(run)
                    index += 1
            phases += [aggregate(runs["floor"]), aggregate(runs["cti"])]
    finally:
        sender.stop()
        reader.stop()
        with contextlib.suppress(RedisError, OSError):
            await flush_redis(options.redis_url)
    meta["loadavg_end"] = os.getloadavg()[0]
    ratios = []
    for rate in options.rates:
        floor = next(p for p in phases if p.rate == rate and p.target == "floor")
        cti = next(p for p in phases if p.rate == rate and p.target == "cti")
        ratios.append(
            {
                "rate": rate,
                "p50": _ratio(cti.latency_ms["p50"], floor.latency_ms["p50"]),
                "p99": _ratio(cti.latency_ms["p99"], floor.latency_ms["p99"]),
            }
        )
    return {"meta": meta, "phases": [asdict(p) for p in phases], "ratios": ratios}


# -- output ------------------------------------------------------------------------------
def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render(report: dict[str, Any]) -> str:
    meta, opts = report["meta"], report["meta"]["options"]
    out = [
        f"ringing latency {meta['started_at']}  {meta['cpus']} CPUs  python {meta['python']}"
        f" ({meta['loop']})  load avg {meta['loadavg_start']:.2f} -> {meta['loadavg_end']:.2f}",
        f"{opts['duration_s']:g} s measured per row in {opts['rounds']} round(s), each after"
        f" {opts['warmup_s']:g} s of calls;"
        f" pauses in calls cut to {opts['max_gap_s']:g} s;"
        " latency = AgentCalled written -> ringing readable (XREAD, other process)",
        "",
        f"{'rate':>6} {'target':<6} {'ringing':>8} {'lost':>5} {'events/s':>9}"
        f" {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'cpu':>5} {'redis':>5} {'send lag':>8}",
    ]
    for p in report["phases"]:
        lat = p["latency_ms"]
        out.append(
            f"{p['rate']:>4}/s {p['target']:<6} {p['ringing']:>8}"
            f" {p['ringing'] - p['read']:>5} {p['events_per_s']:>9,.0f}"
            f" {_fmt(lat['p50'], '.2f'):>7} {_fmt(lat['p99'], '.2f'):>7}"
            f" {_fmt(lat['max'], '.2f'):>7} {p['pipeline_cpu_pct']:>4.0f}%"
            f" {_fmt(p['redis_cpu_pct'], '.0f') + '%':>5}"
            f" {p['send_lag_p99_ms']:>6.1f}ms"
        )
    out += [
        "  (cpu: the pipeline's process, redis: redis-server, % of one core; send lag: p99 of"
        " the sender's writes behind schedule)",
        "",
        f"{'cti / floor':>11} {'p50':>6} {'p99':>6}",
    ]
    for r in report["ratios"]:
        out.append(
            f"{str(r['rate']) + '/s':>11} {_fmt(r['p50'], '.2f') + 'x':>6}"
            f" {_fmt(r['p99'], '.2f') + 'x':>6}"
        )
    out += [
        "",
        "where the time goes, p50 / p99 ms (ami->sink: socket, parse, client queue;"
        " sink->pub: model, tracker, Outbox wake-up;",
        " pub->read: publish call -> readable by the reader; pub call: publish_many's duration)",
        f"{'rate':>6} {'target':<6} {'ami->sink':>14} {'sink->pub':>14} {'pub->read':>14}"
        f" {'pub call':>14}",
    ]
    for p in report["phases"]:
        cells = [
            f"{_fmt(s['p50'], '.2f')} / {_fmt(s['p99'], '.2f')}" for s in p["segments_ms"].values()
        ]
        out.append(f"{p['rate']:>4}/s {p['target']:<6} " + " ".join(f"{c:>14}" for c in cells))
    notes = []
    for p in report["phases"]:
        if p["read"] < p["ringing"]:
            notes.append(
                f"note: {p['rate']}/s {p['target']}: {p['ringing'] - p['read']} ringing never read"
            )
        if p["buffered_writes"]:
            notes.append(
                f"note: {p['rate']}/s {p['target']}: the socket backed up"
                f" {p['buffered_writes']} times (the pipeline fell behind)"
            )
        if p["model_problems"]:
            notes.append(
                f"note: {p['rate']}/s {p['target']}: the call model could not place every"
                f" event: {p['model_problems']}"
            )
    if notes:
        out += ["", *notes]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            report = runner.run(run_bench(options))
    except KeyboardInterrupt:
        progress("interrupted")
        return 130
    except (BenchError, RedisError, OSError) as exc:
        progress(f"ringing_latency: {exc}")
        return 2
    print(render(report))
    if options.json_path is not None:
        options.json_path.parent.mkdir(parents=True, exist_ok=True)
        options.json_path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nresults: {options.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
