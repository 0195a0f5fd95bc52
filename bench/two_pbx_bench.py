"""Two PBXes against one cti, with transfers between them (issue 12's "Measure").

In ONE run on the real test bed (``bench/two_pbx_bed.py``: both sandbox Asterisks, a
real ``cti serve`` with ``CTI_PBXES=a,b``, SIPp phones and a sidebar WebSocket per agent
on both PBXes), each phase placing ``cti loadtest``'s callers (``cti.loadtest``'s
``run_callers``, its call mix and injection file):

1. **one PBX**: a alone at ``--rates`` in turn, up to the first rate that is not clean
   (a failed call, or routing p99 over ``--budget-ms``); the highest clean one is the
   PBX's rate;
2. **two PBXes**: a and b at once, each at that rate, then a step lower at a time
   until a phase is clean (the highest clean rate of the two together), with transfers:
   ``--transfer-share`` of the calls answered from the public trunk are
   blind-transferred by AMI (``BlindTransfer`` of the agent's leg to ``b-<queue>`` on a,
   ``a-<queue>`` on b, context ``agents``), so they cross the inter-PBX trunk and are
   attached on the other side.

Per phase: calls/s placed and completed, failed calls, routing ``decision_us`` p99 (from
``interactions``, as ``cti loadtest`` reports it), event-to-pop p99 (the ``ringing``
event's ``at``, Asterisk's own Timestamp, to the frame's arrival on the agent's
WebSocket), the attach outcomes (``cti_attach_total`` from ``/metrics``), cti's CPU per
completed call (utime+stime of the ``cti serve`` process over the phase), and the
two-PBX figures as ratios to the one-PBX phase at the same rate.

Run: ``.venv/bin/python -m bench.two_pbx_bench`` (``--quick``: two short rates). Needs
root (the sandbox), SIPp, PostgreSQL and Redis as the e2e tests do; it takes
``/tmp/cti-e2e.lock`` itself while Asterisk runs (do not wrap it in ``flock``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench.agi_load import host_ticks, process_cpu_s
from bench.harness import BENCH_DIR, BenchError, fmt, percentile, progress, run_main, run_meta
from bench.two_pbx_bed import PBXES, Bed, BedOptions, asterisk_pid, two_pbx_bed
from cti.interactions import routing_results
from cti.loadtest import (
    LoadTestError,
    build_calls,
    run_callers,
    wait_for_records,
    write_injection_file,
)
from cti.loadtest import Options as LoadOptions
from cti.sandbox_pbxes import HOME, SECOND, SandboxPbx
from cti.sipp_results import SippResult
from tests.e2e.ami import Ami

ATTACH_LINE = re.compile(r'^cti_attach_total\{[^}]*outcome="([a-z_]+)"[^}]*\}\s+([0-9.e+]+)', re.M)


@dataclass(frozen=True)
class Options:
    rates: tuple[float, ...]
    phase_s: float
    hold_s: float
    transfer_share: float
    budget_ms: float
    customers: int
    agent_ring_ms: int
    pg_server: str
    template: str
    redis_url: str
    seed: int
    quick: bool
    json_path: Path | None


# ------------------------------------------------------------------ transfers
@dataclass
class Transfers:
    """Blind-transfers a share of the calls answered on one PBX to the other one."""

    ami: Ami
    peer: str
    share: float
    rng: random.Random
    answered: int = 0
    sent: int = 0
    accepted: int = 0
    refused: int = 0
    pending: set[asyncio.Task[None]] = field(default_factory=set)

    async def watch(self) -> None:
        """Every AgentConnect of a call from the public trunk (not one that came over the
        inter-PBX trunk: that one crossed already) is a candidate."""
        seen = len(self.ami.events)
        while True:
            await asyncio.sleep(0.05)
            fresh, seen = self.ami.events[seen:], len(self.ami.events)
            for event in fresh:
                if event.get("Event") != "AgentConnect":
                    continue
                if event.get("Channel", "").startswith("PJSIP/pbx-"):
                    continue
                self.answered += 1
                if self.rng.random() < self.share:
                    task = asyncio.create_task(self._transfer(event))
                    self.pending.add(task)
                    task.add_done_callback(self.pending.discard)

    async def _transfer(self, event: dict[str, Any]) -> None:
        self.sent += 1
        try:
            reply = await self.ami.action(
                "BlindTransfer",
                Channel=event["DestChannel"],
                Context="agents",
                Exten=f"{self.peer}-{event['Queue']}",
            )
        except (TimeoutError, ConnectionError):
            self.refused += 1
            return
        if reply.get("Response") == "Success":
            self.accepted += 1
        else:
            self.refused += 1

    def figures(self) -> dict[str, int]:
        return {
            "answered": self.answered,
            "sent": self.sent,
            "accepted": self.accepted,
            "refused": self.refused,
        }


# ------------------------------------------------------------------ one phase
def attach_counts(metrics: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in ATTACH_LINE.finditer(metrics)}


def load_options(options: Options, pbx: SandboxPbx, rate: float, phase: int) -> LoadOptions:
    return LoadOptions(
        rate=rate,
        duration_s=options.phase_s,
        hold_s=options.hold_s,
        asterisk=pbx.sip_address,
        local_port=pbx.trunk_port,
        pbx=pbx,
        customers=options.customers,
        seed=options.seed + phase * 10 + (pbx != HOME),
    )


def injection_file(options: LoadOptions, workdir: Path) -> tuple[int, Path]:
    """The phase's calls from ``cti loadtest``'s call mix, written where SIPp reads them."""
    workdir.mkdir(parents=True)
    calls = max(1, round(options.rate * options.duration_s))
    injection = workdir / "calls.csv"
    assert options.customers is not None
    write_injection_file(injection, build_calls(calls, options, options.customers))
    return calls, injection


async def place(options: LoadOptions, workdir: Path) -> SippResult:
    """``cti loadtest``'s callers on one PBX for one phase (one SIPp, its results)."""
    calls, injection = injection_file(options, workdir)
    return await run_callers(options, workdir, calls, injection)


def p99_ms(values: Sequence[float]) -> float | None:
    return round(1000 * percentile(sorted(values), 0.99), 2) if values else None


async def run_phase(
    bed: Bed, options: Options, pbxes: Sequence[SandboxPbx], rate: float, phase: int
) -> dict[str, Any]:
    name = f"{'+'.join(p.name for p in pbxes)} {rate:g}/s" + (" each" if len(pbxes) > 1 else "")
    progress(f"phase {phase}: {name} for {options.phase_s:g} s (hold {options.hold_s:g} s)")
    stuck = await bed.quiet()
    if stuck:
        progress(f"  {stuck} channels of the previous phases still up after 30 s: hung up")
    transfers = [
        Transfers(bed.amis[p.name], peer, options.transfer_share, random.Random(phase))
        for p in pbxes
        if len(pbxes) > 1
        for peer in [next(q.name for q in PBXES if q != p)]
    ]
    watchers = [asyncio.create_task(t.watch()) for t in transfers]
    attach0 = attach_counts(await bed.metrics())
    pops0 = len(bed.sidebars.pops)
    cpu0, busy0 = process_cpu_s(bed.daemon.proc.pid), host_ticks()
    ast0 = {p.name: process_cpu_s(asterisk_pid(p) or 0) for p in PBXES}
    wall0, started = asyncio.get_running_loop().time(), datetime.now(UTC)
    try:
        results = await asyncio.gather(
            *(
                place(load_options(options, p, rate, phase), bed.workdir / f"p{phase}-{p.name}")
                for p in pbxes
            )
        )
    finally:
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        for t in transfers:
            await asyncio.gather(*t.pending, return_exceptions=True)
    wall = asyncio.get_running_loop().time() - wall0
    cpu = process_cpu_s(bed.daemon.proc.pid) - cpu0
    busy1 = host_ticks()
    ast = {p.name: process_cpu_s(asterisk_pid(p) or 0) - ast0[p.name] for p in PBXES}
    attach1 = attach_counts(await bed.metrics())
    for ami in bed.amis.values():
        ami.events.clear()
    pops = bed.sidebars.pops[pops0:]
    attempted = sum(r.attempted for r in results)
    completed = sum(r.successful for r in results)
    failed = sum(r.failed for r in results)
    conn = await asyncpg.connect(bed.database_url, timeout=10)
    try:
        since = started - timedelta(milliseconds=500)
        await wait_for_records(conn, since, attempted)
        routing = await routing_results(conn, since, datetime.now(UTC))
    finally:
        await conn.close()
    routing_p99 = routing.decision_us_p99 / 1000 if routing.decision_us_p99 is not None else None
    clean = failed == 0 and routing_p99 is not None and routing_p99 <= options.budget_ms
    ticks = os.sysconf("SC_CLK_TCK")
    return {
        "phase": name,
        "stuck_channels_before": stuck,
        "pbxes": [p.name for p in pbxes],
        "rate_each": rate,
        "seconds": round(wall, 1),
        "attempted": attempted,
        "completed": completed,
        "failed": failed,
        "placed_cps": round(sum(r.achieved_rate_cps for r in results), 2),
        "completed_cps": round(completed / options.phase_s, 2),
        "sipp": {p.name: asdict(r) for p, r in zip(pbxes, results, strict=True)},
        "routing": {
            "decisions": routing.decisions,
            "fail_open": routing.fail_open,
            "p50_ms": round(routing.decision_us_p50 / 1000, 2)
            if routing.decision_us_p50 is not None
            else None,
            "p99_ms": round(routing_p99, 2) if routing_p99 is not None else None,
            "max_ms": round(routing.decision_us_max / 1000, 2)
            if routing.decision_us_max is not None
            else None,
        },
        "pops": {
            "count": len(pops),
            "by_pbx": {
                name: sum(1 for p in pops if (p.pbx or HOME.name) == name)
                for name in (HOME.name, SECOND.name)
            },
            "p50_ms": round(1000 * percentile(sorted(p.arrived - p.at for p in pops), 0.5), 2)
            if pops
            else None,
            "p99_ms": p99_ms([p.arrived - p.at for p in pops]),
        },
        "transfers": {t.peer: t.figures() for t in transfers},
        "attach": {k: v - attach0.get(k, 0.0) for k, v in attach1.items() if v - attach0.get(k, 0)},
        "cti_cpu_s": round(cpu, 2),
        "cti_cpu_pct": round(100 * cpu / wall, 1),
        "cti_cpu_ms_per_call": round(1000 * cpu / completed, 2) if completed else None,
        "asterisk_cpu_pct": {k: round(100 * v / wall, 1) for k, v in ast.items()},
        "host_busy_pct": round(100 * (busy1[0] - busy0[0]) / ticks / wall, 1),
        "clean": clean,
    }


# ------------------------------------------------------------------ the run
IDLE_S = 10.0


async def idle_cpu_pct(bed: Bed, seconds: float) -> float:
    """cti's CPU with both PBXes up and no call (AMI pings, lease renewals, sockets):
    what a phase's CPU per call includes at a low rate."""
    cpu0, wall0 = process_cpu_s(bed.daemon.proc.pid), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall = process_cpu_s(bed.daemon.proc.pid) - cpu0, time.monotonic() - wall0
    return round(100 * cpu / wall, 1)


RATIO_KEYS = (
    ("completed_cps", "completed calls/s"),
    ("routing.p99_ms", "routing p99"),
    ("pops.p99_ms", "event-to-pop p99"),
    ("cti_cpu_pct", "cti CPU %"),
    ("cti_cpu_ms_per_call", "cti CPU per call"),
)


def figure(row: dict[str, Any], key: str) -> float | None:
    value: Any = row
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return float(value) if isinstance(value, int | float) else None


def ratios(two: dict[str, Any], one: dict[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key, _label in RATIO_KEYS:
        a, b = figure(two, key), figure(one, key)
        out[key] = round(a / b, 2) if a is not None and b else None
    return out


async def run(options: Options) -> dict[str, Any]:
    if os.geteuid() != 0:
        raise BenchError("needs root: scripts/asterisk-sandbox uses chroot and mount")
    if shutil.which("sipp") is None:
        raise BenchError("sipp not found: install Debian's sip-tester package")
    report: dict[str, Any] = run_meta(options, bench="two_pbx")
    report["two_pbx_clean_rate_each"] = None
    phases: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cti-2pbx-") as tmp:
        bed_options = BedOptions(
            options.pg_server,
            options.template,
            options.redis_url,
            options.customers,
            options.agent_ring_ms,
            Path(tmp),
        )
        async with two_pbx_bed(bed_options) as bed:
            report["idle_cti_cpu_pct"] = await idle_cpu_pct(bed, IDLE_S)
            progress(f"cti serve idle (both PBXes up, no calls): {report['idle_cti_cpu_pct']}%")
            one: dict[float, dict[str, Any]] = {}
            best: float | None = None
            for rate in options.rates:
                row = await run_phase(bed, options, [HOME], rate, len(phases) + 1)
                phases.append(row)
                one[rate] = row
                progress(summary_line(row))
                if not row["clean"]:
                    break
                best = rate
            # Both at the one-PBX rate, then a step lower each time until a phase is clean.
            comparisons: list[dict[str, Any]] = []
            top = best if best is not None else options.rates[0]
            for rate in sorted((r for r in options.rates if r <= top), reverse=True):
                row = await run_phase(bed, options, [HOME, SECOND], rate, len(phases) + 1)
                phases.append(row)
                progress(summary_line(row))
                comparisons.append({"rate_each": rate, "ratios": ratios(row, one[rate])})
                if row["clean"]:
                    report["two_pbx_clean_rate_each"] = rate
                    break
            report["daemon_warnings"] = tail_lines(bed.workdir / "daemon.log")
            report["sidebars"] = {
                "frames": bed.sidebars.frames,
                "closed_early": bed.sidebars.closed_early,
                "wrong_agent": bed.sidebars.wrong_agent,
            }
    report["one_pbx_clean_rate"] = best
    report["phases"] = phases
    report["comparisons"] = comparisons
    report["loadavg_end"] = os.getloadavg()[0]
    return report


def tail_lines(path: Path, lines: int = 10) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


# ------------------------------------------------------------------ the table
def summary_line(row: dict[str, Any]) -> str:
    return (
        f"  {row['phase']}: {row['completed']}/{row['attempted']} completed, {row['failed']}"
        f" failed, routing p99 {fmt(row['routing']['p99_ms'], '.2f')} ms, pop p99"
        f" {fmt(row['pops']['p99_ms'], '.2f')} ms, cti {row['cti_cpu_pct']}%"
        f" -> {'clean' if row['clean'] else 'NOT clean'}"
    )


def render(report: dict[str, Any]) -> str:
    head = (
        f"{'phase':<16} {'placed/s':>8} {'done/s':>7} {'calls':>6} {'fail':>5} {'f-open':>6}"
        f" {'route p99':>9}"
        f" {'pops':>5} {'pop p50':>8} {'pop p99':>8} {'xfer':>7} {'attached':>8}"
        f" {'cti cpu':>7} {'ms/call':>7} {'ast a/b':>9} {'host':>5} clean"
    )
    lines = [head]
    for row in report["phases"]:
        xfer = sum(t["accepted"] for t in row["transfers"].values())
        sent = sum(t["sent"] for t in row["transfers"].values())
        ast = row["asterisk_cpu_pct"]
        lines.append(
            f"{row['phase']:<16} {row['placed_cps']:>8.1f} {row['completed_cps']:>7.1f}"
            f" {row['attempted']:>6} {row['failed']:>5} {row['routing']['fail_open']:>6}"
            f" {fmt(row['routing']['p99_ms'], '.2f'):>6} ms {row['pops']['count']:>5}"
            f" {fmt(row['pops']['p50_ms'], '.1f'):>5} ms {fmt(row['pops']['p99_ms'], '.1f'):>5} ms"
            f" {f'{xfer}/{sent}' if sent else '-':>7} {int(row['attach'].get('attached', 0)):>8}"
            f" {row['cti_cpu_pct']:>6.1f}% {fmt(row['cti_cpu_ms_per_call'], '.2f'):>7}"
            f" {ast.get('a', 0):>4.0f}/{ast.get('b', 0):<4.0f} {row['host_busy_pct']:>4.0f}%"
            f" {'yes' if row['clean'] else 'NO'}"
        )
    lines.append("")
    lines.append(
        f"one PBX, highest clean rate: {fmt(report['one_pbx_clean_rate'], 'g')} calls/s;"
        f" two PBXes together: {fmt(report['two_pbx_clean_rate_each'], 'g')} calls/s each"
        " (clean: no failed call, routing p99 within the budget)"
    )
    idle = report["idle_cti_cpu_pct"]
    lines.append(f"cti serve idle (both PBXes up, no call): {idle}% of a core")
    for comp in report["comparisons"]:
        parts = ", ".join(
            f"{label} {fmt(comp['ratios'][key], '.2f')}x" for key, label in RATIO_KEYS
        )
        lines.append(f"two PBXes at {comp['rate_each']:g}/s each vs one PBX at it: {parts}")
    for row in report["phases"]:
        if row.get("stuck_channels_before"):
            lines.append(
                f"  {row['phase']}: {row['stuck_channels_before']} channels left by earlier"
                " phases (callers SIPp aborted without a BYE) were hung up before it"
            )
        extra = [f"{k} {int(v)}" for k, v in row["attach"].items() if k != "attached"]
        if extra:
            lines.append(f"  {row['phase']}: other attach outcomes: {', '.join(extra)}")
        for pbx, sipp in row["sipp"].items():
            if sipp["failed"]:
                lines.append(
                    f"  {row['phase']} ({pbx}): failures {sipp['failure_counters']}"
                    f" {sipp['unexpected_codes']} {sipp['error_lines'][:2]}"
                )
    lines.append(
        "f-open: calls routed on the fail-open path (no customer data; counted, not failed);"
        " event-to-pop: the ringing event's `at` (Asterisk's Timestamp) to the frame's arrival"
        " on the agent's WebSocket (wall clock, same machine); cti cpu: % of one core, ms/call:"
        " cti CPU over the phase / completed calls; ast a/b, host: % of one core"
    )
    return "\n".join(lines)


# ------------------------------------------------------------------ command line
def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.two_pbx_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: 10 and 20/s, 8 s")
    parser.add_argument("--rates", help="one-PBX rates to step through, calls/s (10,20,30,...)")
    parser.add_argument("--phase", type=float, help="seconds of new calls per phase (20)")
    parser.add_argument("--hold", type=float, default=5.0, help="seconds each caller stays (5)")
    parser.add_argument("--transfer-share", type=float, default=0.2, help="of answered calls")
    parser.add_argument("--budget-ms", type=float, default=200.0, help="routing p99 budget")
    parser.add_argument("--customers", type=int, default=20_000, help="demo customers")
    parser.add_argument("--agent-ring", type=int, default=200, help="phones' ring time, ms")
    parser.add_argument(
        "--pg-server", default=os.environ.get("CTI_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
    )
    parser.add_argument(
        "--template", default=os.environ.get("CTI_TEST_TEMPLATE", "cti_test_template")
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("CTI_TEST_REDIS", "redis://127.0.0.1:6379/11")
    )
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument(
        "--json", nargs="?", const="", metavar="PATH", help="write the results as JSON"
    )
    args = parser.parse_args(argv)
    default_rates = "10,20" if args.quick else "10,20,30,40,50,60,80"
    rates = tuple(sorted(float(r) for r in (args.rates or default_rates).split(",")))
    if not rates or rates[0] <= 0:
        parser.error("--rates must be positive")
    json_path: Path | None = None
    if args.json is not None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        json_path = Path(args.json) if args.json else BENCH_DIR / "results" / f"2pbx-{stamp}.json"
    return Options(
        rates=rates,
        phase_s=args.phase or (8.0 if args.quick else 20.0),
        hold_s=args.hold,
        transfer_share=args.transfer_share,
        budget_ms=args.budget_ms,
        customers=args.customers,
        agent_ring_ms=args.agent_ring,
        pg_server=args.pg_server.rstrip("/"),
        template=args.template,
        redis_url=args.redis_url,
        seed=args.seed,
        quick=args.quick,
        json_path=json_path,
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    return run_main(
        "two_pbx_bench",
        lambda: run(options),
        render,
        options.json_path,
        errors=(LoadTestError, RuntimeError, asyncpg.PostgresError),
        uvloop=False,  # the sandbox's Asterisk would keep our pipe to its script
    )


if __name__ == "__main__":
    raise SystemExit(main())
