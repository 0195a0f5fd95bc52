"""``GET /api/reports/{kind}``: the reports of :mod:`cti.reports` for supervisors, as
JSON or a CSV download (docs/reports.md). Thin: parse the query, make the report."""

from __future__ import annotations

from aiohttp import web

from cti.errors import DomainError
from cti.reports import rows as report_rows
from cti.reports.definitions import DEFINITIONS
from cti.reports.intervals import INTERVALS, IntervalError, parse_moment
from cti.reports.service import MAX_QUEUES, ReportError, ReportRequest, centre_zone, make_report
from cti.routing.plan import NAME
from cti.screenpop.context import authenticate, context
from cti.screenpop.errors import invalid

#: The app key of the centre's time zone setting (``CTI_TIMEZONE``; empty: the plan's).
TIMEZONE = web.AppKey("report_timezone", str)
MAX_PARAM_CHARS = 64


def _param(request: web.Request, name: str, default: str | None = None) -> str:
    value = request.query.get(name, default)
    if value is None:
        raise invalid(name, "required")
    if len(value) > MAX_PARAM_CHARS:
        raise invalid(name, f"at most {MAX_PARAM_CHARS} characters")
    return value


async def get_report(request: web.Request) -> web.Response:
    who = authenticate(request)
    if not who.is_supervisor:
        raise DomainError("forbidden", "for supervisors only")
    kind = request.match_info["kind"]
    if kind not in report_rows.KINDS:
        raise invalid("kind", f"expected one of {', '.join(report_rows.KINDS)}")
    fmt = _param(request, "format", "json")
    if fmt not in ("json", "csv"):
        raise invalid("format", "expected json or csv")
    interval = _param(request, "interval", "30m")
    if interval not in INTERVALS:
        raise invalid("interval", f"expected one of {', '.join(INTERVALS)}")
    queues = request.query.getall("queue", [])
    if len(queues) > MAX_QUEUES or not all(NAME.match(q) for q in queues):
        raise invalid("queue", f"at most {MAX_QUEUES} queue names (letters, digits, _ . -)")
    ctx = context(request)
    async with ctx.pool.acquire() as conn:
        zone = await centre_zone(conn, request.app[TIMEZONE])
        try:
            start = parse_moment(_param(request, "from"), zone)
            end = parse_moment(_param(request, "to"), zone, end=True)
        except IntervalError as exc:
            raise invalid("from", str(exc)) from None
        try:
            rows = await make_report(conn, ReportRequest(kind, start, end, interval, queues), zone)
        except ReportError as exc:
            raise invalid(exc.field, str(exc)) from None
    if fmt == "csv":
        return web.Response(
            text=report_rows.to_csv(kind, rows),
            content_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="cti-{kind}.csv"'},
        )
    body: dict[str, object] = {"kind": kind, "timezone": zone.key, "rows": rows}
    if kind not in ("agents", "calls"):
        body["definitions"] = {d.name: d.words for d in DEFINITIONS}
    return web.json_response(body)


def add_routes(app: web.Application, timezone: str = "") -> None:
    app[TIMEZONE] = timezone
    app.router.add_get("/api/reports/{kind}", get_report)
