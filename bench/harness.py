"""What the latency benchmarks share: the floor and cti pipelines the fake Asterisk
feeds, the child processes, the options, the statistics and the report's frame (the
fake Asterisk itself, the sender, is bench/sender.py).

``bench.ringing_latency`` (AgentCalled -> ``ringing`` readable in Redis) and
``bench.pop_latency`` (AgentCalled -> ``ringing`` frame on the agent's WebSocket) differ
only in which calls they play, where they read the result and what they print; all of
that stays in them. Everything here is written once so that both measure the same way:
the same clock, the same sender, the same floor.

The one clock is ``CLOCK_MONOTONIC``, which every process of the machine shares, so a
stamp taken in the sender and one taken in the reader subtract.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import platform
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from cti.ami.client import AmiClient
from cti.ami.filters import event_filter
from cti.ami.protocol import Message
from cti.app.resources import create_redis
from cti.calls.events import CallEvent
from cti.calls.leadership import Leadership
from cti.calls.lease import instance_id
from cti.calls.model import CALL_CENTRE_EVENTS, CallModel
from cti.calls.publisher import STREAM_RETENTION_S, EventPublisher
from cti.calls.tracker import CallTracker
from cti.config import Config

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
FLOOR_PREFIX = "bench:floor:agent:"
AMI_USER, AMI_SECRET = "cti", "s3cret"  # FakeAmi's defaults
#: The event filters cti serve sends after Login (the call model's table, cti.app.following).
FILTERS = (event_filter(CALL_CENTRE_EVENTS),)
LEASE_TTL_S = 5.0  # Config.ami_lease_ttl_s; the daemon renews every ttl / 5
EVENT_TTL_S = 600  # the publisher's seen/agents sets; costs the same as a day's
TAIL_S = 0.3  # calls keep starting this long after the measured window
READY_TIMEOUT_S = 10.0
RINGING_MARK = b'"event":"ringing"'


class BenchError(Exception):
    """The bench could not run (message for stderr)."""


# -- clocks, processes, machine -----------------------------------------------------------
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


def host_busy_s() -> float | None:
    """CPU-seconds every core of the machine spent busy since boot (steal included)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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


def child_process(
    main: Callable[[Connection], Coroutine[Any, Any, None]], conn: Connection
) -> None:
    """The body of every spawned child: Ctrl-C is the parent's to handle (it stops us)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main(conn))


async def flush_redis(url: str) -> None:
    client = aioredis.from_url(url, socket_connect_timeout=2)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


def redis_client(url: str) -> aioredis.Redis:
    """As cti serve makes it (cti.app.resources; a plain URL: no Sentinel to close)."""
    client, _sentinel = create_redis(Config(redis_url=url))
    return client


# -- options ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CommonOptions:
    duration_s: float
    warmup_s: float
    max_gap_s: float
    rounds: int
    redis_url: str
    json_path: Path | None
    quick: bool


def add_common_arguments(parser: argparse.ArgumentParser, results: str) -> None:
    """The options both latency benches take (their defaults are each bench's own)."""
    parser.add_argument("--duration", type=float, help="measured seconds per row")
    parser.add_argument("--warmup", type=float, help="seconds of calls before it")
    parser.add_argument(
        "--max-gap", type=float, default=0.1, help="longest pause inside a call, s (0.1)"
    )
    parser.add_argument("--rounds", type=int, help="floor/cti alternations per row")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument(
        "--json",
        nargs="?",
        const="",
        metavar="PATH",
        help=f"write the results (default bench/results/{results}-<ts>.json)",
    )


def common_options(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    results: str,
    *,
    duration_s: tuple[float, float],
    warmup_s: tuple[float, float],
) -> CommonOptions:
    """Checked common options; ``duration_s`` and ``warmup_s`` are (full, quick) defaults."""
    quick = bool(args.quick)
    duration = args.duration if args.duration is not None else duration_s[quick]
    warmup = args.warmup if args.warmup is not None else warmup_s[quick]
    rounds = args.rounds if args.rounds is not None else (1 if quick else 2)
    if duration <= 0 or warmup < 0 or args.max_gap <= 0 or rounds < 1:
        parser.error("--duration and --max-gap must be > 0, --warmup >= 0, --rounds >= 1")
    if urlsplit(args.redis_url).path.strip("/") in ("", "0"):
        parser.error("refusing Redis db 0: the bench flushes its db (use e.g. /12)")
    json_path: Path | None = None
    if args.json is not None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        json_path = (
            Path(args.json) if args.json else BENCH_DIR / "results" / f"{results}-{stamp}.json"
        )
    return CommonOptions(duration, warmup, args.max_gap, rounds, args.redis_url, json_path, quick)


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

    async def publish_many(
        self, events: Sequence[CallEvent], owner: str, **kwargs: Any
    ) -> str | None:
        start = now()
        found = await super().publish_many(events, owner, **kwargs)
        end = now()
        for event in events:
            if event.kind == "ringing":
                self._stamps[event.data["channel"]] = (start, end)
        return found


class FloorSink:
    """The floor: every AgentCalled straight into a stream (``stream_prefix`` + the
    member's interface), awaited inside ``apply``. bench.pop_latency uses it with the
    agents' own stream prefix, so that its WebSockets carry the floor's pops."""

    def __init__(self, client: aioredis.Redis, stamps: Stamps, stream_prefix: str) -> None:
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
        min_id = f"{int((time.time() - STREAM_RETENTION_S) * 1000)}-0"
        await self._redis.xadd(self._prefix + agent, {"e": payload}, minid=min_id, approximate=True)
        self._stamps.apply[channel] = start
        self._stamps.publish[channel] = (start, now())

    def connected(self, up: bool) -> None:
        self.up = up


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

    def problems(self) -> dict[str, Any]:
        """What went wrong inside the pipeline (nothing for the floor)."""
        return {}

    async def close(self) -> None:
        self._stop.set()
        _done, pending = await asyncio.wait(self._tasks, timeout=5)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class CtiPipeline(Pipeline):
    """cti.app.following's follow_calls without PostgreSQL (timeline, data expiry)."""

    def __init__(self, client: aioredis.Redis, port: int, stamps: Stamps) -> None:
        super().__init__()
        owner = instance_id()
        self.model = CallModel()
        self.publisher = StampedPublisher(client, stamps, ttl_s=EVENT_TTL_S)
        self.leadership = Leadership(client, self.publisher, owner, lease_ttl_s=LEASE_TTL_S)
        self.tracker = CallTracker(
            self.model,
            handover=self.leadership.take,
            on_connected=self.leadership.ami_connected,
        )
        self.ami = AmiClient(
            "127.0.0.1",
            port,
            AMI_USER,
            AMI_SECRET,
            events_sink=StampedSink(self.tracker, stamps),
            id_prefix=f"cti.{owner}",
            filters=FILTERS,
        )

    async def start(self) -> None:
        self._spawn(self.ami.run(self._stop), "ami")
        await self._until(lambda: self.leadership.ami_up, "AMI not up")
        self._spawn(self.leadership.run(self._stop), "call-events")
        await self._until(lambda: self.leadership.leader, "no lease")

    @property
    def backlog(self) -> int:
        return self.ami.backlog + self.leadership.backlog

    def problems(self) -> dict[str, Any]:
        """The call model's nonzero trouble counters."""
        stats = self.model.stats
        counters = (
            ("unknown", stats.unknown),
            ("late_channels", stats.late_channels),
            ("late_events", stats.late_events),
            ("unattributed", stats.unattributed),
            ("call_id_conflicts", stats.call_id_conflicts),
        )
        return {name: value for name, value in counters if value}


class FloorPipeline(Pipeline):
    def __init__(
        self, client: aioredis.Redis, port: int, stamps: Stamps, stream_prefix: str = FLOOR_PREFIX
    ) -> None:
        super().__init__()
        self.sink = FloorSink(client, stamps, stream_prefix)
        self.ami = AmiClient(
            "127.0.0.1",
            port,
            AMI_USER,
            AMI_SECRET,
            events_sink=self.sink,
            id_prefix="floor",
            filters=FILTERS,
        )

    async def start(self) -> None:
        self._spawn(self.ami.run(self._stop), "ami")
        await self._until(lambda: self.sink.up, "AMI not up")


# -- one phase ---------------------------------------------------------------------------
def round_targets(round_: int) -> tuple[str, str]:
    """floor, cti, cti, floor, ...: a drift of the machine's load hits both alike."""
    return ("floor", "cti") if round_ % 2 == 0 else ("cti", "floor")


async def collect(
    flush: Callable[[], Awaitable[Iterable[tuple[str, float]]]],
    wanted: Mapping[str, float],
    timeout_s: float,
) -> dict[str, float]:
    """The first stamp of every channel the reader saw, flushed until every ``wanted``
    channel is in or ``timeout_s`` passed."""
    seen: dict[str, float] = {}
    deadline = now() + timeout_s
    while True:
        for channel, stamp in await flush():
            seen.setdefault(channel, stamp)
        if wanted.keys() <= seen.keys() or now() > deadline:
            return seen
        await asyncio.sleep(0.05)


def merge_problems(each: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counters summed over rounds (a nested dict of counters is summed key by key)."""
    problems: dict[str, Any] = {}
    for one in each:
        for name, value in one.items():
            if isinstance(value, dict):
                merged = problems.setdefault(name, {})
                for key, count in value.items():
                    merged[key] = merged.get(key, 0) + count
            else:
                problems[name] = problems.get(name, 0) + value
    return problems


# -- statistics and the report ---------------------------------------------------------------
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


def ratio(ours: float | None, floor: float | None) -> float | None:
    return round(ours / floor, 2) if ours is not None and floor else None


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def run_meta(options: Any, **extra: Any) -> dict[str, Any]:
    """What every report starts with: when, where, on what."""
    return {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loop": "uvloop" if loop_factory() else "asyncio",
        "loadavg_start": os.getloadavg()[0],
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        **extra,
        "clock": "CLOCK_MONOTONIC across processes",
    }


def run_main(
    name: str,
    run: Callable[[], Coroutine[Any, Any, dict[str, Any]]],
    render: Callable[[dict[str, Any]], str],
    json_path: Path | None,
    errors: tuple[type[BaseException], ...] = (),
    uvloop: bool = True,
) -> int:
    """Run the bench, print its table, write the JSON: exit 0; 2 when it could not run,
    130 on Ctrl-C or SIGTERM (the bench's finally blocks stop its children).

    ``uvloop=False`` for a bench that starts daemons which outlive the command starting
    them (``scripts/asterisk-sandbox up``): uvloop's subprocess pipes leak into such
    grandchildren, so waiting for the command's output never ends."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with asyncio.Runner(loop_factory=loop_factory() if uvloop else None) as runner:
            report = runner.run(run())
    except KeyboardInterrupt:
        progress("interrupted")
        return 130
    except (BenchError, RedisError, OSError, *errors) as exc:
        progress(f"{name}: {type(exc).__name__}: {exc}")
        return 2
    print(render(report))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nresults: {json_path}")
    return 0
