"""Routing and the sidebar in one process or two: FastAGI route latency, quiet and while
1,100 idle HTTP connections press on the sidebar's port (issue 9, finding 2).

For each layout, under ``ulimit -n 1024`` (soft and hard, as a service often gets):

* **one**: ``cti serve`` with the sidebar (``CTI_SESSION_SECRET`` set);
* **two**: ``cti serve`` with ``CTI_HTTP_ENABLED=no`` and ``cti screenpop`` beside it.

each phase places ``--routes`` calls through the FastAGI ``route`` script, ``--callers``
at a time (closed loop), first quiet, then while ``tests/fakes/agi_flood.py --http``
holds 1,100 connections (eight loopback addresses) that send part of a request and
reconnect when closed. Prints one line per phase: p50/p99/max end to end and failures.

    .venv/bin/python -m bench.split_bench [--routes 1000] [--callers 4]

Needs PostgreSQL on 127.0.0.1:5432 (trust, user postgres) and Redis; uses the database
``cti_bench_split`` (created, migrated, seeded with 2,000 demo customers) and
``--redis-url`` (default db 1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

from tests.fakes.asterisk_agi import agi_call
from tests.processes import free_port

ROOT = Path(__file__).resolve().parents[1]
DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/cti_bench_split"
DESCRIPTORS = 1024
SECRET = "split-bench-secret-not-a-real-one-0123456789"
GOLD = {"callerid": "2120000002", "dnid": "5550100"}
SOURCES = ",".join(f"127.0.0.{i}" for i in range(2, 10))


def _small_table() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (DESCRIPTORS, DESCRIPTORS))


def _cti(*args: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "cti", *args], env=env, check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)  # fmt: skip


@contextlib.asynccontextmanager
async def _process(*args: str, env: dict[str, str]) -> AsyncIterator[None]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", *args, env=env, cwd=ROOT, preexec_fn=_small_table,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _routes(port: int, n: int, callers: int) -> tuple[list[float], int]:
    times: list[float] = []
    failed = 0
    queue = iter(range(n))

    async def caller() -> None:
        nonlocal failed
        for i in queue:
            began = time.perf_counter()
            try:
                result = await agi_call("127.0.0.1", port, **GOLD, uniqueid=f"9.{i}", within_s=10)
                ok = bool(result.var("CTI_ROUTE"))
            except (OSError, TimeoutError):
                ok = False
            times.append(time.perf_counter() - began)
            failed += not ok

    await asyncio.gather(*(caller() for _ in range(callers)))
    return sorted(times), failed


def _line(layout: str, phase: str, times: list[float], failed: int) -> str:
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return (
        f"{layout:>3} process(es), {phase:<28} {len(times)} routes: p50"
        f" {statistics.median(times) * 1000:6.1f} ms  p99 {p99 * 1000:6.1f} ms"
        f"  max {times[-1] * 1000:7.1f} ms  failed {failed}"
    )


async def _layout(layout: str, args: argparse.Namespace, base: dict[str, str]) -> list[str]:
    agi, http = free_port(), free_port()
    env = {**base, "CTI_AGI_BIND": f"127.0.0.1:{agi}", "CTI_HTTP_BIND": f"127.0.0.1:{http}"}
    lines = []
    async with contextlib.AsyncExitStack() as stack:
        if layout == "one":
            await stack.enter_async_context(_process("cti", "serve", env=env))
        else:
            await stack.enter_async_context(
                _process("cti", "serve", env={**env, "CTI_HTTP_ENABLED": "no"})
            )
            await stack.enter_async_context(_process("cti", "screenpop", env=env))
        deadline = time.monotonic() + 60
        while True:  # serving, and the plan loaded
            with contextlib.suppress(OSError, TimeoutError):
                result = await agi_call("127.0.0.1", agi, **GOLD)
                if result.var("CTI_RULE") == "gold":
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"{layout}: cti did not route within 60 s")
            await asyncio.sleep(0.2)
        await _routes(agi, 100, args.callers)  # warm up
        lines.append(_line(layout, "quiet", *await _routes(agi, args.routes, args.callers)))
        flood = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.fakes.agi_flood", str(http), "--http",
            "--workers", "1100", "--source", SOURCES, "--rounds", "1000",
            "--pause-s", "0.2", "--seconds", "300",
            cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert flood.stdout is not None
            await asyncio.wait_for(flood.stdout.readline(), 60)  # all 1,100 connected once
            times, failed = await _routes(agi, args.routes, args.callers)
            lines.append(_line(layout, "1,100 idle HTTP connections", times, failed))
        finally:
            flood.terminate()
            await flood.wait()
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=1000)
    parser.add_argument("--callers", type=int, default=4)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/1")
    args = parser.parse_args()
    base = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CTI_")},
        "CTI_DATABASE_URL": DATABASE_URL, "CTI_REDIS_URL": args.redis_url,
        "CTI_SESSION_SECRET": SECRET, "CTI_LOG_LEVEL": "warning", "CTI_LOG_FORMAT": "json",
        "CTI_PLAN_CACHE": "", "CTI_CALL_DATA_TTL_S": "60",
    }  # fmt: skip
    _cti("db", "migrate", env=base)
    _cti("db", "seed-demo", "--customers", "2000", env={**base, "CTI_DEMO_PASSWORD": SECRET})
    for layout in ("one", "two", "one", "two"):  # twice each, interleaved: same machine
        for line in await _layout(layout, args, base):
            print(line, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
