"""Route benchmark: the FastAGI ``route`` script over real TCP against real PostgreSQL.

Starts ``cti serve`` and a bare asyncio FastAGI responder (``bench/bare_agi.py``) as
subprocesses, drives both with a load generator that speaks FastAGI the way Asterisk 22
does, and reports client-observed latency and routes per second at fixed offered rates
(open loop) and with N concurrent callers (closed loop), ours next to the bare floor.
See bench/README.md for what is measured and how to read it.

    .venv/bin/python -m bench.route_bench [--quick] [--duration S] [--customers N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from cti.callmix import CallMix, demo_customer_number

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
BARE_RESPONDER = BENCH_DIR / "bare_agi.py"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/cti_bench"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
HOST = "127.0.0.1"

# The caller mix (cti.callmix, as ``cti loadtest`` draws it): 90 % known demo customers,
# 5 % unknown numbers, 3 % withheld ("anonymous"), 2 % no number at all ("unknown").
CALL_MIX = CallMix(
    unknown_share=0.05,
    withheld_share=0.03,
    no_number_share=0.02,
    dialled=(("5550100", 0.60), ("5550200", 0.25), ("5550300", 0.15)),
)
FAIL_OPEN_RULE = "fail-open"

ROUTE_TIMEOUT_S = 10.0  # one call, connect to close
READY_TIMEOUT_S = 30.0  # a subprocess until it routes
STOP_TIMEOUT_S = 20.0  # the daemon flushes its writers on SIGTERM
MAX_IN_FLIGHT = 4096  # open loop: arrivals beyond this many calls in flight are shed
MAX_REPLY_BUFFER = 64 * 1024
GENERATOR_HEADROOM = 1.5  # bare peak / our peak above this: the generator is not our limit

# Targets (printed PASS/FAIL; they fail the exit code only with --strict).
TARGET_P99_RATE = 500
TARGET_P99_MS = 5.0
TARGET_THROUGHPUT = 2000.0
TARGET_BARE_SHARE = 0.5

# Asterisk 22's FastAGI request block (res_agi.c setup_env), in its order.
HEADER = (
    "agi_network: yes\n"
    "agi_network_script: route\n"
    "agi_request: agi://127.0.0.1:{port}/route\n"
    "agi_channel: PJSIP/trunk-{channel:08x}\n"
    "agi_language: en\n"
    "agi_type: PJSIP\n"
    "agi_uniqueid: {uniqueid}\n"
    "agi_version: 22.10.1\n"
    "agi_callerid: {ani}\n"
    "agi_calleridname: {name}\n"
    "agi_callingpres: 0\n"
    "agi_callingani2: 0\n"
    "agi_callington: 0\n"
    "agi_callingtns: 0\n"
    "agi_dnid: {dnis}\n"
    "agi_rdnis: unknown\n"
    "agi_context: from-trunk\n"
    "agi_extension: {dnis}\n"
    "agi_priority: 2\n"
    "agi_enhanced: 0.0\n"
    "agi_accountcode: \n"
    "agi_threadid: 1\n"
    "\n"
)
REPLY = b"200 result=1\n"
SET_VARIABLE = b"SET VARIABLE "
EXEC_MSET = b"EXEC MSet "
_ESCAPE = re.compile(r"\\(.)")


class BenchError(RuntimeError):
    """The bench cannot go on; the message says why."""


# --- options ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    quick: bool
    duration_s: float
    warmup_s: float
    customers: int
    rates: tuple[int, ...]
    concurrency: tuple[int, ...]
    info_concurrency: int
    database_url: str
    redis_url: str
    poisson: bool
    seed: int
    strict: bool
    results_dir: Path


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected integers such as 1,8,32") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers")
    return values


def parse_options(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="route_bench", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--quick", action="store_true", help="short phases (smoke run, < ~60 s)")
    parser.add_argument("--duration", type=float, help="seconds per phase (default 15, quick 2)")
    parser.add_argument("--customers", type=int, default=100_000, help="demo customers (>= 6)")
    parser.add_argument(
        "--rates",
        type=_int_list,
        default=(100, 500, 1000),
        metavar="R,R,..",
        help="open-loop offered rates, routes/s (default 100,500,1000)",
    )
    parser.add_argument(
        "--concurrency",
        type=_int_list,
        default=(1, 8, 32, 64),
        metavar="N,N,..",
        help="closed-loop concurrent callers (default 1,8,32,64)",
    )
    parser.add_argument(
        "--info-concurrency",
        type=int,
        default=32,
        metavar="N",
        help="closed-loop N of the extra run with CTI_LOG_LEVEL=info",
    )
    parser.add_argument(
        "--arrivals",
        choices=("poisson", "uniform"),
        default="poisson",
        help="open-loop inter-arrival times (default poisson)",
    )
    parser.add_argument(
        "--database-url",
        default=DEFAULT_DATABASE_URL,
        help="a database used only by the bench (its name must contain 'bench')",
    )
    parser.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS_URL,
        help="a Redis db used only by the bench (not db 0); flushed",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed of the call mix")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    parser.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    args = parser.parse_args(argv)
    duration = args.duration if args.duration is not None else (2.0 if args.quick else 15.0)
    if duration <= 0 or duration > 3600:
        parser.error("--duration must be between 0 and 3600 seconds")
    if not 6 <= args.customers <= 9_999_999:
        parser.error("--customers must be between 6 and 9,999,999")
    if args.info_concurrency < 1:
        parser.error("--info-concurrency must be positive")
    return Options(
        quick=args.quick,
        duration_s=duration,
        warmup_s=0.5 if args.quick else 2.0,
        customers=args.customers,
        rates=args.rates,
        concurrency=args.concurrency,
        info_concurrency=args.info_concurrency,
        database_url=args.database_url,
        redis_url=args.redis_url,
        poisson=args.arrivals == "poisson",
        seed=args.seed,
        strict=args.strict,
        results_dir=args.results_dir,
    )


def check_dedicated(options: Options) -> None:
    """Refuse stores that do not look reserved for the bench: we truncate and flush them."""
    database = urlsplit(options.database_url).path.lstrip("/")
    if "bench" not in database:
        raise BenchError(f"database {database!r}: use one whose name contains 'bench'")
    db = urlsplit(options.redis_url).path.lstrip("/")
    if not db.isdigit() or int(db) == 0:
        raise BenchError(f"{options.redis_url}: name a Redis db other than 0, e.g. .../15")


# --- the calls ---------------------------------------------------------------------------


class Workload:
    """Asterisk 22 request blocks for a stream of inbound calls, numbered by uniqueid."""

    def __init__(self, customers: int, seed: int, run_epoch: int) -> None:
        self.customers = customers
        self.run_epoch = run_epoch
        self.seq = 0  # the last uniqueid's sequence number
        self._rng = random.Random(seed)

    def next_call(self, port: int) -> bytes:
        caller = CALL_MIX.caller(self._rng, self.customers)
        dnis = CALL_MIX.number_dialled(self._rng)
        return self.call(port, caller.number, caller.name, dnis)

    def call(self, port: int, ani: str, name: str, dnis: str) -> bytes:
        self.seq += 1
        return HEADER.format(
            port=port,
            channel=self.seq,
            uniqueid=f"{self.run_epoch}.{self.seq}",
            ani=ani,
            name=name,
            dnis=dnis,
        ).encode()


@dataclass(frozen=True, slots=True)
class CallResult:
    latency_s: float  # connect started -> the server closed
    route: str | None
    rule: str | None
    error: str | None  # None: CTI_ROUTE was set and the exchange was clean


class _AgiCall(asyncio.Protocol):
    """Asterisk's side of one FastAGI session: send the request, answer every command."""

    def __init__(self, header: bytes, done: asyncio.Future[tuple[float, dict[bytes, bytes]]]):
        self._header = header
        self._done = done
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._variables: dict[bytes, bytes] = {}
        self._ended: float | None = None
        self.error: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(self._header)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        *lines, self._buffer = (self._buffer + data).split(b"\n")
        for line in lines:
            if line.startswith(SET_VARIABLE):
                name, _, value = line[len(SET_VARIABLE) :].partition(b" ")
                self._variables[name] = value
            elif line.startswith(EXEC_MSET):
                pairs = _unquote(line[len(EXEC_MSET) :]) or ""
                for pair in pairs.split(","):
                    name, _, value = pair.partition("=")
                    self._variables[name.encode()] = value.encode()
            elif self.error is None:
                self.error = "unexpected-command"
            self._transport.write(REPLY)
        if len(self._buffer) > MAX_REPLY_BUFFER:
            self.error = self.error or "overlong-line"
            self._transport.abort()

    def eof_received(self) -> bool:
        self._ended = time.perf_counter()
        return False  # close our side too, as Asterisk does

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.error is None:
            self.error = f"lost: {type(exc).__name__}"
        if not self._done.done():
            self._done.set_result((self._ended or time.perf_counter(), self._variables))


def _unquote(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace")
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = _ESCAPE.sub(r"\1", text[1:-1])  # res_agi quoting: \" and \\
    return text


async def place_call(port: int, header: bytes) -> CallResult:
    """One inbound call: connect, send ``header``, reply 200 to each command until close."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[float, dict[bytes, bytes]]] = loop.create_future()
    protocol = _AgiCall(header, done)
    started = time.perf_counter()
    transport: asyncio.BaseTransport | None = None
    try:
        async with asyncio.timeout(ROUTE_TIMEOUT_S):
            transport, _ = await loop.create_connection(lambda: protocol, HOST, port)
            ended, variables = await done
    except TimeoutError:
        return CallResult(time.perf_counter() - started, None, None, "timeout")
    except OSError as exc:
        return CallResult(time.perf_counter() - started, None, None, type(exc).__name__)
    finally:
        if transport is not None and not transport.is_closing():
            transport.abort()
    route = _unquote(variables.get(b"CTI_ROUTE"))
    error = protocol.error or (None if route else "no-CTI_ROUTE")
    return CallResult(ended - started, route, _unquote(variables.get(b"CTI_RULE")), error)


# --- load ------------------------------------------------------------------------------


@dataclass(slots=True)
class Samples:
    latencies: list[float] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    rules: Counter[str] = field(default_factory=Counter)
    lags: list[float] = field(default_factory=list)  # open loop: how late each call started
    shed: int = 0
    max_in_flight: int = 0

    def add(self, result: CallResult) -> None:
        if result.error is None:
            self.latencies.append(result.latency_s)
            self.rules[result.rule or ""] += 1
        else:
            self.failures[result.error] += 1


async def closed_loop(
    port: int, concurrency: int, duration_s: float, workload: Workload, samples: Samples
) -> float:
    """``concurrency`` callers, each calling again as soon as its call ends, for a while."""
    start = time.perf_counter()
    deadline = start + duration_s

    async def caller() -> None:
        while time.perf_counter() < deadline:
            samples.add(await place_call(port, workload.next_call(port)))

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    samples.max_in_flight = concurrency
    return time.perf_counter() - start


async def open_loop(
    port: int,
    rate: int,
    duration_s: float,
    workload: Workload,
    samples: Samples,
    rng: random.Random,
    poisson: bool,
) -> float:
    """Calls arriving at ``rate`` per second whatever the server does (no back-pressure)."""
    loop = asyncio.get_running_loop()
    offsets: list[float] = []
    offset = 0.0
    for _ in range(max(1, round(rate * duration_s))):
        offset += rng.expovariate(rate) if poisson else 1.0 / rate
        offsets.append(offset)
    in_flight: set[asyncio.Task[None]] = set()

    async def call(header: bytes) -> None:
        samples.add(await place_call(port, header))

    start = time.perf_counter()
    for offset in offsets:
        due = start + offset
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        samples.lags.append(time.perf_counter() - due)
        if len(in_flight) >= MAX_IN_FLIGHT:
            samples.shed += 1
            continue
        task = loop.create_task(call(workload.next_call(port)))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        samples.max_in_flight = max(samples.max_in_flight, len(in_flight))
    if in_flight:
        _done, pending = await asyncio.wait(set(in_flight), timeout=ROUTE_TIMEOUT_S + 1)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return time.perf_counter() - start


# --- CPU accounting (Linux /proc; zeros elsewhere) ----------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
SERVICE_NAMES = frozenset({b"postgres", b"redis-server"})


def process_cpu_s(pid: int) -> float:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return 0.0
    fields = data[data.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def services_cpu_s() -> float:
    """CPU time of every PostgreSQL and Redis process on the machine (not only ours)."""
    total = 0.0
    with contextlib.suppress(OSError), os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                comm = Path(f"/proc/{entry.name}/comm").read_bytes().strip()
            except OSError:
                continue
            if comm in SERVICE_NAMES:
                total += process_cpu_s(int(entry.name))
    return total


def host_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle, total


@dataclass(frozen=True, slots=True)
class CpuSnapshot:
    wall: float
    server: float
    generator: float
    services: float
    host_busy: int
    host_total: int

    @classmethod
    def take(cls, server_pid: int) -> CpuSnapshot:
        busy, total = host_ticks()
        return cls(
            time.perf_counter(),
            process_cpu_s(server_pid),
            time.process_time(),
            services_cpu_s(),
            busy,
            total,
        )


def cpu_usage(before: CpuSnapshot, after: CpuSnapshot, routes: int) -> dict[str, float | None]:
    """Percent of one core per process; server CPU µs per route; host: % of all cores.

    ``other_pct`` is what the machine spent on anything but the server under test, the
    generator and PostgreSQL/Redis (other tenants, the kernel, exited processes): the
    noise indicator of the phase.
    """
    wall = max(after.wall - before.wall, 1e-9)
    server = after.server - before.server
    generator = after.generator - before.generator
    services = after.services - before.services
    busy = (after.host_busy - before.host_busy) / CLOCK_TICKS  # CPU-seconds, all cores
    host_total = after.host_total - before.host_total
    return {
        "server_pct": round(100 * server / wall, 1),
        "server_us_per_route": round(server * 1e6 / routes, 1) if routes else None,
        "generator_pct": round(100 * generator / wall, 1),
        "pg_redis_pct": round(100 * services / wall, 1),
        "host_pct": round(100 * (after.host_busy - before.host_busy) / host_total, 1)
        if host_total
        else None,
        "other_pct": round(max(0.0, 100 * (busy - server - generator - services) / wall), 1)
        if host_total
        else None,
    }


# --- phases ------------------------------------------------------------------------------


@dataclass(slots=True)
class Target:
    name: str  # "bare", "cti" or "cti-info"
    port: int
    proc: subprocess.Popen[bytes]


@dataclass(slots=True)
class PhaseResult:
    target: str
    mode: str  # "open" (fixed offered rate) or "closed" (N concurrent callers)
    load: int  # routes/s offered, or N
    elapsed_s: float
    routes: int
    failed: int
    failures: dict[str, int]
    fail_open: int
    rules: dict[str, int]
    routes_per_s: float
    latency_ms: dict[str, float | None]
    start_lag_ms: dict[str, float | None] | None
    shed: int
    max_in_flight: int
    cpu: dict[str, float | None]
    uniqueid_seq: tuple[int, int]
    decision_us: dict[str, float | None] | None = None

    @property
    def label(self) -> str:
        return f"{self.load}/s" if self.mode == "open" else f"N={self.load}"


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending sequence; None when empty."""
    if not ordered:
        return None
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


async def measure(
    target: Target, mode: str, load: int, options: Options, workload: Workload
) -> PhaseResult:
    samples = Samples()
    first_seq = workload.seq + 1
    before = CpuSnapshot.take(target.proc.pid)
    if mode == "open":
        rng = random.Random(options.seed * 1_000_003 + load)
        elapsed = await open_loop(
            target.port, load, options.duration_s, workload, samples, rng, options.poisson
        )
    else:
        elapsed = await closed_loop(target.port, load, options.duration_s, workload, samples)
    after = CpuSnapshot.take(target.proc.pid)
    latencies = sorted(samples.latencies)
    lags = sorted(samples.lags)
    routes = len(latencies)
    return PhaseResult(
        target=target.name,
        mode=mode,
        load=load,
        elapsed_s=round(elapsed, 3),
        routes=routes,
        failed=sum(samples.failures.values()),
        failures=dict(samples.failures),
        fail_open=samples.rules.get(FAIL_OPEN_RULE, 0),
        rules=dict(samples.rules.most_common()),
        routes_per_s=round(routes / elapsed, 1),
        latency_ms={
            "p50": _ms(percentile(latencies, 0.50)),
            "p90": _ms(percentile(latencies, 0.90)),
            "p99": _ms(percentile(latencies, 0.99)),
            "max": _ms(latencies[-1] if latencies else None),
            "mean": _ms(sum(latencies) / routes if routes else None),
        },
        start_lag_ms={"p99": _ms(percentile(lags, 0.99)), "max": _ms(lags[-1] if lags else None)}
        if mode == "open"
        else None,
        shed=samples.shed,
        max_in_flight=samples.max_in_flight,
        cpu=cpu_usage(before, after, routes),
        uniqueid_seq=(first_seq, workload.seq),
    )


async def wait_until_routing(target: Target, workload: Workload) -> None:
    """Until a known caller is routed by a rule of the plan (not on the fail-open path)."""
    deadline = time.perf_counter() + READY_TIMEOUT_S
    last: CallResult | None = None
    while time.perf_counter() < deadline:
        if target.proc.poll() is not None:
            raise BenchError(f"{target.name} exited with code {target.proc.returncode}")
        last = await place_call(
            target.port, workload.call(target.port, demo_customer_number(1), "unknown", "5550100")
        )
        if last.error is None and last.rule != FAIL_OPEN_RULE:
            return
        await asyncio.sleep(0.2)
    raise BenchError(f"{target.name} did not route within {READY_TIMEOUT_S:.0f} s (last: {last})")


async def warm_up(targets: Sequence[Target], options: Options, workload: Workload) -> None:
    for target in targets:
        await wait_until_routing(target, workload)
        await closed_loop(target.port, 8, options.warmup_s, workload, Samples())


async def fetch_decision_us(database_url: str, run_epoch: int, since: datetime) -> dict[int, int]:
    """The daemon's own ``decision_us`` of this run's calls, by uniqueid sequence number."""
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT uniqueid, decision_us FROM interactions"
            " WHERE routed_at >= $1 AND uniqueid LIKE $2",
            since,
            f"{run_epoch}.%",
            timeout=60,
        )
    finally:
        await conn.close()
    return {int(r["uniqueid"].partition(".")[2]): r["decision_us"] for r in rows}


def attach_decision_us(phases: Sequence[PhaseResult], by_seq: dict[int, int]) -> None:
    for phase in phases:
        if not phase.target.startswith("cti"):
            continue
        lo, hi = phase.uniqueid_seq
        values = sorted(v for seq, v in by_seq.items() if lo <= seq <= hi)
        phase.decision_us = {
            "recorded": len(values),
            "p50": percentile(values, 0.50),
            "p99": percentile(values, 0.99),
            "max": values[-1] if values else None,
        }


# --- processes and stores ----------------------------------------------------------------


class Children:
    """The subprocesses we started. :meth:`stop_all` ends every one still running."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        stdin: int | IO[bytes] | None = subprocess.DEVNULL,
        stdout: int | IO[bytes] | None = subprocess.DEVNULL,
        stderr: int | IO[bytes] | None = subprocess.DEVNULL,
    ) -> subprocess.Popen[bytes]:
        # A session of its own: Ctrl-C reaches only us, and we stop the children in order.
        proc = subprocess.Popen(
            list(argv),
            cwd=REPO_DIR,
            env=env,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        self._procs.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> int | None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        return proc.returncode

    def stop_all(self) -> None:
        for proc in reversed(self._procs):
            self.stop(proc)
        self._procs.clear()


def cti_command() -> list[str]:
    script = Path(sys.executable).with_name("cti")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cti"]


def cti_env(options: Options, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTI_")}
    env.update(CTI_DATABASE_URL=options.database_url, CTI_REDIS_URL=options.redis_url, **extra)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def read_line(stream: IO[bytes], timeout_s: float) -> bytes:
    """One line from a child's pipe, or what came before the deadline."""
    deadline = time.monotonic() + timeout_s
    data = b""
    while not data.endswith(b"\n") and len(data) < 4096:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([stream], [], [], remaining)[0]:
            break
        chunk = os.read(stream.fileno(), 1)
        if not chunk:
            break
        data += chunk
    return data


def start_bare(children: Children) -> Target:
    proc = children.start(
        [sys.executable, str(BARE_RESPONDER), "--host", HOST, "--port", "0"],
        stdin=subprocess.PIPE,  # held open: the responder exits when we are gone
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    words = read_line(proc.stdout, READY_TIMEOUT_S).split()
    if len(words) != 3 or words[0] != b"listening":
        raise BenchError(f"bare responder did not start (said {b' '.join(words)!r})")
    return Target("bare", int(words[2]), proc)


def start_daemon(children: Children, options: Options, level: str, log: IO[bytes]) -> Target:
    port = free_port()
    env = cti_env(
        options,
        CTI_AGI_BIND=f"{HOST}:{port}",
        CTI_LOG_FORMAT="json",
        CTI_LOG_LEVEL=level,
        CTI_CALL_DATA_TTL_S="60",  # keeps the bench's Redis db small; same cost per write
        CTI_PLAN_CACHE="",  # no plan cache: never read or overwrite a developer's
    )
    proc = children.start([*cti_command(), "serve"], env=env, stdout=log, stderr=log)
    return Target("cti" if level == "warning" else f"cti-{level}", port, proc)


def run_cti(options: Options, *args: str) -> str:
    done = subprocess.run(
        [*cti_command(), *args],
        cwd=REPO_DIR,
        env=cti_env(options, CTI_LOG_LEVEL="warning"),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"cti {' '.join(args)} failed: {done.stderr.strip() or done.stdout}")
    return done.stdout.strip()


async def _seeded(options: Options) -> bool:
    conn = await asyncpg.connect(options.database_url, timeout=10)
    try:
        return bool(
            await conn.fetchval(
                """SELECT (SELECT count(*) FROM customers) >= $1
                      AND EXISTS (SELECT 1 FROM customer_phones WHERE e164 = $2)
                      AND EXISTS (SELECT 1 FROM routing_rules)
                      AND EXISTS (SELECT 1 FROM dialled_numbers WHERE dnis = '5550100')""",
                options.customers,
                f"+1212{options.customers:07d}",
            )
        )
    finally:
        await conn.close()


async def reset_run_state(options: Options) -> None:
    """Empty what the previous run left: the interactions table and the Redis db."""
    conn = await asyncpg.connect(options.database_url, timeout=10)
    try:
        await conn.execute("TRUNCATE interactions")
    finally:
        await conn.close()
    await flush_redis(options.redis_url)


async def flush_redis(url: str) -> None:
    client = aioredis.from_url(url, socket_connect_timeout=5, socket_timeout=30)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


def prepare_stores(options: Options) -> str:
    check_dedicated(options)
    run_cti(options, "db", "migrate")
    if asyncio.run(_seeded(options)):
        seeded = f"already seeded (>= {options.customers:,} customers)"
    else:
        started = time.perf_counter()
        out = run_cti(options, "db", "seed-demo", "--customers", str(options.customers))
        seeded = f"{out} in {time.perf_counter() - started:.1f} s"
    asyncio.run(reset_run_state(options))
    return seeded


# --- the run -----------------------------------------------------------------------------


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _describe(phase: PhaseResult) -> str:
    p99 = phase.latency_ms["p99"]
    return (
        f"{phase.mode} {phase.label} {phase.target}: {phase.routes} routes"
        f" ({phase.failed} failed), {phase.routes_per_s:.0f}/s,"
        f" p99 {'-' if p99 is None else f'{p99:.2f}'} ms"
    )


def run_phases(
    plan: Sequence[tuple[str, int]],
    targets: Sequence[Target],
    options: Options,
    workload: Workload,
) -> list[PhaseResult]:
    results = []
    for mode, load in plan:
        for target in targets:  # back to back, so both see the same machine
            if target.proc.poll() is not None:
                raise BenchError(f"{target.name} exited with code {target.proc.returncode}")
            result = asyncio.run(measure(target, mode, load, options, workload))
            progress(f"  {_describe(result)}")
            results.append(result)
    return results


def count_lines(path: Path) -> tuple[int, int]:
    lines = size = 0
    with path.open("rb") as handle:
        for line in handle:
            lines += 1
            size += len(line)
    return lines, size


def run_bench(options: Options, stamp: str) -> dict[str, Any]:
    options.results_dir.mkdir(parents=True, exist_ok=True)
    run_epoch = int(time.time())
    since = datetime.now(UTC) - timedelta(minutes=1)
    workload = Workload(options.customers, options.seed, run_epoch)
    children = Children()
    warn_log_path = options.results_dir / f"route-{stamp}-daemon-warning.log"
    info_log_path = options.results_dir / f"route-{stamp}-daemon-info.log"
    meta: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "git_commit": _git_commit(),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "mix": {
            "known": round(CALL_MIX.known_share, 4),
            "unknown": CALL_MIX.unknown_share,
            "anonymous": CALL_MIX.withheld_share,
            "no_number": CALL_MIX.no_number_share,
            "dnis": dict(CALL_MIX.dialled),
        },
    }
    try:
        progress("preparing PostgreSQL and Redis ...")
        meta["seed"] = prepare_stores(options)
        progress(f"  {meta['seed']}")
        with warn_log_path.open("wb") as warn_log:
            bare = start_bare(children)
            cti = start_daemon(children, options, "warning", warn_log)
            progress(f"bare responder on :{bare.port}, cti serve on :{cti.port}; warming up ...")
            asyncio.run(warm_up([bare, cti], options, workload))
            plan = [("open", r) for r in options.rates]
            plan += [("closed", n) for n in options.concurrency]
            progress(f"{len(plan) * 2} phases of {options.duration_s:g} s ...")
            phases = run_phases(plan, [bare, cti], options, workload)
            meta["cti_exit_code"] = Children.stop(cti.proc)
        meta["daemon_warning_lines"] = count_lines(warn_log_path)[0]
        if meta["daemon_warning_lines"] == 0:
            warn_log_path.unlink()
        with info_log_path.open("wb") as info_log:
            progress(f"cti serve at CTI_LOG_LEVEL=info, N={options.info_concurrency} ...")
            info = start_daemon(children, options, "info", info_log)
            asyncio.run(warm_up([info], options, workload))
            phases += run_phases([("closed", options.info_concurrency)], [info], options, workload)
            meta["cti_info_exit_code"] = Children.stop(info.proc)
        lines, size = count_lines(info_log_path)
        meta["daemon_info_log"] = {"lines": lines, "bytes": size}
        info_log_path.unlink()
        Children.stop(bare.proc)
        progress("reading the daemon's decision_us from the interactions table ...")
        attach_decision_us(
            phases, asyncio.run(fetch_decision_us(options.database_url, run_epoch, since))
        )
        asyncio.run(flush_redis(options.redis_url))
    finally:
        children.stop_all()
        info_log_path.unlink(missing_ok=True)  # large, and counted above when complete
        if warn_log_path.exists() and warn_log_path.stat().st_size == 0:
            warn_log_path.unlink()
    meta["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"meta": meta, "phases": [asdict(p) for p in phases], **assess(phases, options)}


def _git_commit() -> str | None:
    """HEAD's short hash, with ``+dirty`` when the daemon's code differs from it."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "cti", "pyproject.toml"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")
    return None


# --- assessment and report ---------------------------------------------------------------


def _find(phases: Sequence[PhaseResult], target: str, mode: str, load: int) -> PhaseResult | None:
    for phase in phases:
        if (phase.target, phase.mode, phase.load) == (target, mode, load):
            return phase
    return None


def _peak(phases: Sequence[PhaseResult], target: str) -> PhaseResult | None:
    closed = [p for p in phases if p.target == target and p.mode == "closed"]
    return max(closed, key=lambda p: p.routes_per_s, default=None)


def _ratio(ours: float | None, base: float | None) -> float | None:
    return round(ours / base, 2) if ours is not None and base else None


def assess(phases: Sequence[PhaseResult], options: Options) -> dict[str, Any]:
    comparisons = []
    for phase in phases:
        if phase.target != "cti":
            continue
        bare = _find(phases, "bare", phase.mode, phase.load)
        if bare is None:
            continue
        comparisons.append(
            {
                "mode": phase.mode,
                "load": phase.load,
                "p99_ratio": _ratio(phase.latency_ms["p99"], bare.latency_ms["p99"]),
                "throughput_ratio": _ratio(phase.routes_per_s, bare.routes_per_s),
                "server_cpu_ratio": _ratio(
                    phase.cpu["server_us_per_route"], bare.cpu["server_us_per_route"]
                ),
            }
        )
    ours, bare_peak = _peak(phases, "cti"), _peak(phases, "bare")
    at_rate = _find(phases, "cti", "open", TARGET_P99_RATE)
    p99 = at_rate.latency_ms["p99"] if at_rate else None
    share = _ratio(
        ours.routes_per_s if ours else None, bare_peak.routes_per_s if bare_peak else None
    )
    targets = [
        _target(
            f"p99 at {TARGET_P99_RATE} routes/s < {TARGET_P99_MS:g} ms",
            None if p99 is None else f"{p99:.2f} ms",
            None if p99 is None or at_rate is None else p99 < TARGET_P99_MS and at_rate.failed == 0,
        ),
        _target(
            f"saturated throughput > {TARGET_THROUGHPUT:,.0f} routes/s",
            None if ours is None else f"{ours.routes_per_s:,.0f}/s ({ours.label})",
            None if ours is None else ours.routes_per_s > TARGET_THROUGHPUT,
        ),
        _target(
            f"throughput >= {TARGET_BARE_SHARE:g} x bare responder",
            None
            if share is None or ours is None or bare_peak is None
            else f"{share:.2f} ({ours.routes_per_s:,.0f} / {bare_peak.routes_per_s:,.0f})",
            None if share is None else share >= TARGET_BARE_SHARE,
        ),
    ]
    generator = None
    if ours is not None and bare_peak is not None:
        headroom = _ratio(bare_peak.routes_per_s, ours.routes_per_s)
        generator = {
            "bare_peak_routes_per_s": bare_peak.routes_per_s,
            "cti_peak_routes_per_s": ours.routes_per_s,
            "headroom": headroom,
            "generator_pct_at_cti_peak": ours.cpu["generator_pct"],
            "generator_pct_at_bare_peak": bare_peak.cpu["generator_pct"],
            "cti_server_pct_at_cti_peak": ours.cpu["server_pct"],
            "generator_is_bottleneck": headroom is None or headroom < GENERATOR_HEADROOM,
        }
    log_cost = None
    info = _find(phases, "cti-info", "closed", options.info_concurrency)
    warn = _find(phases, "cti", "closed", options.info_concurrency)
    if info is not None and warn is not None:
        per_route = (info.cpu["server_us_per_route"], warn.cpu["server_us_per_route"])
        log_cost = {
            "concurrency": options.info_concurrency,
            "info_routes_per_s": info.routes_per_s,
            "warning_routes_per_s": warn.routes_per_s,
            "throughput_ratio": _ratio(info.routes_per_s, warn.routes_per_s),
            "info_p99_ms": info.latency_ms["p99"],
            "warning_p99_ms": warn.latency_ms["p99"],
            "server_cpu_us_per_route_delta": None
            if None in per_route
            else round(float(per_route[0] or 0) - float(per_route[1] or 0), 1),
        }
    return {
        "comparisons": comparisons,
        "targets": targets,
        "generator_check": generator,
        "log_cost": log_cost,
    }


def _target(name: str, value: str | None, passed: bool | None) -> dict[str, Any]:
    verdict = "n/a" if passed is None else ("PASS" if passed else "FAIL")
    return {"target": name, "value": value, "verdict": verdict}


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def render(report: dict[str, Any]) -> str:
    meta = report["meta"]
    opts = meta["options"]
    out = [
        f"route bench {meta['started_at']}  {meta['cpus']} CPUs  python {meta['python']}"
        f"  git {meta['git_commit']}  load avg {_fmt(meta['loadavg_start'][0], '.2f')}"
        f" -> {_fmt(meta['loadavg_end'][0], '.2f')}",
        f"{opts['customers']:,} customers; {opts['duration_s']:g} s per phase;"
        f" open loop = {'Poisson' if opts['poisson'] else 'uniform'} arrivals;"
        " latency = client connect -> server close",
        "",
        f"{'load':>7} {'target':<8} {'routes':>7} {'fail':>4} {'f-open':>6} {'routes/s':>8}"
        f" {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'dec p50/p99 us':>14}"
        f" {'srv cpu':>7} {'us/route':>8} {'gen cpu':>7} {'pg+redis':>8} {'other':>6}",
    ]
    for p in report["phases"]:
        label = f"{p['load']}/s" if p["mode"] == "open" else f"N={p['load']}"
        lat, cpu, dec = p["latency_ms"], p["cpu"], p["decision_us"]
        decision = "-" if not dec or dec["p50"] is None else f"{dec['p50']:.0f}/{dec['p99']:.0f}"
        out.append(
            f"{label:>7} {p['target']:<8} {p['routes']:>7} {p['failed']:>4}"
            f" {p['fail_open'] if p['target'] != 'bare' else '-':>6} {p['routes_per_s']:>8.0f}"
            f" {_fmt(lat['p50'], '.2f'):>7} {_fmt(lat['p99'], '.2f'):>7}"
            f" {_fmt(lat['max'], '.1f'):>7} {decision:>14}"
            f" {_pct(cpu['server_pct']):>7} {_fmt(cpu['server_us_per_route'], '.0f'):>8}"
            f" {_pct(cpu['generator_pct']):>7} {_pct(cpu['pg_redis_pct']):>8}"
            f" {_pct(cpu['other_pct']):>6}"
        )
    out += [
        "  (cpu columns: % of one core over the phase; us/route: server CPU per route;"
        " other: everything else on the machine;",
        "   dec: the daemon's own decision_us from the interactions table)",
        "",
        f"{'cti / bare':>10} {'p99':>6} {'routes/s':>9} {'cpu/route':>10}",
    ]
    for c in report["comparisons"]:
        label = f"{c['load']}/s" if c["mode"] == "open" else f"N={c['load']}"
        out.append(
            f"{label:>10} {_fmt(c['p99_ratio'], '.2f') + 'x':>6}"
            f" {_fmt(c['throughput_ratio'], '.2f'):>9}"
            f" {_fmt(c['server_cpu_ratio'], '.1f') + 'x':>10}"
        )
    out += ["", "targets"]
    for t in report["targets"]:
        out.append(f"  {t['verdict']:<4}  {t['target']:<42} {t['value'] or '(not measured)'}")
    gen = report["generator_check"]
    if gen:
        verdict = (
            "MAY BE the bottleneck (bare is not clearly faster than cti)"
            if gen["generator_is_bottleneck"]
            else "is not the bottleneck of the cti numbers"
        )
        out += [
            "",
            f"generator check: bare peak {gen['bare_peak_routes_per_s']:,.0f}/s vs cti peak"
            f" {gen['cti_peak_routes_per_s']:,.0f}/s ({_fmt(gen['headroom'], '.2f')}x);"
            f" generator CPU {_fmt(gen['generator_pct_at_cti_peak'], '.0f')}% at the cti peak"
            f" (daemon {_fmt(gen['cti_server_pct_at_cti_peak'], '.0f')}%)"
            f" -> the generator {verdict}",
        ]
    cost = report["log_cost"]
    if cost:
        out.append(
            f"per-call log line (CTI_LOG_LEVEL=info vs warning, N={cost['concurrency']}):"
            f" {cost['info_routes_per_s']:,.0f} vs {cost['warning_routes_per_s']:,.0f} routes/s"
            f" ({_fmt(cost['throughput_ratio'], '.2f')}x), p99 {_fmt(cost['info_p99_ms'], '.2f')}"
            f" vs {_fmt(cost['warning_p99_ms'], '.2f')} ms,"
            f" +{_fmt(cost['server_cpu_us_per_route_delta'], '.0f')} us daemon CPU per route"
        )
    notes = _notes(report)
    if notes:
        out += ["", *notes]
    return "\n".join(out)


def _notes(report: dict[str, Any]) -> list[str]:
    notes = []
    for p in report["phases"]:
        label = f"{p['mode']} {p['load']}{'/s' if p['mode'] == 'open' else ''} {p['target']}"
        if p["failures"]:
            notes.append(f"note: {label}: failed routes {p['failures']}")
        if p["target"] != "bare" and p["fail_open"]:
            notes.append(f"note: {label}: {p['fail_open']} routes failed open")
        if p["shed"]:
            notes.append(f"note: {label}: generator shed {p['shed']} arrivals (too many in flight)")
        lag = p["start_lag_ms"]
        if lag and lag["p99"] is not None and lag["p99"] > 5:
            notes.append(f"note: {label}: calls started late (p99 {lag['p99']:.1f} ms)")
    warnings = report["meta"].get("daemon_warning_lines")
    if warnings:
        notes.append(f"note: the daemon logged {warnings} warning/error lines (kept in results/)")
    return notes


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")

    def on_sigterm(_signum: int, _frame: object) -> None:
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        report = run_bench(options, stamp)
    except KeyboardInterrupt:
        progress("interrupted; subprocesses stopped")
        return 130
    except (BenchError, OSError, asyncpg.PostgresError, RedisError) as exc:
        progress(f"route_bench: {exc}")
        return 2
    path = options.results_dir / f"route-{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(render(report))
    print(f"\nresults: {path.relative_to(REPO_DIR) if path.is_relative_to(REPO_DIR) else path}")
    failed = any(t["verdict"] == "FAIL" for t in report["targets"])
    return 1 if options.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
