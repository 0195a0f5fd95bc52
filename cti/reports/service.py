"""Making a report: the one entry the CLI (``cti report``) and the API
(``GET /api/reports/{kind}``) share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg

from cti.reports import store
from cti.reports.definitions import Thresholds, queue_thresholds
from cti.reports.intervals import INTERVALS, IntervalError, bounds
from cti.reports.rows import KINDS, agent_rows, offer_rows
from cti.routing.plan import NAME

MAX_QUEUES = 50


class ReportError(ValueError):
    """A report request that cannot be answered (the message names the field)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


@dataclass(frozen=True, slots=True)
class ReportRequest:
    kind: str
    start: datetime
    end: datetime
    interval: str = "30m"
    queues: Sequence[str] = field(default_factory=tuple)

    def check(self) -> None:
        if self.kind not in KINDS:
            raise ReportError("kind", f"kind: expected one of {', '.join(KINDS)}")
        if self.interval not in INTERVALS:
            raise ReportError("interval", f"interval: expected one of {', '.join(INTERVALS)}")
        if len(self.queues) > MAX_QUEUES or not all(NAME.match(q) for q in self.queues):
            raise ReportError(
                "queue", f"queue: at most {MAX_QUEUES} queue names (letters, digits, _ . -)"
            )


async def plan_thresholds(conn: asyncpg.Connection) -> dict[str, Thresholds]:
    """Each queue's thresholds as the stored plan has them now (``[[queues]]``
    ``sl_threshold_s``, ``short_abandon_s``): a changed threshold restates history."""
    records = await conn.fetch(
        "SELECT name, sl_threshold_s, short_abandon_s FROM queues", timeout=10
    )
    configured = {
        r["name"]: Thresholds(float(r["sl_threshold_s"]), float(r["short_abandon_s"]))
        for r in records
    }
    return queue_thresholds(configured, configured)


async def make_report(
    conn: asyncpg.Connection, request: ReportRequest, zone: tzinfo
) -> list[dict[str, Any]]:
    """The rows of a report."""
    request.check()
    if request.kind == "calls":
        if request.end <= request.start:
            raise ReportError("to", "to: must be after from")
        calls = await store.call_rows(conn, request.start, request.end, request.queues)
        for call in calls:
            call["entered_at"] = call["entered_at"].astimezone(zone).isoformat()
        return calls
    try:
        edges = bounds(request.start, request.end, request.interval, zone)
    except IntervalError as exc:
        raise ReportError("interval", str(exc)) from None
    if request.kind == "agents":
        legs = await store.agent_totals(conn, edges, request.queues)
        return agent_rows(edges, legs, await store.agent_states(conn, edges))
    thresholds = await plan_thresholds(conn)
    totals = await store.offer_totals(conn, request.kind, edges, thresholds, request.queues)
    if request.kind == "queues" and request.queues:
        groups: Sequence[str] = request.queues
    else:
        groups = await store.group_values(conn, request.kind)
    return offer_rows(request.kind, edges, groups, totals)


async def centre_zone(conn: asyncpg.Connection, configured: str) -> ZoneInfo:
    """The centre's time zone: ``CTI_TIMEZONE``, else the stored plan's first dialled
    number's (in ``dnis`` order), else UTC."""
    if configured:
        return ZoneInfo(configured)
    name = await conn.fetchval(
        "SELECT timezone FROM dialled_numbers ORDER BY dnis LIMIT 1", timeout=10
    )
    try:
        return ZoneInfo(name or "UTC")
    except (ValueError, ZoneInfoNotFoundError):
        return ZoneInfo("UTC")
