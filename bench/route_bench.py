"""Route benchmark: the FastAGI ``route`` script over real TCP against real PostgreSQL.

Starts ``cti serve`` and a bare asyncio FastAGI responder (``bench/bare_agi.py``) as
subprocesses, drives both with a load generator that speaks FastAGI the way Asterisk 22
does, and reports client-observed latency and routes per second at fixed offered rates
(open loop) and with N concurrent callers (closed loop), ours next to the bare floor.
See bench/README.md for what is measured and how to read it.

    .venv/bin/python -m bench.route_bench [--quick] [--duration S] [--customers N]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import random
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bench.agi_load import (
    CALL_MIX,
    HOST,
    CallResult,
    CpuSnapshot,
    Samples,
    Workload,
    closed_loop,
    cpu_usage,
    open_loop,
    place_call,
)
from bench.route_options import BenchError, Options, check_dedicated, parse_options
from bench.route_report import assess, render
from cti.callmix import demo_customer_number

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
BARE_RESPONDER = BENCH_DIR / "bare_agi.py"

FAIL_OPEN_RULE = "fail-open"

READY_TIMEOUT_S = 30.0  # a subprocess until it routes
STOP_TIMEOUT_S = 20.0  # the daemon flushes its writers on SIGTERM


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


def guarded_run(name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any] | int:
    """``run()``'s report, with SIGTERM made a SystemExit so that the bench's ``finally``
    blocks stop its subprocesses; or the exit status: 130 when interrupted, 2 when it
    failed (the failure said on stderr, after ``name``)."""

    def on_sigterm(_signum: int, _frame: object) -> None:
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        return run()
    except KeyboardInterrupt:
        progress("interrupted; subprocesses stopped")
        return 130
    except (BenchError, OSError, asyncpg.PostgresError, RedisError) as exc:
        progress(f"{name}: {type(exc).__name__}: {exc}")
        return 2


def save_and_show(
    path: Path,
    saved: dict[str, Any],
    report: dict[str, Any],
    render: Callable[[dict[str, Any]], str],
    *,
    strict: bool,
) -> int:
    """Writes ``saved`` (the report, or a slimmer copy of it) to ``path`` as JSON and
    prints the rendered ``report``; the exit status: 1 when ``strict`` and a target
    failed, else 0."""
    path.write_text(json.dumps(saved, indent=2) + "\n")
    print(render(report))
    print(f"\nresults: {path.relative_to(REPO_DIR) if path.is_relative_to(REPO_DIR) else path}")
    failed = any(t["verdict"] == "FAIL" for t in report["targets"])
    return 1 if strict and failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report = guarded_run("route_bench", lambda: run_bench(options, stamp))
    if isinstance(report, int):
        return report
    path = options.results_dir / f"route-{stamp}.json"
    return save_and_show(path, report, report, render, strict=options.strict)


if __name__ == "__main__":
    sys.exit(main())
