"""Report intervals in the centre's time zone: 15 and 30 minutes, an hour, a day, a week
(from Monday) and a month, correct across daylight-saving changes.

An interval is a span of local wall-clock time turned into instants: the day of a
spring-forward change is 23 hours long, of a fall-back change 25. A minute-sized
interval follows the instants (the hour that repeats in the autumn is two hours of
rows, the hour that is skipped in spring none), so no instant belongs to two rows
and none to no row. Every interval between ``--from`` and ``--to`` is a row, traffic or
not. Pure: the zone is handed in.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, tzinfo

INTERVALS = ("15m", "30m", "1h", "day", "week", "month")
_MINUTES = {"15m": 15, "30m": 30, "1h": 60}
#: Rows one report may have (a year by 15 minutes is 35,136).
MAX_INTERVALS = 40_000
#: The years a report's span may name (no calendar arithmetic near datetime's limits).
MIN_YEAR, MAX_YEAR = 1971, 9000


class IntervalError(ValueError):
    """An interval name, or a span, a report cannot use."""


def _local_midnight(day: date, zone: tzinfo) -> datetime:
    """The first instant of a local day (midnight, or the first time after a gap)."""
    naive = datetime.combine(day, time())
    moment = naive.replace(tzinfo=zone)
    # A zone whose change happens at midnight skips it: round-trip through UTC.
    return moment.astimezone(UTC).astimezone(zone)


def _floor(moment: datetime, interval: str, zone: tzinfo) -> datetime:
    local = moment.astimezone(zone)
    if interval in _MINUTES:
        step = _MINUTES[interval] * 60
        offset = local.utcoffset() or timedelta()
        # On the instant line: floor the local reading (offsets are whole quarter hours).
        seconds = int((moment.astimezone(UTC).timestamp() + offset.total_seconds()) // step * step)
        return datetime.fromtimestamp(seconds - offset.total_seconds(), tz=UTC).astimezone(zone)
    day = local.date()
    if interval == "week":
        day -= timedelta(days=day.weekday())
    elif interval == "month":
        day = day.replace(day=1)
    return _local_midnight(day, zone)


def _next(start: datetime, interval: str, zone: tzinfo) -> datetime:
    if interval in _MINUTES:
        return (start.astimezone(UTC) + timedelta(minutes=_MINUTES[interval])).astimezone(zone)
    day = start.astimezone(zone).date()
    if interval == "day":
        day += timedelta(days=1)
    elif interval == "week":
        day += timedelta(days=7)
    else:
        day = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    return _local_midnight(day, zone)


def bounds(start: datetime, end: datetime, interval: str, zone: tzinfo) -> list[datetime]:
    """The interval starts covering ``[start, end)``, then the end of the last one:
    ``n + 1`` instants (in ``zone``) for ``n`` rows. ``start`` is floored to its
    interval; an ``end`` inside an interval includes that interval."""
    if interval not in INTERVALS:
        raise IntervalError(f"interval: expected one of {', '.join(INTERVALS)}, got {interval!r}")
    if start.tzinfo is None or end.tzinfo is None:
        raise IntervalError("interval: times must carry a zone")
    if end <= start:
        raise IntervalError("interval: --to must be after --from")
    edges = [_floor(start, interval, zone)]
    while edges[-1] < end:
        if len(edges) > MAX_INTERVALS:
            raise IntervalError(
                f"interval: more than {MAX_INTERVALS} rows; choose a longer interval"
            )
        edges.append(_next(edges[-1], interval, zone))
    return edges


def index_of(edges: list[datetime], moment: datetime) -> int | None:
    """The row ``moment`` belongs to (``edges[i] <= moment < edges[i + 1]``), or None."""
    lo, hi = 0, len(edges) - 1
    if not edges or moment < edges[0] or moment >= edges[-1]:
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if edges[mid] <= moment:
            lo = mid
        else:
            hi = mid
    return lo


def parse_moment(text: str, zone: tzinfo, *, end: bool = False) -> datetime:
    """A ``--from``/``--to`` value: a date (its local midnight; as ``--to``, the next
    midnight, so ``--to 2026-03-08`` includes that day) or an ISO time, local unless it
    names its offset."""
    text = text.strip()
    if len(text) > 40:
        raise IntervalError("time: too long")
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day, time())
        else:
            moment = datetime.fromisoformat(text)
    except ValueError:
        raise IntervalError(
            f"time: expected a date (2026-03-08) or a time (2026-03-08T09:30), got {text!r}"
        ) from None
    if not MIN_YEAR <= moment.year <= MAX_YEAR:
        raise IntervalError(f"time: years {MIN_YEAR} to {MAX_YEAR} only, got {text!r}")
    if len(text) == 10:
        return _local_midnight(moment.date() + timedelta(days=1) if end else moment.date(), zone)
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)
