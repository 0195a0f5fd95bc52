"""``cti report KIND`` and ``cti db prune``: the reports on a terminal or in a file."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, date, datetime, time

import asyncpg

from cti.reports import rows as report_rows
from cti.reports.intervals import INTERVALS, IntervalError, parse_moment
from cti.reports.service import ReportError, ReportRequest, centre_zone, make_report
from cti.reports.store import prune


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=report_rows.KINDS, help="what each row is about")
    parser.add_argument(
        "--from", dest="start", required=True, help="a date or time in the centre's zone"
    )
    parser.add_argument(
        "--to", dest="end", required=True, help="a date (included) or a time (excluded)"
    )
    parser.add_argument("--interval", choices=INTERVALS, default="30m")
    parser.add_argument(
        "--queue", action="append", default=[], help="only these queues (repeat for more)"
    )
    parser.add_argument("--format", choices=report_rows.FORMATS, default="table")


def add_prune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--before",
        required=True,
        type=date.fromisoformat,
        help="delete call detail older than this date (UTC midnight); reports stay",
    )


def render(kind: str, fmt: str, rows: list[dict[str, object]]) -> str:
    if fmt == "csv":
        return report_rows.to_csv(kind, rows)
    if fmt == "json":
        return report_rows.to_json(rows) + "\n"
    return report_rows.to_table(kind, rows)


async def report(args: argparse.Namespace, timezone: str, conn: asyncpg.Connection) -> str:
    """The report asked for on the command line, rendered."""
    zone = await centre_zone(conn, timezone)
    try:
        request = ReportRequest(
            kind=args.kind,
            start=parse_moment(args.start, zone),
            end=parse_moment(args.end, zone, end=True),
            interval=args.interval,
            queues=tuple(args.queue),
        )
    except IntervalError as exc:
        raise ReportError("from", str(exc)) from None
    return render(args.kind, args.format, await make_report(conn, request, zone))


async def prune_command(args: argparse.Namespace, conn: asyncpg.Connection) -> None:
    counts = await prune(conn, datetime.combine(args.before, time(), tzinfo=UTC))
    sys.stdout.write(", ".join(f"{table}: {n} deleted" for table, n in counts.items()) + "\n")
