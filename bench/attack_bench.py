"""Routing under attack: FastAGI p99 quiet versus during floods, in one run (issue 9).

    .venv/bin/python -m bench.attack_bench            # about 6 minutes (--rounds 2)
    .venv/bin/python -m bench.attack_bench --quick    # smoke run, about 2 minutes

Against a real ``cti serve`` with ``cti screenpop`` beside it (the sidebar in its own
process, as production runs it; ``--sidebar in-process`` runs it inside ``cti serve``)
on real PostgreSQL and Redis, both under a service's usual descriptor limit (``ulimit
-n 1024``), it measures:

1. FastAGI at ``--rate`` routes/s (open loop, bench.agi_load) for ``--duration`` s:
   quiet; during (a) ``--idle`` idle HTTP connections on the sidebar's port from eight
   addresses (tests/fakes/agi_flood.py ``--http``) plus ``--logins`` concurrent
   wrong-password logins (bench.attackers); quiet again; during (b) a FastAGI connection
   flood from an address ``CTI_AGI_ALLOW`` does not name (tests/fakes/agi_flood.py: the
   daemon allows 127.0.0.1 only, the flood comes from 127.0.0.2); quiet again. The
   quiet phases are the baseline of the ratios (best phase against best phase).
   Meanwhile an agent logs in every 0.5 s from 127.0.0.3 (bench.attackers.legit_logins).
2. A PostgreSQL partition (tests/fakes/tcp_proxy.py: connections held silently) of
   ``--partition-s`` at ``--partition-rate`` calls/s: the slowest decision the daemon
   recorded (``interactions.decision_us``) against the route budget.
3. The standby's window over an hour of events at ``--standby-rate`` calls/s, with an
   injected clock (bench.standby_memory).

See the README's Benchmarks section for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

import cti
from bench import route_options, standby_memory
from bench.agi_load import (
    CpuSnapshot,
    Samples,
    Workload,
    closed_loop,
    cpu_usage,
    open_loop,
    process_cpu_s,
)
from bench.attack_report import assess, render
from bench.attackers import Logins, legit_logins, raise_nofile
from bench.route_bench import (
    REPO_DIR,
    Children,
    Target,
    cti_command,
    cti_env,
    fetch_decision_us,
    free_port,
    guarded_run,
    prepare_stores,
    progress,
    save_and_show,
    wait_until_routing,
)
from bench.route_options import BenchError
from cti.config import Config
from tests.fakes.tcp_proxy import TcpProxy

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/cti_bench_attack"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"
AGI_ALLOW = "127.0.0.1/32"  # the bench's calls come from here ...
FLOOD_SOURCE = "127.0.0.2"  # ... the FastAGI flood from here
HTTP_ATTACK_SOURCE = "127.0.0.1"  # the wrong-password logins
IDLE_SOURCES = ",".join(f"127.0.1.{i}" for i in range(1, 9))  # eight hosts, idle HTTP
DESK_SOURCE = "127.0.0.3"  # the legitimate agent
DESK_USER, VICTIM_USER = "bench-desk", "bench-victim"
LOGIN_INTERVAL_S = 0.5
#: Each round: the two attacks, each followed by a quiet phase; the run starts quiet.
#: The quiet phases' figures are the baseline of the ratios.
ROUND = ("http", "quiet", "agi", "quiet")
SETTLE_S = 2.0  # between phases: the daemon closes what the attack left
READY_TIMEOUT_S = 30.0
RECORDS_TIMEOUT_S = 60.0  # after the partition heals, for its calls' interactions rows


@dataclass(frozen=True, slots=True)
class Options:
    quick: bool
    duration_s: float
    rate: int
    rounds: int
    customers: int
    idle: int
    logins: int
    flood_workers: int
    nofile: int
    partition_s: float
    partition_rate: int
    standby_rate: int
    standby_minutes: int
    sidebar: str
    pin: bool
    scenarios: tuple[str, ...]
    database_url: str
    redis_url: str
    seed: int
    strict: bool
    results_dir: Path


def parse_options(argv: Sequence[str] | None = None) -> Options:
    p = argparse.ArgumentParser(prog="attack_bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short phases (smoke run)")
    p.add_argument("--duration", type=float, help="seconds per FastAGI phase (10; quick 4)")
    p.add_argument("--rate", type=int, default=200, help="FastAGI routes/s (200)")
    p.add_argument("--rounds", type=int, help="rounds of (a), quiet, (b), quiet (2; quick 1)")
    p.add_argument("--customers", type=int, default=100_000, help="demo customers")
    p.add_argument("--idle", type=int, default=1000, help="(a) idle HTTP connections")
    p.add_argument("--logins", type=int, default=200, help="(a) wrong-password logins at once")
    p.add_argument("--flood-workers", type=int, default=1100, help="(b) FastAGI flood peers")
    p.add_argument("--nofile", type=int, default=1024, help="the daemons' fd limit")
    p.add_argument("--partition-s", type=float, default=10.0)
    p.add_argument("--partition-rate", type=int, default=30, help="calls/s during it")
    p.add_argument("--standby-rate", type=int, default=30, help="calls/s fed to the standby")
    p.add_argument("--standby-minutes", type=int, default=60, help="simulated minutes")
    p.add_argument(
        "--sidebar",
        choices=("in-process", "separate"),
        default="separate",
        help="cti screenpop beside cti serve, as production runs them (default), or in it",
    )
    p.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin the daemon to the first CPU and the attackers to the last",
    )
    p.add_argument(
        "--only",
        default="agi,partition,standby",
        help="scenarios to run, of agi,partition,standby (default all)",
    )
    p.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    p.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="not db 0; flushed")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    p.add_argument("--results-dir", type=Path, default=route_options.BENCH_DIR / "results")
    a = p.parse_args(argv)
    scenarios = tuple(s.strip() for s in a.only.split(",") if s.strip())
    if not scenarios or set(scenarios) - {"agi", "partition", "standby"}:
        p.error("--only: a comma-separated subset of agi,partition,standby")
    duration = a.duration if a.duration is not None else (4.0 if a.quick else 10.0)
    if not 0 < duration <= 600 or a.rate < 1 or a.partition_rate < 1 or a.partition_s <= 0:
        p.error("--duration in (0, 600], rates >= 1, --partition-s > 0")
    if min(a.idle, a.logins, a.flood_workers) < 0 or a.nofile < 64 or (a.rounds or 1) < 1:
        p.error("--idle, --logins, --flood-workers >= 0; --nofile >= 64; --rounds >= 1")
    return Options(
        quick=a.quick,
        duration_s=duration,
        rate=a.rate,
        rounds=a.rounds if a.rounds is not None else (1 if a.quick else 2),
        customers=a.customers,
        idle=a.idle,
        logins=a.logins,
        flood_workers=a.flood_workers,
        nofile=a.nofile,
        partition_s=a.partition_s,
        partition_rate=a.partition_rate,
        standby_rate=a.standby_rate,
        standby_minutes=5 if a.quick else a.standby_minutes,
        sidebar=a.sidebar,
        pin=not a.no_pin and (os.cpu_count() or 1) >= 2,
        scenarios=scenarios,
        database_url=a.database_url,
        redis_url=a.redis_url,
        seed=a.seed,
        strict=a.strict,
        results_dir=a.results_dir,
    )


def route_bench_options(o: Options) -> route_options.Options:
    """What the route bench's helpers (stores, warm-up, readiness) read."""
    return route_options.Options(
        quick=o.quick,
        duration_s=o.duration_s,
        warmup_s=1.0 if o.quick else 2.0,
        customers=o.customers,
        rates=(o.rate,),
        concurrency=(),
        info_concurrency=1,
        database_url=o.database_url,
        redis_url=o.redis_url,
        poisson=True,
        seed=o.seed,
        strict=o.strict,
        results_dir=o.results_dir,
    )


# --- the daemon ---------------------------------------------------------------------------
@dataclass(slots=True)
class Stack:
    agi: Target  # cti serve
    http_port: int | None = None
    sidebar: subprocess.Popen[bytes] | None = None  # cti screenpop, when separate

    def alive(self) -> None:
        for name, proc in (("cti serve", self.agi.proc), ("cti screenpop", self.sidebar)):
            if proc is not None and proc.poll() is not None:
                raise BenchError(f"{name} exited with code {proc.returncode}")


def pin(o: Options, pid: int, which: str) -> None:
    """The daemon on the first CPU, the attackers on the last (``--no-pin``: neither), so
    that an attacker, which would be another host, takes at most the other core. Set
    right after the start, before the process has made threads of its own."""
    if o.pin:
        cpus = sorted(os.sched_getaffinity(0))
        with contextlib.suppress(OSError):  # it may have exited already
            os.sched_setaffinity(pid, {cpus[0] if which == "daemon" else cpus[-1]})


def _limited(o: Options, argv: Sequence[str]) -> list[str]:
    """``argv`` under a service's usual descriptor limit, soft and hard (``ulimit -n``)."""
    return ["sh", "-c", f'ulimit -n {o.nofile} && exec "$@"', "sh", *argv]


def start_stack(
    children: Children, o: Options, log: Any, *, database_url: str | None = None, http: bool
) -> Stack:
    """``cti serve`` (and ``cti screenpop`` when the sidebar is separate), not yet ready."""
    ro = route_bench_options(o)
    agi_port = free_port()
    http_port = free_port() if http else None
    common = {
        "CTI_LOG_FORMAT": "json",
        "CTI_LOG_LEVEL": "warning",
        "CTI_CALL_DATA_TTL_S": "60",  # keeps the bench's Redis db small
        "CTI_PLAN_CACHE": "",  # never read or overwrite a developer's plan cache
        "CTI_SESSION_SECRET": secrets.token_urlsafe(48),
    }
    env = cti_env(ro, CTI_AGI_BIND=f"127.0.0.1:{agi_port}", CTI_AGI_ALLOW=AGI_ALLOW, **common)
    if database_url is not None:
        env["CTI_DATABASE_URL"] = database_url
    if http_port is not None and o.sidebar == "in-process":
        env["CTI_HTTP_BIND"] = f"127.0.0.1:{http_port}"
    else:
        env["CTI_HTTP_ENABLED"] = "no"
    proc = children.start(_limited(o, [*cti_command(), "serve"]), env=env, stdout=log, stderr=log)
    pin(o, proc.pid, "daemon")
    stack = Stack(Target("cti", agi_port, proc), http_port)
    if http_port is not None and o.sidebar == "separate":
        side_env = cti_env(ro, CTI_HTTP_BIND=f"127.0.0.1:{http_port}", **common)
        stack.sidebar = children.start(
            _limited(o, [*cti_command(), "screenpop"]), env=side_env, stdout=log, stderr=log
        )
    return stack


async def wait_http(stack: Stack) -> None:
    deadline = time.perf_counter() + READY_TIMEOUT_S
    url = f"http://127.0.0.1:{stack.http_port}/healthz"
    async with aiohttp.ClientSession() as session:
        while time.perf_counter() < deadline:
            stack.alive()
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise BenchError(f"the sidebar did not answer /healthz within {READY_TIMEOUT_S:g} s")


def add_agents(o: Options, password: str) -> None:
    """The victim and the agent at her desk, with this run's password."""
    ro = route_bench_options(o)
    env = cti_env(ro, CTI_LOG_LEVEL="warning", BENCH_AGENT_PASSWORD=password)
    for user, endpoint in ((DESK_USER, "PJSIP/2901"), (VICTIM_USER, "PJSIP/2902")):
        for args in (
            ["agents", "add", user, "--endpoint", endpoint],
            ["agents", "passwd", user],
        ):
            done = subprocess.run(
                [*cti_command(), *args, "--password-env", "BENCH_AGENT_PASSWORD"],
                cwd=REPO_DIR,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if done.returncode == 0:
                break
        else:
            raise BenchError(f"cti agents add/passwd {user}: {done.stderr.strip()}")


# --- the FastAGI phases -------------------------------------------------------------------------
@dataclass(slots=True)
class Phase:
    name: str  # quiet, http (a), agi (b)
    elapsed_s: float
    samples: Samples
    logins: Logins
    cpu: dict[str, float | None]
    attack: dict[str, Any] = field(default_factory=dict)


async def _attacker(o: Options, argv: Sequence[str]) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *argv,
        cwd=REPO_DIR,
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    pin(o, proc.pid, "attacker")
    return proc


async def _finish(proc: asyncio.subprocess.Process, *, ends_itself: bool) -> dict[str, Any]:
    """Its last JSON line of counts: once it has ended (the FastAGI flood, at its
    ``--seconds``) or been told to with SIGTERM (the HTTP attackers)."""
    if not ends_itself:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return {"killed": True}
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    return dict(json.loads(lines[-1])) if lines else {"exit": proc.returncode}


#: A flood runs this long before the measured phase (every worker connected).
FLOOD_LEAD_S = 3.0
LOGINS_LEAD_S = 1.0


@dataclass(slots=True)
class Attacker:
    name: str
    proc: asyncio.subprocess.Process
    ends_itself: bool  # at its --seconds (the floods), else on SIGTERM (the logins)
    cpu_s: float = 0.0


async def _flood(o: Options, port: int, sources: str, workers: int, *extra: str) -> Attacker:
    """tests/fakes/agi_flood.py: it stops by itself just after the phase (it reports its
    counts then, not on SIGTERM); back once every worker has made its first try."""
    argv = ["-m", "tests.fakes.agi_flood", str(port), "--source", sources, *extra]
    argv += ["--workers", str(workers), "--rounds", "100000", "--pause-s", "0.2"]
    seconds = FLOOD_LEAD_S + LOGINS_LEAD_S + o.duration_s + 2.0  # past the phase's end
    proc = await _attacker(o, [*argv, "--seconds", str(seconds)])
    started = time.perf_counter()
    assert proc.stdout is not None
    with contextlib.suppress(TimeoutError, ValueError):
        await asyncio.wait_for(proc.stdout.readline(), FLOOD_LEAD_S)
    await asyncio.sleep(max(0.0, FLOOD_LEAD_S - (time.perf_counter() - started)))
    return Attacker("http-idle" if extra else "agi-flood", proc, ends_itself=True)


async def start_attack(kind: str, stack: Stack, o: Options) -> list[Attacker]:
    if kind == "http":
        assert stack.http_port is not None
        idle = await _flood(o, stack.http_port, IDLE_SOURCES, o.idle, "--http")
        argv = ["-m", "bench.attackers", str(stack.http_port), "--source", HTTP_ATTACK_SOURCE]
        argv += ["--logins", str(o.logins), "--user", VICTIM_USER]
        logins = await _attacker(o, [*argv, "--seconds", str(o.duration_s + 90)])
        await asyncio.sleep(LOGINS_LEAD_S)  # the login flood has begun
        return [idle, Attacker("logins", logins, ends_itself=False)]
    if kind == "agi":
        return [await _flood(o, stack.agi.port, FLOOD_SOURCE, o.flood_workers)]
    return []


async def run_phase(
    kind: str, stack: Stack, o: Options, workload: Workload, password: str
) -> Phase:
    stack.alive()
    attackers = await start_attack(kind, stack, o)
    samples, logins, stop = Samples(), Logins(), asyncio.Event()
    counts: dict[str, Any] = {}
    try:
        desk = None
        if stack.http_port is not None:
            desk = asyncio.create_task(
                legit_logins(
                    stack.http_port,
                    DESK_USER,
                    password,
                    DESK_SOURCE,
                    LOGIN_INTERVAL_S,
                    stop,
                    logins,
                )
            )
        before = CpuSnapshot.take(stack.agi.proc.pid)
        for attacker in attackers:
            attacker.cpu_s = -process_cpu_s(attacker.proc.pid)
        rng = random.Random(o.seed * 7919 + len(kind) + workload.seq)
        elapsed = await open_loop(
            stack.agi.port, o.rate, o.duration_s, workload, samples, rng, True
        )
        after = CpuSnapshot.take(stack.agi.proc.pid)
        for attacker in attackers:  # (0 if it has ended: never negative)
            attacker.cpu_s = max(0.0, attacker.cpu_s + process_cpu_s(attacker.proc.pid))
        stop.set()
        if desk is not None:
            await desk
    finally:
        for attacker in attackers:
            counts[attacker.name] = await _finish(attacker.proc, ends_itself=attacker.ends_itself)
    if attackers:  # the next phase starts once the daemon routes again
        recovery = time.perf_counter()
        await wait_until_routing(stack.agi, workload)
        counts["bench"] = {"recovery_s": round(time.perf_counter() - recovery, 2)}
    await asyncio.sleep(SETTLE_S)
    cpu = cpu_usage(before, after, len(samples.latencies))
    spent = sum(a.cpu_s for a in attackers)
    cpu["attacker_pct"] = round(100 * spent / elapsed, 1) if attackers else None
    return Phase(kind, round(elapsed, 2), samples, logins, cpu, counts)


async def agi_phases(stack: Stack, o: Options, workload: Workload, password: str) -> list[Phase]:
    await wait_until_routing(stack.agi, workload)
    if stack.http_port is not None:
        await wait_http(stack)
    await closed_loop(stack.agi.port, 8, 1.0 if o.quick else 2.0, workload, Samples())
    phases = []
    for kind in ("quiet", *ROUND * o.rounds):
        progress(f"  phase {kind}: {o.rate} routes/s for {o.duration_s:g} s ...")
        phase = await run_phase(kind, stack, o, workload, password)
        s = phase.samples
        progress(f"    {len(s.latencies)} routed, {sum(s.failures.values())} failed")
        phases.append(phase)
    return phases


# --- the partition --------------------------------------------------------------------------------
def _via(database_url: str, port: int) -> str:
    parts = urlsplit(database_url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def partition(children: Children, o: Options, workload: Workload, log: Any) -> dict[str, Any]:
    target = urlsplit(o.database_url)
    proxy = await TcpProxy(target.hostname or "127.0.0.1", target.port or 5432).start()
    since = datetime.now(UTC) - timedelta(minutes=1)
    try:
        stack = start_stack(
            children, o, log, database_url=_via(o.database_url, proxy.port), http=False
        )
        await wait_until_routing(stack.agi, workload)
        await closed_loop(stack.agi.port, 16, 1.0, workload, Samples())  # warm the pool
        await open_loop(
            stack.agi.port, o.partition_rate, 2.0, workload, Samples(), random.Random(1), True
        )
        first = workload.seq + 1
        samples = Samples()
        proxy.partition()
        asyncio.get_running_loop().call_later(o.partition_s, proxy.heal)
        rng = random.Random(o.seed)
        await open_loop(
            stack.agi.port, o.partition_rate, o.partition_s, workload, samples, rng, True
        )
        last = workload.seq
        proxy.heal()
        # The records of the outage's calls land once the writer's retry gets through.
        deadline = time.perf_counter() + RECORDS_TIMEOUT_S
        while True:
            by_seq = await fetch_decision_us(o.database_url, workload.run_epoch, since)
            decisions = sorted(v for seq, v in by_seq.items() if first <= seq <= last)
            if len(decisions) >= last - first + 1 or time.perf_counter() > deadline:
                break
            await asyncio.sleep(1.0)
        code = await asyncio.to_thread(Children.stop, stack.agi.proc)
    finally:
        await proxy.close()
    latencies = sorted(samples.latencies)
    return {
        "seconds": o.partition_s,
        "rate": o.partition_rate,
        "calls": last - first + 1,
        "routed": len(latencies),
        "failed": sum(samples.failures.values()),
        "failures": dict(samples.failures),
        "fail_open": samples.rules.get("fail-open", 0),
        "budget_ms": Config().route_budget_ms,
        "client_max_ms": round(1000 * latencies[-1], 1) if latencies else None,
        "client_p99_ms": round(1000 * _pct(latencies, 0.99), 1) if latencies else None,
        "decisions_recorded": len(decisions),
        "decision_max_ms": round(decisions[-1] / 1000, 1) if decisions else None,
        "decision_p99_ms": round(_pct(decisions, 0.99) / 1000, 1) if decisions else None,
        "daemon_exit": code,
    }


def _pct(ordered: Sequence[float], q: float) -> float:
    return ordered[max(0, min(len(ordered) - 1, int(q * len(ordered) + 0.999999) - 1))]


# --- the run ------------------------------------------------------------------------------------
def run_bench(o: Options, stamp: str) -> dict[str, Any]:
    o.results_dir.mkdir(parents=True, exist_ok=True)
    raise_nofile()
    password = secrets.token_urlsafe(12)
    workload = Workload(o.customers, o.seed, int(time.time()))
    children = Children()
    log_path = o.results_dir / f"attack-{stamp}-daemon.log"
    report: dict[str, Any] = {"meta": _meta(o)}
    try:
        progress("preparing PostgreSQL and Redis ...")
        report["meta"]["seed"] = prepare_stores(route_bench_options(o))
        add_agents(o, password)
        with log_path.open("wb") as log:
            if "agi" in o.scenarios:
                stack = start_stack(children, o, log, http=True)
                progress(f"cti serve on :{stack.agi.port}, sidebar on :{stack.http_port}")
                phases = asyncio.run(agi_phases(stack, o, workload, password))
                report["phases"] = [_phase_json(p) for p in phases]
                for proc in (stack.sidebar, stack.agi.proc):
                    if proc is not None:
                        Children.stop(proc)
            if "partition" in o.scenarios:
                progress(f"PostgreSQL partition of {o.partition_s:g} s ...")
                report["partition"] = asyncio.run(partition(children, o, workload, log))
        if "standby" in o.scenarios:
            progress(f"standby window: {o.standby_minutes} simulated minutes ...")
            report["standby"] = standby_memory.run(o.standby_rate, o.standby_minutes)
    finally:
        children.stop_all()
        if log_path.exists() and log_path.stat().st_size == 0:
            log_path.unlink()
    report["meta"]["loadavg_end"] = os.getloadavg()
    report["meta"]["daemon_log"] = str(log_path) if log_path.exists() else None
    report.update(assess(report, o.idle, o.logins))
    return report


def _phase_json(p: Phase) -> dict[str, Any]:
    s = p.samples
    return {
        "name": p.name,
        "elapsed_s": p.elapsed_s,
        "latencies_ms": [round(1000 * x, 3) for x in sorted(s.latencies)],
        "failed": sum(s.failures.values()),
        "failures": dict(s.failures),
        "fail_open": s.rules.get("fail-open", 0),
        "start_lag_p99_ms": round(1000 * _pct(sorted(s.lags), 0.99), 1) if s.lags else None,
        "logins_s": [round(x, 4) for x in p.logins.seconds],
        "login_statuses": dict(p.logins.statuses),
        "logins_given_up": p.logins.gave_up,
        "cpu": p.cpu,
        "attack": p.attack,
    }


def _meta(o: Options) -> dict[str, Any]:
    git = subprocess.run(
        ["git", "log", "-1", "--format=%h %s"], cwd=REPO_DIR, capture_output=True, text=True
    )
    return {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": git.stdout.strip()[:100],
        "cti": str(Path(cti.__file__).parent),  # PYTHONPATH may name another checkout's
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(o).items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    o = parse_options(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report = guarded_run("attack_bench", lambda: run_bench(o, stamp))
    if isinstance(report, int):
        return report
    path = o.results_dir / f"attack-{stamp}.json"
    slim = {**report, "phases": [_slim(p) for p in report.get("phases", [])]}
    return save_and_show(path, slim, report, render, strict=o.strict)


def _slim(phase: dict[str, Any]) -> dict[str, Any]:
    """The JSON keeps summaries, not every latency."""
    latencies = phase["latencies_ms"]
    summary = {
        q: _pct(latencies, f) if latencies else None for q, f in (("p50", 0.5), ("p99", 0.99))
    }
    return {
        **{k: v for k, v in phase.items() if k != "latencies_ms"},
        "latency_ms": {**summary, "max": latencies[-1] if latencies else None},
    }


if __name__ == "__main__":
    sys.exit(main())
