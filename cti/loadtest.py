"""``cti loadtest``: real SIP calls against a running stack, and what routing made of them.

Places calls with SIPp (``sipp/caller.xml``) from the trunk address at a fixed rate for
a fixed time, each caller staying ``--hold`` seconds, then reports:

- from SIPp (its ``-trace_stat``/``-trace_counts`` CSVs and ``-trace_err`` log): calls
  attempted, successful, failed, SIPp's failure counters, which scenario step timed
  out or got an unexpected message, and the most frequent error lines;
- from PostgreSQL (``interactions``, by ``routed_at`` inside the run window): how many
  routing decisions the daemon made, their ``decision_us`` p50/p99/max, how many
  failed open (and why), and the split by rule.

Calls come from the demo data (``cti db seed-demo``): mostly known customers (ANI
``212`` + the 7 digits of account ``A0000001``..``A<N>``), some unknown callers and some
with a withheld number (``anonymous``), to ``5550100`` and ``5550300``.

Agents: the queues only connect a caller when an agent's phone answers. With
``--agents`` the load test starts SIPp agent phones 2001-2006 (``sipp/agent.xml``,
``--agent-ring`` ms ring), which register with their passwords (``cti.agent_phones``:
``CTI_AGENT_200N_PASSWORD`` or the sandbox's file), for the run and stops them
afterwards; leave it out when agents are already up. Callers hang up after ``--hold``
seconds whether or not an agent took the call, so a call counts as successful when its
SIP dialogue completed.

Two PBXes (issue 12): ``--pbx b`` places the calls on the test bed's second Asterisk
(``scripts/asterisk-sandbox --pbx b``: SIP 5160, callers from 5180, agents' phones on
517N with b's own passwords, :mod:`cti.sandbox_pbxes`); ``--asterisk`` and
``--local-port`` still override. Run one load test per PBX at the same time to load both.

Run: ``python -m cti.loadtest --rate 10 --duration 60 --hold 10 --agents`` (the
database from ``CTI_DATABASE_URL``, like every ``cti`` command). Exit status 0 when
the failed share is at most ``--max-failed-pct``, 2 when above, 1 when the test could
not run (message on stderr).

Nothing else may place calls from the trunk port or write ``interactions`` during the
run: the decision counts are taken by time window.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from cti.agent_phones import (
    PhoneError,
    password_of,
    registration_argv,
    sandbox_passwords,
    wait_until_registered,
)
from cti.callmix import CallMix
from cti.config import redacted_url
from cti.interactions import RoutingResult, decisions_since, routing_results
from cti.sandbox_pbxes import HOME, SANDBOX_PBXES, SandboxPbx, sandbox_pbx
from cti.sipp_results import SippResult, parse_sipp_results

REPO = Path(__file__).resolve().parents[1]
SIPP_DIR = REPO / "sipp"
AGENTS = tuple(range(2001, 2007))


class LoadTestError(RuntimeError):
    """The load test could not run; the message says why."""


@dataclass(frozen=True)
class Options:
    rate: float = 10.0  # calls per second
    duration_s: float = 60.0  # how long new calls are started
    hold_s: float = 10.0  # how long each caller stays (queue + talk)
    asterisk: str = "127.0.0.1:5060"
    local_ip: str = "127.0.0.1"
    local_port: int = 5080  # the trunk is recognised by this source port
    dnis: tuple[str, ...] = ("5550100", "5550300")
    unknown_share: float = 0.10
    withheld_share: float = 0.05
    customers: int | None = None  # highest demo customer index; None: ask the database
    agents: bool = False  # start SIPp agents 2001-2006 for the run
    agent_ring_ms: int = 500
    agent_host: str = "127.0.0.1"
    max_failed_pct: float = 0.1
    seed: int | None = None
    sipp: str = "sipp"
    scenario_dir: Path = SIPP_DIR
    workdir: Path | None = None  # keep SIPp's files here (default: a temp dir, removed)
    pbx: SandboxPbx = HOME  # whose agents' phones --agents starts (ports, passwords)


@dataclass
class Report:
    options: dict[str, Any]
    started_at: str
    ended_at: str
    calls: SippResult
    routing: RoutingResult
    agents_started: list[int]

    @property
    def failed_pct(self) -> float:
        return 100.0 * self.calls.failed / self.calls.attempted if self.calls.attempted else 0.0

    @property
    def passed(self) -> bool:
        return self.calls.attempted > 0 and self.failed_pct <= self.options["max_failed_pct"]

    def as_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["calls"]["failed_pct"] = round(self.failed_pct, 4)
        doc["calls"]["error_lines"] = [
            {"message": m, "count": n} for m, n in self.calls.error_lines
        ]
        doc["passed"] = self.passed
        return doc


# ------------------------------------------------------------------ the calls
def call_mix(options: Options) -> CallMix:
    """The options' mix: no caller without a number (a SIP trunk always sends one),
    every dialled number as likely."""
    return CallMix(
        unknown_share=options.unknown_share,
        withheld_share=options.withheld_share,
        dialled=tuple((dnis, 1.0) for dnis in options.dnis),
    )


def build_calls(count: int, options: Options, customers: int) -> list[tuple[str, str, str, str]]:
    """``count`` injection rows (ANI, DNIS, IVR account, IVR intent) from the demo data."""
    rng = random.Random(options.seed)
    mix = call_mix(options)
    return [
        (mix.caller(rng, customers).number, mix.number_dialled(rng), "", "") for _ in range(count)
    ]


def write_injection_file(path: Path, rows: Sequence[tuple[str, str, str, str]]) -> None:
    with path.open("w") as out:
        out.write("SEQUENTIAL\n")
        out.writelines(";".join(row) + "\n" for row in rows)


async def demo_customer_count(conn: asyncpg.Connection) -> int:
    top = await conn.fetchval(
        "SELECT max(substr(account_number, 2)::int) FROM customers"
        " WHERE account_number ~ '^A[0-9]{7}$'"
    )
    if not top:
        raise LoadTestError("no demo customers in the database (load them with: cti db seed-demo)")
    return int(top)


# ------------------------------------------------------------------ processes
def udp_port_bound(port: int) -> bool:
    """Whether some socket is bound to UDP ``port`` (IPv4), from /proc/net/udp."""
    wanted = f":{port:04X}"
    try:
        with open("/proc/net/udp") as table:
            return any(line.split()[1].endswith(wanted) for line in list(table)[1:])
    except OSError:
        return False


def agent_port(agent: int, pbx: SandboxPbx = HOME) -> int:
    """Agent 200N's phone listens on 507N (517N on the sandbox's PBX b)."""
    return pbx.agent_port(agent)


async def spawn_agent_phone(
    agent: int,
    *,
    sipp: str,
    scenario: Path,
    host: str,
    ring_ms: int,
    workdir: Path,
    asterisk: str = "127.0.0.1:5060",
    password: str | None = None,
    pbx: SandboxPbx = HOME,
) -> asyncio.subprocess.Process:
    """Start one SIPp agent phone: it registers as ``agent`` (``password``, default from
    :func:`cti.agent_phones.agent_passwords`) and answers calls with ``scenario``
    (``sipp/agent.xml``); its own RTP ports, by agent number. Registered once
    :func:`cti.agent_phones.wait_until_registered` returns. ``pbx``: which sandbox
    PBX's phone (its ports; ``asterisk`` says where it registers)."""
    port = agent_port(agent, pbx)
    if udp_port_bound(port):
        raise LoadTestError(f"UDP port {port} (agent {agent}) is already in use")
    try:
        password = password or password_of(agent)
    except PhoneError as exc:
        raise LoadTestError(str(exc)) from None
    register = registration_argv(
        agent, sipp=sipp, host=host, port=port, asterisk=asterisk, password=password,
        workdir=workdir, scenario=scenario.with_name("agent-register.xml"),
    )  # fmt: skip
    return await asyncio.create_subprocess_exec(
        *register, "-oocsf", str(scenario), "-mp", str(pbx.media_port(agent)),
        "-d", str(ring_ms),
        "-trace_err", "-error_file", str(workdir / f"agent-{agent}-errors.log"),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL, cwd=workdir, start_new_session=True,
    )  # fmt: skip


async def wait_until_bound(
    phones: Mapping[int, asyncio.subprocess.Process], within_s: float = 5, pbx: SandboxPbx = HOME
) -> None:
    """Wait until every phone has bound its SIP port; fail if one exits or is too slow."""
    deadline = time.monotonic() + within_s
    for agent, proc in phones.items():
        while not udp_port_bound(agent_port(agent, pbx)):
            if proc.returncode is not None:
                raise LoadTestError(f"SIPp agent {agent} exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise LoadTestError(f"SIPp agent {agent} did not bind its port within {within_s} s")
            await asyncio.sleep(0.05)


async def stop_process(proc: asyncio.subprocess.Process, grace_s: float = 5) -> int | None:
    """SIGTERM the process (by its pid), SIGKILL after ``grace_s``; return its exit code."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            await asyncio.wait_for(proc.wait(), 5)
    return proc.returncode


async def start_agents(options: Options, workdir: Path) -> list[asyncio.subprocess.Process]:
    phones: dict[int, asyncio.subprocess.Process] = {}
    # The home PBX's phones keep password_of's lookup (and its message); b's are b's own.
    passwords = {} if options.pbx == HOME else sandbox_passwords(options.pbx)
    try:
        for agent in AGENTS:
            phones[agent] = await spawn_agent_phone(
                agent,
                sipp=options.sipp,
                scenario=options.scenario_dir / "agent.xml",
                host=options.agent_host,
                ring_ms=options.agent_ring_ms,
                workdir=workdir,
                asterisk=options.asterisk,
                password=passwords.get(agent) or None,
                pbx=options.pbx,
            )
        await wait_until_bound(phones, pbx=options.pbx)
        await wait_until_registered(phones, workdir)
    except (LoadTestError, PhoneError) as exc:
        await asyncio.gather(*(stop_process(p) for p in phones.values()))
        raise LoadTestError(f"{exc}; if agents are already up, run without --agents") from None
    except BaseException:
        await asyncio.gather(*(stop_process(p) for p in phones.values()))
        raise
    return list(phones.values())


async def run_callers(options: Options, workdir: Path, calls: int, csv_path: Path) -> SippResult:
    """One SIPp caller for the whole run; returns its parsed results once every call ended."""
    if udp_port_bound(options.local_port):
        raise LoadTestError(
            f"UDP port {options.local_port} (the trunk's source port) is in use:"
            " another SIPp caller running?"
        )
    hold_ms = int(options.hold_s * 1000)
    # Concurrent calls: rate x (hold + set-up and teardown) with room to spare.
    limit = max(10, int(options.rate * (options.hold_s + 10) * 2))
    deadline_s = options.duration_s + options.hold_s + 120
    argv = [
        options.sipp, options.asterisk, "-sf", str(options.scenario_dir / "caller.xml"),
        "-inf", str(csv_path), "-i", options.local_ip, "-p", str(options.local_port),
        "-r", f"{options.rate:g}", "-rp", "1000", "-m", str(calls), "-l", str(limit),
        "-d", str(hold_ms), "-nostdin", "-timeout", f"{int(deadline_s)}s",
        "-trace_stat", "-stf", str(workdir / "stat.csv"), "-fd", "1",
        "-trace_counts", "-trace_err", "-error_file", str(workdir / "errors.log"),
        "-trace_error_codes", "-trace_screen", "-screen_file", str(workdir / "screen.log"),
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=workdir,
        start_new_session=True,
    )
    err = b""
    try:
        _out, err = await asyncio.wait_for(proc.communicate(), deadline_s + 30)
    except TimeoutError:
        # SIPp overran its own -timeout: an overloaded Asterisk leaves calls hanging.
        # Stop it and report what it counted rather than nothing.
        print(
            f"loadtest: SIPp still running after {deadline_s + 30:.0f} s; stopping it",
            file=sys.stderr,
        )
        await stop_process(proc)
    except BaseException:
        await stop_process(proc)
        raise
    code = proc.returncode if proc.returncode is not None else -1
    if not (workdir / "stat.csv").exists():
        raise LoadTestError(
            f"SIPp exited with {code} before placing calls: {err.decode(errors='replace')[-800:]}"
        )
    return parse_sipp_results(workdir, code, proc.pid)


# ------------------------------------------------------------------ routing
async def wait_for_records(
    conn: asyncpg.Connection, since: datetime, expected: int, settle_s: float = 3, cap_s: float = 30
) -> None:
    """The daemon writes interactions in batches: wait until all arrived or the count settles."""
    deadline = time.monotonic() + cap_s
    last, stable_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = await decisions_since(conn, since)
        if count >= expected:
            return
        if count != last:
            last, stable_since = count, time.monotonic()
        elif time.monotonic() - stable_since >= settle_s:
            return
        await asyncio.sleep(0.5)


# ------------------------------------------------------------------ the run
async def run_loadtest(options: Options, database_url: str) -> Report:
    """Place ``rate x duration`` calls, wait for them to end, and report. Raises LoadTestError."""
    if shutil.which(options.sipp) is None:
        raise LoadTestError(f"{options.sipp} not found: install Debian's sip-tester package")
    if not (options.scenario_dir / "caller.xml").is_file():  # e.g. cti installed from a wheel
        raise LoadTestError(
            f"no caller.xml in {options.scenario_dir}: give --scenarios, the sipp/ folder"
            " of a checkout"
        )
    if options.rate <= 0 or options.duration_s <= 0 or options.hold_s < 0:
        raise LoadTestError("--rate and --duration must be positive, --hold not negative")
    calls = max(1, round(options.rate * options.duration_s))
    try:
        conn = await asyncpg.connect(database_url, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise LoadTestError(f"database {redacted_url(database_url)}: {exc}") from None
    try:
        customers = options.customers or await demo_customer_count(conn)
        with contextlib.ExitStack() as stack:
            if options.workdir is None:
                workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cti-lt-")))
            else:  # one directory per run: SIPp's files are named after the scenario
                workdir = options.workdir / datetime.now(UTC).strftime("run-%Y%m%dT%H%M%SZ")
                workdir.mkdir(parents=True, exist_ok=True)
            injection = workdir / "calls.csv"
            write_injection_file(injection, build_calls(calls, options, customers))
            agents = await start_agents(options, workdir) if options.agents else []
            try:
                started = datetime.now(UTC) - timedelta(milliseconds=500)
                sipp = await run_callers(options, workdir, calls, injection)
            finally:
                await asyncio.gather(*(stop_process(p) for p in agents))
            await wait_for_records(conn, started, sipp.attempted)
            ended = datetime.now(UTC)
            routing = await routing_results(conn, started, ended)
    finally:
        await conn.close()
    opts = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()}
    opts["customers"] = customers
    opts["pbx"] = options.pbx.name
    return Report(
        options=opts,
        started_at=started.isoformat(),
        ended_at=ended.isoformat(),
        calls=sipp,
        routing=routing,
        agents_started=list(AGENTS) if options.agents else [],
    )


HINTS = {
    "488": "Asterisk could not set up media; at high concurrency usually its RTP ports ran"
    " out (rtp.conf rtpstart-rtpend, 2 ports per channel; 'RTP' errors in its log)",
    "503": "Asterisk refused the call (overloaded, or no route); see its log",
    "404": "no dialplan extension for that DNIS in the trunk's context",
}


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.2f} ms"


def format_report(report: Report) -> str:
    o, c, r = report.options, report.calls, report.routing
    lines = [
        f"cti load test: {o['rate']:g} calls/s for {o['duration_s']:g} s, hold {o['hold_s']:g} s,"
        f" against {o['asterisk']} (PBX {o.get('pbx', HOME.name)};"
        f" customers A0000001..A{o['customers']:07d},"
        f" {o['unknown_share']:.0%} unknown, {o['withheld_share']:.0%} withheld;"
        f" DNIS {', '.join(o['dnis'])}"
        + ("; agents 2001-2006 started)" if report.agents_started else ")"),
        f"  calls      attempted {c.attempted}  successful {c.successful}  failed {c.failed}"
        f" ({report.failed_pct:.3f}%)  retransmissions {c.retransmissions}"
        f"  [sipp exit {c.exit_code}; {c.achieved_rate_cps:g} calls/s placed over"
        f" {c.placing_s:g} s; done after {c.elapsed_s:g} s]",
    ]
    if c.failure_counters:
        lines.append("  failures   " + ", ".join(f"{k} {v}" for k, v in c.failure_counters.items()))
    if c.step_problems:
        lines.append("  at steps   " + ", ".join(f"{k} {v}" for k, v in c.step_problems.items()))
    if c.unexpected_codes:
        lines.append(
            "  unexpected " + ", ".join(f"SIP {k} x{v}" for k, v in c.unexpected_codes.items())
        )
    for code, hint in HINTS.items():
        if code in c.unexpected_codes:
            lines.append(f"  hint       SIP {code}: {hint}")
    lines += [f"  error      {n} x {m[:150]}" for m, n in c.error_lines[:5]]
    lines.append(
        f"  routing    decisions {r.decisions} (of {c.attempted} calls)  fail-open {r.fail_open}"
        + (f" {r.fail_open_reasons}" if r.fail_open_reasons else "")
        + f"  decision p50 {_ms(r.decision_us_p50)}  p99 {_ms(r.decision_us_p99)}"
        f"  max {_ms(r.decision_us_max)}"
    )
    if r.by_rule:
        lines.append("  rules      " + ", ".join(f"{k} {v}" for k, v in r.by_rule.items()))
    if r.by_queue:
        lines.append("  queues     " + ", ".join(f"{k} {v}" for k, v in r.by_queue.items()))
    verdict = "PASS" if report.passed else "FAIL"
    lines.append(
        f"  result     {verdict}: {report.failed_pct:.3f}% failed (limit {o['max_failed_pct']}%)"
    )
    return "\n".join(lines)


# ------------------------------------------------------------------ command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``cti loadtest`` options (also used by ``python -m cti.loadtest``)."""
    parser.add_argument("--rate", type=float, default=10.0, help="calls per second (10)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of new calls (60)")
    parser.add_argument("--hold", type=float, default=10.0, help="seconds each caller stays (10)")
    parser.add_argument(
        "--pbx",
        choices=sorted(SANDBOX_PBXES),
        default=HOME.name,
        help="the test bed's PBX to call: a (5060) or b (5160, scripts/asterisk-sandbox --pbx b)",
    )
    parser.add_argument(
        "--asterisk", default=None, help="Asterisk SIP host:port (the --pbx's: 127.0.0.1:5060)"
    )
    parser.add_argument("--local-ip", default="127.0.0.1", help="callers' address (the trunk)")
    parser.add_argument(
        "--local-port", type=int, default=None, help="callers' SIP port (the --pbx's: 5080)"
    )
    parser.add_argument(
        "--dnis", default="5550100,5550300", help="dialled numbers, comma separated"
    )
    parser.add_argument("--unknown-share", type=float, default=0.10, help="unknown callers")
    parser.add_argument("--withheld-share", type=float, default=0.05, help="withheld numbers")
    parser.add_argument(
        "--customers", type=int, default=None, help="demo customers to call from (default: all)"
    )
    parser.add_argument(
        "--agents", action="store_true", help="start SIPp agents 2001-2006 for the run"
    )
    parser.add_argument("--agent-ring", type=int, default=500, help="agents' ring time, ms (500)")
    parser.add_argument("--agent-host", default="127.0.0.1", help="address the agents bind")
    parser.add_argument(
        "--max-failed-pct", type=float, default=0.1, help="pass limit, percent failed (0.1)"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed of the call mix")
    parser.add_argument("--sipp", default="sipp", help="SIPp binary")
    parser.add_argument(
        "--scenarios", type=Path, default=SIPP_DIR, help="directory of caller.xml and agent.xml"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="keep SIPp's files here")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def options_from_args(args: argparse.Namespace) -> Options:
    pbx = sandbox_pbx(args.pbx)
    return Options(
        rate=args.rate,
        duration_s=args.duration,
        hold_s=args.hold,
        asterisk=args.asterisk or pbx.sip_address,
        local_ip=args.local_ip,
        local_port=args.local_port or pbx.trunk_port,
        pbx=pbx,
        dnis=tuple(d.strip() for d in args.dnis.split(",") if d.strip()),
        unknown_share=args.unknown_share,
        withheld_share=args.withheld_share,
        customers=args.customers,
        agents=args.agents,
        agent_ring_ms=args.agent_ring,
        agent_host=args.agent_host,
        max_failed_pct=args.max_failed_pct,
        seed=args.seed,
        sipp=args.sipp,
        scenario_dir=args.scenarios,
        workdir=args.workdir,
    )


async def command(args: argparse.Namespace, database_url: str) -> int:
    """Run from parsed arguments, print the report; the exit status (0 pass, 2 fail, 1 error)."""
    try:
        report = await run_loadtest(options_from_args(args), database_url)
    except LoadTestError as exc:
        print(f"cti loadtest: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        print(format_report(report))
    return 0 if report.passed else 2


def main(argv: Sequence[str] | None = None) -> int:
    from cti.config import ConfigError, load_config

    parser = argparse.ArgumentParser(
        prog="cti loadtest", description=__doc__.splitlines()[0] if __doc__ else None
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        config = load_config()
    except ConfigError as exc:
        print(f"cti loadtest: configuration: {exc}", file=sys.stderr)
        return 1
    try:
        return asyncio.run(command(args, config.database_url))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
