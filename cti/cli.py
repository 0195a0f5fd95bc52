"""The ``cti`` command: the daemon and the operators' tools.

Exit codes: 0 done, 1 failed (message on stderr), 2 input refused: wholly (``rules
load``: the file is not a usable plan and nothing was stored; fix the file, trying again
will not help) or in part (``customers import``: the good rows were loaded, the bad ones
are listed), 64 usage,
141 the reader of our output went away (``cti rules export | head``), quietly, as a
command killed by SIGPIPE.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import asyncpg

from cti.config import Config, ConfigError, load_config
from cti.logs import configure_logging
from cti.reports import command as report_command
from cti.reports.service import ReportError
from cti.text import strip_control_characters

if TYPE_CHECKING:
    from cti.routing.plan import RoutingPlan


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cti", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("serve", help="run the daemon (FastAGI router)")
    commands.add_parser(
        "screenpop", help="run the sidebar's HTTP API alone (no FastAGI; needs CTI_SESSION_SECRET)"
    )

    agents = commands.add_parser("agents", help="the sidebar's users").add_subparsers(
        dest="agents", required=True
    )
    agents_add = agents.add_parser(
        "add", help="add an agent; the password is read from stdin (or --password-env)"
    )
    agents_add.add_argument("username", help="1 to 64 of a-z 0-9 . _ -")
    agents_add.add_argument(
        "--endpoint",
        required=True,
        help="the device their calls ring: PJSIP/2001 on the home PBX, PJSIP/2001@b on PBX b",
    )
    agents_add.add_argument("--name", default=None, help="display name (default: username)")
    agents_add.add_argument("--role", choices=("agent", "supervisor"), default="agent")
    agents_add.add_argument(
        "--password-env", metavar="VAR", default=None, help="read the password from $VAR"
    )
    agents.add_parser("list", help="list the agents")
    agents_passwd = agents.add_parser(
        "passwd",
        help="set an agent's password (stdin or --password-env) and end their sessions",
    )
    agents_passwd.add_argument("username")
    agents_passwd.add_argument(
        "--password-env", metavar="VAR", default=None, help="read the password from $VAR"
    )
    agents.add_parser(
        "remove", help="remove an agent; their sessions end within seconds"
    ).add_argument("username")
    agents_set = agents.add_parser(
        "set", help="change an agent's endpoint, role or name, and end their sessions"
    )
    agents_set.add_argument("username")
    agents_set.add_argument(
        "--endpoint", default=None, help="the device their calls ring (PJSIP/2001@b on PBX b)"
    )
    agents_set.add_argument("--role", choices=("agent", "supervisor"), default=None)
    agents_set.add_argument("--name", default=None, help="display name")

    db = commands.add_parser("db", help="database tasks").add_subparsers(dest="db", required=True)
    migrate = db.add_parser("migrate", help="create the database if needed, apply migrations")
    migrate.add_argument(
        "--sql-dir", type=Path, default=None, help="a folder of NNN_*.sql (default: the package's)"
    )
    seed = db.add_parser("seed-demo", help="load the demo routing plan and customers")
    seed.add_argument("--customers", type=int, default=100_000)
    dead = db.add_parser(
        "dead-letters", help="list the records the database refused (newest first)"
    )
    dead.add_argument("--writer", help="only this writer's (interactions, timeline, ...)")
    dead.add_argument("--limit", type=int, default=50)
    dead.add_argument("--records", action="store_true", help="print each record (JSON) too")

    report_command.add_prune_arguments(
        db.add_parser("prune", help="delete old call detail (the reports' offers stay)")
    )
    report_command.add_arguments(
        commands.add_parser("report", help="queue, tier, rule, agent reports; the calls list")
    )
    customers = commands.add_parser("customers", help="customer data").add_subparsers(
        dest="customers", required=True
    )
    from cti.customer_csv import columns_help

    load = customers.add_parser(
        "import",
        help="load customers from a CRM's CSV export",
        description="Load customers from a CRM's CSV export (UTF-8).\n\n"
        "Every row is checked on its own: the good rows load, each refused row is\n"
        "listed as FILE:LINE: column NAME: reason, and the exit status is 2 if any\n"
        "was refused. A customer is new, updated or unchanged; importing the same\n"
        "file again changes nothing.",
        epilog=columns_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    load.add_argument("file", type=Path)
    load.add_argument(
        "--region",
        default=None,
        metavar="CC",
        help="the country of the file's national numbers, e.g. GB (default: CTI_DEFAULT_REGION)",
    )
    load.add_argument(
        "--dry-run",
        action="store_true",
        help="check the file and say what would change; store nothing",
    )

    rules = commands.add_parser("rules", help="the routing plan").add_subparsers(
        dest="rules", required=True
    )
    rules_load = rules.add_parser("load", help="check a routing plan file and store it")
    rules_load.add_argument("file", type=Path)
    rules_load.add_argument("--check", action="store_true", help="only check the file")
    rules_export = rules.add_parser("export", help="print the stored routing plan")
    rules_export.add_argument("-o", "--output", type=Path, default=None)

    route = commands.add_parser("route", help="show where a call would go, and why")
    route.add_argument("--ani", required=True, help="caller number as the trunk sends it")
    route.add_argument("--dnis", required=True, help="dialled number")
    route.add_argument("--at", default=None, help="ISO time (default now; no zone: the number's)")
    route.add_argument("--ivr", action="append", default=[], metavar="KEY=VALUE")

    from cti import loadtest
    from cti.demo import calls as demo_calls

    demo_calls.add_arguments(
        commands.add_parser("demo", help="place calls on the demo stack (scripts/demo), show how")
    )
    loadtest.add_arguments(
        commands.add_parser("loadtest", help="SIPp callers against the running stack, summarised")
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config()
    except ConfigError as exc:
        print(f"cti: configuration: {exc}", file=sys.stderr)
        return 1
    # `cti route` prints its own answer; its per-call log line would only repeat it.
    level = "warning" if args.command == "route" else config.log_level
    configure_logging(config.log_format, level)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            code = runner.run(_dispatch(args, config))
        sys.stdout.flush()  # here, so that a reader gone away is handled below
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _output_closed()
    except InputRefused as exc:
        print(f"cti: {exc}", file=sys.stderr)
        return 2
    except CommandError as exc:
        print(f"cti: {exc}", file=sys.stderr)
        return 1
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"cti: database: {exc}", file=sys.stderr)
        return 1
    except TimeoutError:  # an OSError too: say what it is
        print("cti: timed out", file=sys.stderr)
        return 1
    except OSError as exc:  # not the database's: those are DatabaseError by now
        print(f"cti: {exc}", file=sys.stderr)
        return 1


def _output_closed() -> int:
    """The reader of stdout went away (``| head``): stop quietly, as ``cat`` or ``seq``
    do (killed by SIGPIPE, status 141). Stdout now points at /dev/null, so the
    interpreter's last flush at exit cannot fail again and print a traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


def _loop_factory():
    """uvloop where installed: the daemon's sockets cost about half as much CPU on it."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


class CommandError(RuntimeError):
    """A command could not do its job; the message says why."""


class InputRefused(CommandError):
    """The operator's input cannot be used and nothing was changed (exit status 2)."""


class DatabaseError(CommandError):
    """PostgreSQL could not be reached (refused, unknown host, no answer in time)."""

    def __init__(self, exc: BaseException) -> None:
        detail = str(exc) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            detail = "no answer in time"
        super().__init__(f"database: {detail}")


async def connect(database_url: str) -> asyncpg.Connection:
    """A connection for one command. Failing to connect is reported as the database's
    problem; any other OSError later (a closed pipe, a file) is not."""
    try:
        return await asyncpg.connect(database_url, timeout=10)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DatabaseError(exc) from None


async def _dispatch(args: argparse.Namespace, config: Config) -> int:
    if args.command == "serve":
        from cti.app.service import serve

        await serve(config)
        return 0
    if args.command == "screenpop":
        if not config.session_secret:
            raise CommandError(
                "cti screenpop needs CTI_SESSION_SECRET (at least 32 random bytes,"
                " e.g. `openssl rand -base64 48`)"
            )
        from cti.app.service import serve_screenpop

        await serve_screenpop(config)
        return 0
    if args.command == "db" and args.db == "migrate":
        from cti.db.migrate import SQL_DIR, MigrationError, migrate

        try:
            applied = await migrate(config.database_url, args.sql_dir or SQL_DIR)
        except MigrationError as exc:
            raise CommandError(str(exc)) from None
        except OSError as exc:  # the files are read first, as MigrationError: the server
            raise DatabaseError(exc) from None
        print(
            f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else "")
        )
        return 0
    if args.command == "demo":
        from cti.demo import calls as demo_calls

        return await demo_calls.command(args, config.database_url)
    if args.command == "loadtest":
        from cti import loadtest

        return await loadtest.command(args, config.database_url)
    if args.command == "rules" and args.rules == "load" and args.check:
        _read_plan_file(args.file)
        print(f"{args.file}: ok")
        return 0
    conn = await connect(config.database_url)
    try:
        return await _with_connection(args, config, conn)
    finally:
        await conn.close()


def _read_plan_file(path: Path) -> RoutingPlan:
    """The plan in ``path``. Reads one byte past the limit, no more, so that a huge file
    (or /dev/zero) is refused without being read whole."""
    from cti.routing.plan import MAX_PLAN_BYTES, PlanError, load_bytes

    try:
        with path.open("rb") as file:
            data = file.read(MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise CommandError(f"{path}: {exc.strerror or exc}") from None
    try:
        return load_bytes(data)
    except PlanError as exc:
        raise InputRefused(f"{path}: {exc}") from None


async def _with_connection(args: argparse.Namespace, config: Config, conn) -> int:
    if args.command == "db" and args.db == "seed-demo":
        from cti.demo.seed import seed_demo

        try:
            total = await seed_demo(conn, args.customers)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        print(f"demo data loaded: {total} customers")
        await _seed_demo_agents(conn)
        return 0
    if args.command == "db" and args.db == "dead-letters":
        from cti.db.dead_letters import print_dead_letters

        await print_dead_letters(conn, args.writer, args.limit, records=args.records)
        return 0
    if args.command == "customers":
        return await _import_customers(args, config, conn)
    if args.command == "agents":
        return await _agents(args, conn)
    if args.command == "rules" and args.rules == "load":
        from cti.routing.plan import PlanError
        from cti.routing.plan_store import write_plan

        plan = _read_plan_file(args.file)
        try:
            await write_plan(conn, plan)
        except PlanError as exc:  # a queue that is neither in the file nor stored
            raise InputRefused(f"{args.file}: {exc}") from None
        print(
            f"{args.file}: stored {len(plan.queues)} queue(s), {len(plan.numbers)} number(s),"
            f" {len(plan.rules)} rule(s), {len(plan.pause_reasons)} pause reason(s)"
        )
        return 0
    if args.command == "rules" and args.rules == "export":
        from cti.routing.plan import dumps
        from cti.routing.plan_store import read_plan

        text = dumps(await read_plan(conn))
        if args.output:
            try:
                args.output.write_text(text)
            except OSError as exc:
                raise CommandError(f"{args.output}: {exc.strerror}") from None
        else:
            sys.stdout.write(text)
        return 0
    if args.command == "route":
        return await _route(args, config, conn)
    if args.command == "report":
        try:
            sys.stdout.write(await report_command.report(args, config.timezone, conn))
        except ReportError as exc:
            raise InputRefused(str(exc)) from None
        return 0
    if args.command == "db" and args.db == "prune":
        await report_command.prune_command(args, conn)
        return 0
    raise CommandError(f"unknown command {args.command}")


async def _seed_demo_agents(conn) -> None:
    """The demo agents' and supervisor's password comes from ``CTI_DEMO_PASSWORD`` (read here, like
    ``--password-env``: a command's input, not the daemon's configuration) or is
    generated and printed this once."""
    from cti.demo.seed import seed_demo_agents

    password = os.environ.get("CTI_DEMO_PASSWORD") or None
    generated = password is None
    if password is None:
        password = secrets.token_urlsafe(12)
    try:
        written, skipped = await seed_demo_agents(conn, password, reset=not generated)
    except ValueError as exc:
        raise CommandError(f"demo agents: {exc}") from None
    for reason in skipped:
        print(f"demo agent {reason}: skipped")
    if not written:
        if not skipped:
            print("demo users: already there (set CTI_DEMO_PASSWORD to reset their password)")
    elif generated:
        print(f"demo users {', '.join(written)}: password {password}")
        print("  (generated and shown only this once; set CTI_DEMO_PASSWORD to choose it)")
    else:
        print(f"demo users {', '.join(written)}: password from CTI_DEMO_PASSWORD")


def _read_password(variable: str | None) -> str:
    if variable is not None:
        password = os.environ.get(variable)
        if not password:
            raise CommandError(f"--password-env {variable}: that variable is not set")
        return password
    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise CommandError("the passwords differ")
        return password
    line = sys.stdin.readline()
    password = line[:-1] if line.endswith("\n") else line
    if not password:
        raise CommandError("no password on stdin (or use --password-env VAR)")
    return password


async def _agents(args: argparse.Namespace, conn) -> int:
    from cti.screenpop.agents import AgentError, add_agent, list_agents

    if args.agents == "list":
        for agent in await list_agents(conn):
            print(f"{agent.username}\t{agent.endpoint}\t{agent.role}\t{agent.display_name}")
        return 0
    if args.agents in ("passwd", "remove", "set"):
        try:
            print(await _change_agent(args, conn))
        except AgentError as exc:
            raise CommandError(str(exc)) from None
        return 0
    password = _read_password(args.password_env)
    try:
        agent = await add_agent(
            conn,
            args.username,
            args.endpoint,
            password,
            display_name=args.name,
            role=args.role,
        )
    except AgentError as exc:
        raise CommandError(str(exc)) from None
    print(f"added {agent.role} {agent.username} on {agent.endpoint}")
    return 0


async def _change_agent(args: argparse.Namespace, conn) -> str:
    """passwd, remove, set: each ends the agent's sessions (the token version is bumped,
    or the row is gone), so open sidebars close within seconds."""
    from cti.screenpop.agents import AgentError, remove_agent, set_password, update_agent

    if args.agents == "passwd":
        await set_password(conn, args.username, _read_password(args.password_env))
        return f"password of {args.username} changed; their sessions are ended"
    if args.agents == "remove":
        await remove_agent(conn, args.username)
        return f"removed {args.username}; their sessions are ended"
    if args.endpoint is None and args.role is None and args.name is None:
        raise AgentError("nothing to change: give --endpoint, --role or --name")
    agent = await update_agent(
        conn, args.username, endpoint=args.endpoint, role=args.role, display_name=args.name
    )
    return (
        f"{agent.username}: {agent.role} on {agent.endpoint} ({agent.display_name});"
        " their sessions are ended"
    )


async def _import_customers(args: argparse.Namespace, config: Config, conn) -> int:
    import phonenumbers

    from cti.customer_csv import ImportFileError
    from cti.customers import import_customers

    path: Path = args.file
    region = (config.default_region if args.region is None else args.region).strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise CommandError(
            f"--region {args.region!r}: expected a two-letter region such as US or GB"
        )
    try:
        # Bytes that are not UTF-8 refuse their row (named by line and column), not the file.
        with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
            report = await import_customers(conn, handle, region, dry_run=args.dry_run)
    except OSError as exc:
        raise CommandError(f"{path}: {exc.strerror}") from None
    except ImportFileError as exc:
        raise CommandError(f"{path}: {exc}") from None
    notes = [(p, "") for p in report.refused] + [(p, "warning: ") for p in report.warnings]
    for problem, kind in sorted(notes, key=lambda note: note[0].line):
        print(f"{path}:{problem.line}: {kind}{problem}", file=sys.stderr)
    summary = (
        f"{report.new} new, {report.updated} updated, {report.unchanged} unchanged,"
        f" {len(report.refused)} refused"
    )
    if report.warnings:
        summary += f" ({len(report.warnings)} warning(s))"
    print(f"dry run, nothing stored: {summary}" if args.dry_run else summary)
    return 2 if report.refused else 0


async def _route(args: argparse.Namespace, config: Config, conn) -> int:
    from cti.agi.route import parse_ivr_args
    from cti.customers import find_customer
    from cti.router import Router, RouteRequest
    from cti.routing.plan_store import read_plan
    from cti.routing.table import RoutingTable

    table = RoutingTable.from_plan(await read_plan(conn))
    number = table.number(args.dnis)
    # Opening hours and time rules are the number's local time: shown in it, with its
    # zone, whether the moment was given or is now.
    zone: tzinfo = number.timezone if number else UTC
    at = _parse_time(args.at, zone).astimezone(zone)

    class Discard:
        def submit(self, item: object) -> bool:
            return True

    router = Router(
        table=lambda: table,
        find_customer=lambda e164, account: find_customer(conn, e164, account),
        default_queue=config.default_queue,
        region=config.default_region,
        lookup_budget_s=10,
        interactions=Discard(),
        call_data=Discard(),
        clock=lambda: at,
    )
    outcome = await router.route(
        RouteRequest("cli", "cli", args.ani, args.dnis, parse_ivr_args(args.ivr))
    )
    decision, customer = outcome.decision, outcome.customer
    where = decision.queue if decision.queue else "-"
    print(f"route     {decision.route.value}")
    print(f"queue     {where}")
    print(f"priority  {decision.priority}")
    print(f"rule      {decision.rule}")
    print(f"caller    {outcome.caller.e164 or '(' + (outcome.caller.raw or 'withheld') + ')'}")
    if customer:
        print(
            # Names stored before imports refused control characters may still hold an
            # escape sequence: it must not run on the operator's terminal.
            f"customer  {strip_control_characters(customer.account_number)}"
            f" {strip_control_characters(customer.name)} ({customer.tier},"
            f" {customer.status}, {customer.language})"
        )
    else:
        print("customer  unknown")
    print(
        f"number    {number.dnis + ' ' + number.service if number else 'unknown (default queue)'}"
    )
    print(f"at        {at.isoformat(timespec='seconds')} ({_zone_name(zone)})")
    return 0


def _zone_name(zone: tzinfo) -> str:
    return zone.key if isinstance(zone, ZoneInfo) else "UTC"


def _parse_time(text: str | None, zone: tzinfo) -> datetime:
    if text is None:
        return datetime.now(zone)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(
            f"--at {text!r}: expected an ISO time such as 2026-11-23T21:30"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


if __name__ == "__main__":
    sys.exit(main())
