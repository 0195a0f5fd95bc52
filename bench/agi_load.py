"""The FastAGI load generator of bench/route_bench.py, and its CPU accounting.

Each call is an ``asyncio.Protocol`` playing Asterisk 22's side of FastAGI: connect,
send the request block in res_agi's order, answer every command ``200 result=1`` until
the server closes. The callers come from cti.callmix, the mix ``cti loadtest`` uses
too. Calls arrive either open loop (at a rate, whatever the server does) or closed loop
(N callers, each calling again when its call ends). CPU is read from /proc: a
process's, PostgreSQL's and Redis's, and the whole machine's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cti.callmix import CallMix

HOST = "127.0.0.1"

# The caller mix (cti.callmix, as ``cti loadtest`` draws it): 90 % known demo customers,
# 5 % unknown numbers, 3 % withheld ("anonymous"), 2 % no number at all ("unknown").
CALL_MIX = CallMix(
    unknown_share=0.05,
    withheld_share=0.03,
    no_number_share=0.02,
    dialled=(("5550100", 0.60), ("5550200", 0.25), ("5550300", 0.15)),
)
ROUTE_TIMEOUT_S = 10.0  # one call, connect to close
MAX_IN_FLIGHT = 4096  # open loop: arrivals beyond this many calls in flight are shed
MAX_REPLY_BUFFER = 64 * 1024

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
