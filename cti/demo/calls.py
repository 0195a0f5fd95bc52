"""``cti demo calls`` and ``cti demo call``: place demo calls and say how they went.

``scripts/demo`` places its calls with ``cti demo calls`` and prints the same command
as the way to place more, so the hint cannot drift from what the demo itself does
(it once lacked the pause, and its calls hung up the moment Asterisk answered).
``cti demo call ANI DNIS`` places one call, staying ``--hold`` seconds so an agent's
sidebar has time to pop it, then reports its route, rule, agent and talk time.

Calls are SIPp's ``sipp/caller.xml`` from the trunk (127.0.0.1:5080) to Asterisk
(127.0.0.1:5060), the loopback test bed; how they went comes from the
``interactions`` rows the daemon writes (the route at once, the summary when the call
ended, followed over AMI).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from cti.demo.report import DemoCall, closed_lines, one_call, table
from cti.loadtest import SIPP_DIR
from cti.routing.model import DialledNumber

ASTERISK = "127.0.0.1:5060"
TRUNK_HOST, TRUNK_PORT = "127.0.0.1", 5080
DEMO_CALLS = SIPP_DIR / "calls-demo.csv"
#: How long the summaries of calls that ended may take to reach PostgreSQL.
SETTLE_S = 10.0


class DemoError(RuntimeError):
    """The calls could not be placed; the message says why."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="demo", required=True)
    calls = commands.add_parser("calls", help="place the demo's calls and show how they went")
    calls.add_argument("--file", type=Path, default=DEMO_CALLS, help="ANI;DNIS;account;intent")
    calls.add_argument("--count", type=int, default=None, help="only the first N calls")
    calls.add_argument("--rate", type=float, default=2.0, help="calls per second (default 2)")
    one = commands.add_parser("call", help="place one call and show how it went")
    one.add_argument("ani", help="the caller's number, e.g. 2120000002")
    one.add_argument("dnis", help="the dialled number, e.g. 5550100")
    one.add_argument("--account", default="", help="an account number keyed in the IVR")
    one.add_argument("--intent", default="", help="what the caller asked the IVR for")
    for sub, hold in ((calls, 4.0), (one, 20.0)):
        sub.add_argument(
            "--hold", type=float, default=hold, help=f"seconds each caller stays (default {hold:g})"
        )
        sub.add_argument("--scenarios", type=Path, default=SIPP_DIR, help="SIPp's caller.xml")
        sub.add_argument("--workdir", type=Path, default=None, help="keep SIPp's logs here")


def caller_command(
    *,
    scenarios: Path,
    injection: Path,
    calls: int,
    hold_s: float,
    rate: float,
    errors: Path,
    sipp: str = "sipp",
) -> list[str]:
    """SIPp placing ``calls`` calls of ``injection``, each staying ``hold_s`` seconds
    after Asterisk answers (``-d``: without it the caller hangs up at once)."""
    return [
        sipp, ASTERISK,
        "-sf", str(scenarios / "caller.xml"),
        "-inf", str(injection),
        "-i", TRUNK_HOST, "-p", str(TRUNK_PORT),
        "-m", str(calls), "-r", f"{rate:g}",
        "-d", str(round(hold_s * 1000)),
        "-nostdin", "-trace_err", "-error_file", str(errors),
    ]  # fmt: skip


def count_calls(injection: Path) -> int:
    """The calls of a SIPp injection file: its lines but comments and the order word."""
    lines = injection.read_text(encoding="utf-8").splitlines()
    return sum(1 for line in lines if line.strip() and not line.startswith(("#", "SEQUENTIAL")))


async def command(args: argparse.Namespace, database_url: str) -> int:
    try:
        return await _command(args, database_url)
    except DemoError as exc:
        print(f"cti demo: {exc}", file=sys.stderr)
        return 1


async def _command(args: argparse.Namespace, database_url: str) -> int:
    if not (args.scenarios / "caller.xml").is_file():
        raise DemoError(
            f"no caller.xml in {args.scenarios}: give --scenarios, the sipp/ folder of a checkout"
        )
    if shutil.which("sipp") is None:
        raise DemoError("sipp not found: install Debian's sip-tester package")
    if args.hold < 0:
        raise DemoError("--hold must not be negative")
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        workdir.mkdir(parents=True, exist_ok=True)
        if args.demo == "call":
            injection = workdir / "call.csv"
            fields = (args.ani, args.dnis, args.account, args.intent)
            if any(";" in f or "\n" in f for f in fields):
                raise DemoError("ANI, DNIS, account and intent may not hold ';' or a newline")
            injection.write_text("SEQUENTIAL\n" + ";".join(fields) + "\n", encoding="utf-8")
            calls, rate = 1, 1.0
        else:
            injection = args.file
            try:
                calls = count_calls(injection)
            except OSError as exc:
                raise DemoError(f"{injection}: {exc.strerror}") from None
            if args.count is not None:
                calls = max(0, min(calls, args.count))
            rate = args.rate
            print(f"placing {calls} call(s), {rate:g} a second, each caller stays {args.hold:g} s")
        errors = workdir / "callers-errors.log"
        argv = caller_command(
            scenarios=args.scenarios,
            injection=injection,
            calls=calls,
            hold_s=args.hold,
            rate=rate,
            errors=errors,
        )
        since = datetime.now(UTC) - timedelta(milliseconds=500)
        placed = await _run(argv, workdir)
        found = await finished_calls(database_url, since, calls, SETTLE_S)
        if args.demo == "call":
            if not found:
                raise DemoError(_no_route_reason(placed, errors))
            print("\n".join(one_call(found[-1])))
        else:
            print("how the daemon routed them, and who answered (from the interactions table):")
            print("\n".join(table(found)))
        numbers = await _numbers(database_url)
        if args.demo == "call":  # one call: only its own line's hours are news
            numbers = [n for n in numbers if n.dnis == found[-1].dnis]
        for note in closed_lines(numbers, datetime.now(UTC), found):
            print(note)
        if not placed:
            print(f"some calls failed (SIPp): {_tail(errors)}", file=sys.stderr)
            return 1
        return 0


async def _run(argv: Sequence[str], workdir: Path) -> bool:
    """Run SIPp to the end; True when every call completed."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=workdir,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    if process.returncode != 0 and err.strip():
        print(err.decode(errors="replace").strip()[-500:], file=sys.stderr)
    return process.returncode == 0


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "no error log"
    return " | ".join(text[-lines:]) or f"see {path}"


def _no_route_reason(placed: bool, errors: Path) -> str:
    if not placed:
        return f"the call failed (is the demo up? scripts/demo status): {_tail(errors)}"
    return "the call completed but the daemon recorded no route for it (is cti serve running?)"


_ROWS = """
SELECT i.ani, i.dnis, c.name AS customer, i.tier, i.route, i.queue, i.priority, i.rule,
       i.decision_us, i.agents, i.ended_at, i.wait_s, i.talk_s, i.abandoned
FROM interactions i LEFT JOIN customers c ON c.id = i.customer_id
WHERE i.routed_at >= $1 ORDER BY i.routed_at
"""


async def finished_calls(
    database_url: str, since: datetime, expected: int, within_s: float
) -> list[DemoCall]:
    """The calls routed since ``since``, once ``expected`` of them have ended (or
    ``within_s`` passed: then as they are, the unfinished ones said to be so)."""
    conn = await _connect(database_url)
    try:
        deadline = time.monotonic() + within_s
        while True:
            rows = await conn.fetch(_ROWS, since)
            ended = sum(1 for r in rows if r["ended_at"] is not None)
            if ended >= expected or time.monotonic() >= deadline:
                return [DemoCall.from_row(r) for r in rows]
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def _connect(database_url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(database_url, timeout=10)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DemoError(f"database: {exc or type(exc).__name__}") from None


async def _numbers(database_url: str) -> list[DialledNumber]:
    from cti.routing.plan_store import read_plan

    conn = await _connect(database_url)
    try:
        return list((await read_plan(conn)).numbers)
    finally:
        await conn.close()
