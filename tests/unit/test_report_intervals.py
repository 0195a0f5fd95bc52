"""Report intervals in the centre's zone, across daylight-saving changes."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from cti.reports.intervals import IntervalError, bounds, index_of, parse_moment

NY = ZoneInfo("America/New_York")


def day(text: str, end: bool = False) -> datetime:
    return parse_moment(text, NY, end=end)


def span(a: datetime, b: datetime) -> timedelta:
    """Elapsed time (aware datetimes in one zone subtract as wall clocks)."""
    return b.astimezone(UTC) - a.astimezone(UTC)


def test_a_spring_forward_day_is_23_hours_and_a_fall_back_day_25():
    spring = bounds(day("2026-03-08"), day("2026-03-08", end=True), "day", NY)
    fall = bounds(day("2026-11-01"), day("2026-11-01", end=True), "day", NY)
    assert span(spring[0], spring[1]) == timedelta(hours=23)
    assert span(fall[0], fall[1]) == timedelta(hours=25)


def test_hours_of_dst_days_follow_the_instants():
    spring = bounds(day("2026-03-08"), day("2026-03-08", end=True), "1h", NY)
    fall = bounds(day("2026-11-01"), day("2026-11-01", end=True), "30m", NY)
    assert len(spring) - 1 == 23 and len(fall) - 1 == 50
    assert [e.hour for e in spring[:4]] == [0, 1, 3, 4]  # 02:00 never happened
    assert [(e.hour, e.minute) for e in fall[2:7]] == [(1, 0), (1, 30), (1, 0), (1, 30), (2, 0)]
    assert all(span(a, b) == timedelta(minutes=30) for a, b in itertools.pairwise(fall))


def test_weeks_start_on_monday_and_months_on_the_first():
    weeks = bounds(day("2026-03-04"), day("2026-03-20"), "week", NY)
    assert [e.date().isoformat() for e in weeks] == [
        "2026-03-02",
        "2026-03-09",
        "2026-03-16",
        "2026-03-23",
    ]
    assert span(weeks[0], weeks[1]) == timedelta(days=7, hours=-1)  # Sunday 8 March: the change
    months = bounds(day("2026-01-15"), day("2026-03-01"), "month", NY)
    assert [e.date().isoformat() for e in months] == ["2026-01-01", "2026-02-01", "2026-03-01"]


def test_every_interval_is_a_row_and_a_moment_has_exactly_one():
    edges = bounds(day("2026-11-01"), day("2026-11-01", end=True), "15m", NY)
    assert len(edges) - 1 == 100
    start = edges[0].astimezone(UTC)
    seen = [index_of(edges, start + timedelta(minutes=m)) for m in range(0, 25 * 60, 15)]
    assert seen == list(range(100))
    assert (
        index_of(edges, edges[-1]) is None and index_of(edges, start - timedelta(seconds=1)) is None
    )


def test_a_call_spanning_a_boundary_counts_where_it_entered():
    edges = bounds(day("2026-06-01"), day("2026-06-01", end=True), "30m", NY)
    entered = datetime(2026, 6, 1, 9, 29, 50, tzinfo=NY)
    assert edges[index_of(edges, entered) or 0].strftime("%H:%M") == "09:00"


def test_times_parse_in_the_centres_zone_unless_they_name_one():
    assert parse_moment("2026-03-08T09:30", NY) == datetime(
        2026, 3, 8, 13, 30, tzinfo=UTC
    )  # EDT since 02:00
    assert parse_moment("2026-03-08T09:30+00:00", NY) == datetime(2026, 3, 8, 9, 30, tzinfo=UTC)
    with pytest.raises(IntervalError):
        parse_moment("yesterday", NY)
    for far in ("0001-01-01", "9999-12-31", "9999-12-31T23:59"):
        with pytest.raises(IntervalError, match="years"):
            parse_moment(far, NY, end=True)
    with pytest.raises(IntervalError):
        bounds(day("2026-03-08"), day("2026-03-07"), "day", NY)
    with pytest.raises(IntervalError):
        bounds(day("2026-03-08"), day("2026-03-09"), "2h", NY)


def test_a_half_hour_zone_floors_on_its_own_half_hours():
    india = ZoneInfo("Asia/Kolkata")
    edges = bounds(
        datetime(2026, 1, 1, 9, 10, tzinfo=india),
        datetime(2026, 1, 1, 10, 0, tzinfo=india),
        "1h",
        india,
    )
    assert [e.strftime("%H:%M") for e in edges] == ["09:00", "10:00"]
