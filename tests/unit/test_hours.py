"""Opening hours and time windows (cti.routing.hours), and a dialled number's hours in
its own time zone (cti.routing.model.DialledNumber.is_open)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cti.routing.hours import DAYS, HoursError, OpeningHours, TimeWindow, minute_of_day, zone
from cti.routing.model import DialledNumber

NEW_YORK = ZoneInfo("America/New_York")
WEEKDAYS_8_TO_20 = {day: ["08:00-20:00"] for day in ("mon", "tue", "wed", "thu", "fri")}


def hm(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


# --- TimeWindow ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "start", "end", "wraps"),
    [
        pytest.param("08:00-20:00", hm("08:00"), hm("20:00"), False, id="day"),
        pytest.param("00:00-24:00", 0, 1440, False, id="all-day"),
        pytest.param("22:00-06:00", hm("22:00"), hm("06:00"), True, id="wraps-midnight"),
        pytest.param("23:59-00:00", hm("23:59"), 0, True, id="last-minute"),
        pytest.param("00:00-00:01", 0, 1, False, id="first-minute"),
        pytest.param(" 09:30 - 13:15 ", hm("09:30"), hm("13:15"), False, id="spaces"),
        pytest.param("12:00-24:00", hm("12:00"), 1440, False, id="until-midnight"),
    ],
)
def test_time_window_parse(text: str, start: int, end: int, wraps: bool) -> None:
    window = TimeWindow.parse(text)
    assert (window.start, window.end, window.wraps) == (start, end, wraps)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("08:00", id="one-time"),
        pytest.param("8-20", id="hours-only"),
        pytest.param("8:00-20:00", id="one-digit-hour"),
        pytest.param("08:00-20:00-22:00", id="three-times"),
        pytest.param("08:00–20:00", id="en-dash"),
        pytest.param("08.00-20.00", id="dots"),
        pytest.param("08:60-09:00", id="minute-60"),
        pytest.param("24:00-06:00", id="start-24"),
        pytest.param("25:00-26:00", id="hour-25"),
        pytest.param("08:00-24:01", id="end-after-24"),
        pytest.param("29:00-30:00", id="hour-29"),
        pytest.param("08:00-08:00", id="empty-window"),
        pytest.param("00:00-00:00", id="empty-at-midnight"),
        pytest.param("08:00-20:00 daily", id="trailing-text"),
    ],
)
def test_time_window_parse_rejects(text: str) -> None:
    with pytest.raises(HoursError, match=r"HH:MM|00:00-24:00"):
        TimeWindow.parse(text)


def test_hours_error_is_a_value_error() -> None:
    assert issubclass(HoursError, ValueError)


@pytest.mark.parametrize(
    ("window", "clock", "inside"),
    [
        pytest.param("08:00-20:00", "08:00", True, id="start-inclusive"),
        pytest.param("08:00-20:00", "07:59", False, id="before-start"),
        pytest.param("08:00-20:00", "19:59", True, id="last-minute"),
        pytest.param("08:00-20:00", "20:00", False, id="end-exclusive"),
        pytest.param("00:00-24:00", "00:00", True, id="all-day-midnight"),
        pytest.param("00:00-24:00", "23:59", True, id="all-day-last-minute"),
        pytest.param("22:00-06:00", "22:00", True, id="wrap-start"),
        pytest.param("22:00-06:00", "23:59", True, id="wrap-before-midnight"),
        pytest.param("22:00-06:00", "00:00", True, id="wrap-midnight"),
        pytest.param("22:00-06:00", "05:59", True, id="wrap-after-midnight"),
        pytest.param("22:00-06:00", "06:00", False, id="wrap-end-exclusive"),
        pytest.param("22:00-06:00", "12:00", False, id="wrap-midday"),
        pytest.param("22:00-06:00", "21:59", False, id="wrap-before-start"),
    ],
)
def test_time_window_contains(window: str, clock: str, inside: bool) -> None:
    assert TimeWindow.parse(window).contains(hm(clock)) is inside


_windows = st.tuples(st.integers(0, 1439), st.integers(1, 1440)).filter(
    lambda pair: pair[0] != pair[1]
)


@given(_windows)
def test_time_window_str_parses_back(pair: tuple[int, int]) -> None:
    window = TimeWindow(*pair)
    assert TimeWindow.parse(str(window)) == window


@given(_windows, st.integers(0, 1439))
def test_time_window_contains_counts_minutes_from_start(pair: tuple[int, int], minute: int) -> None:
    """A window holds the (end - start) mod 1440 minutes from its start, and no others."""
    start, end = pair
    length = (end - start) % 1440 or 1440
    assert TimeWindow(start, end).contains(minute) is ((minute - start) % 1440 < length)


def test_minute_of_day() -> None:
    assert minute_of_day(datetime(2026, 1, 5, 13, 45, 59)) == 13 * 60 + 45


# --- OpeningHours --------------------------------------------------------------------------

# 2026-11-16 is a Monday; DAY[name] is that week's date of the day.
DAY = {name: datetime(2026, 11, 16 + offset) for offset, name in enumerate(DAYS)}


def at(day: str, clock: str) -> datetime:
    return DAY[day] + timedelta(minutes=hm(clock))


def test_days_start_on_monday() -> None:
    assert [DAY[day].weekday() for day in DAYS] == list(range(7))


def test_opening_hours_parse_and_to_spec() -> None:
    spec = {"mon": ["08:00-12:00", "13:00-17:00"], "fri": ["22:00-06:00"]}
    hours = OpeningHours.parse(spec)
    assert hours.windows[0] == (TimeWindow(480, 720), TimeWindow(780, 1020))
    assert hours.windows[4] == (TimeWindow(1320, 360),)
    assert hours.windows[1] == ()
    assert hours.to_spec() == spec


def test_opening_hours_accept_one_range_as_a_string() -> None:
    assert OpeningHours.parse({"sat": "09:00-13:00"}) == OpeningHours.parse(
        {"sat": ["09:00-13:00"]}
    )


def test_opening_hours_empty_spec_is_always_closed() -> None:
    hours = OpeningHours.parse({})
    assert hours.to_spec() == {}
    assert not any(hours.is_open(at(day, "12:00")) for day in DAYS)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param({"monday": ["08:00-20:00"]}, "unknown day", id="long-day-name"),
        pytest.param({"Mon": ["08:00-20:00"]}, "unknown day", id="capitalised-day"),
        pytest.param({"mon": ["8-20"]}, "HH:MM", id="bad-range"),
        pytest.param({"mon": ["08:00-08:00"]}, "not empty", id="empty-range"),
    ],
)
def test_opening_hours_parse_rejects(spec: dict[str, list[str]], message: str) -> None:
    with pytest.raises(HoursError, match=message):
        OpeningHours.parse(spec)


SALES = OpeningHours.parse({**WEEKDAYS_8_TO_20, "sat": ["09:00-13:00"]})
NIGHTS = OpeningHours.parse({"fri": ["22:00-06:00"], "sun": ["20:00-02:00"]})
ALL_DAY = OpeningHours.parse({day: ["00:00-24:00"] for day in DAYS})


@pytest.mark.parametrize(
    ("hours", "day", "clock", "open_"),
    [
        pytest.param(SALES, "mon", "08:00", True, id="sales-mon-opening"),
        pytest.param(SALES, "mon", "07:59", False, id="sales-mon-early"),
        pytest.param(SALES, "fri", "19:59", True, id="sales-fri-last-minute"),
        pytest.param(SALES, "fri", "20:00", False, id="sales-fri-closing"),
        pytest.param(SALES, "sat", "09:00", True, id="sales-sat-morning"),
        pytest.param(SALES, "sat", "13:00", False, id="sales-sat-afternoon"),
        pytest.param(SALES, "sun", "12:00", False, id="sales-sunday"),
        pytest.param(NIGHTS, "fri", "21:59", False, id="night-fri-before"),
        pytest.param(NIGHTS, "fri", "22:00", True, id="night-fri-start"),
        pytest.param(NIGHTS, "fri", "23:59", True, id="night-fri-late"),
        pytest.param(NIGHTS, "sat", "00:00", True, id="night-sat-midnight"),
        pytest.param(NIGHTS, "sat", "03:00", True, id="night-wraps-into-saturday"),
        pytest.param(NIGHTS, "sat", "06:00", False, id="night-sat-end-exclusive"),
        pytest.param(NIGHTS, "sat", "22:00", False, id="night-not-on-saturday"),
        pytest.param(NIGHTS, "sun", "03:00", False, id="night-not-two-days-later"),
        pytest.param(NIGHTS, "thu", "23:00", False, id="night-not-the-day-before"),
        pytest.param(NIGHTS, "mon", "01:00", True, id="sunday-night-wraps-into-monday"),
        pytest.param(NIGHTS, "mon", "02:00", False, id="sunday-night-ends"),
        pytest.param(ALL_DAY, "sun", "23:59", True, id="all-day-last-minute"),
        pytest.param(ALL_DAY, "mon", "00:00", True, id="all-day-midnight"),
    ],
)
def test_opening_hours_is_open(hours: OpeningHours, day: str, clock: str, open_: bool) -> None:
    assert hours.is_open(at(day, clock)) is open_


_day_windows = st.lists(_windows.map(lambda pair: str(TimeWindow(*pair))), max_size=3)
_specs = st.dictionaries(st.sampled_from(DAYS), _day_windows)


@given(_specs)
def test_opening_hours_to_spec_parses_back(spec: dict[str, list[str]]) -> None:
    hours = OpeningHours.parse(spec)
    assert OpeningHours.parse(hours.to_spec()) == hours
    assert hours.to_spec() == {day: ranges for day, ranges in spec.items() if ranges}


def _open_minutes_of_week(hours: OpeningHours) -> set[int]:
    """Every open minute of the week (0 = Monday 00:00), a wrapping window running on."""
    week = 7 * 1440
    minutes = set()
    for day, windows in enumerate(hours.windows):
        for window in windows:
            length = (window.end - window.start) % 1440 or 1440
            first = day * 1440 + window.start
            minutes.update((first + m) % week for m in range(length))
    return minutes


@given(_specs, st.integers(0, 7 * 1440 - 1))
def test_opening_hours_is_open_agrees_with_minutes_of_the_week(
    spec: dict[str, list[str]], minute_of_week: int
) -> None:
    hours = OpeningHours.parse(spec)
    moment = DAY["mon"] + timedelta(minutes=minute_of_week)
    assert hours.is_open(moment) is (minute_of_week in _open_minutes_of_week(hours))


# --- time zones ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["America/New_York", "Europe/London", "UTC", "Asia/Kolkata"])
def test_zone_accepts_iana_names(name: str) -> None:
    assert zone(name) == ZoneInfo(name)
    assert zone(name).key == name


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("Mars/Olympus_Mons", id="unknown"),
        pytest.param("America", id="directory"),
        pytest.param("UTC ", id="trailing-space"),
        pytest.param("../../etc/passwd", id="path-traversal"),
        pytest.param("/etc/localtime", id="absolute-path"),
        pytest.param("EST+5", id="posix-tz-string"),
    ],
)
def test_zone_rejects(name: str) -> None:
    with pytest.raises(HoursError, match="unknown time zone"):
        zone(name)


def sales_number(hours: OpeningHours | None = SALES, tz: ZoneInfo = NEW_YORK) -> DialledNumber:
    return DialledNumber("5550200", "sales", "sales", tz, hours)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "open_"),
    [
        # 2026-11-23 is a Monday; New York is on EST (UTC-5).
        pytest.param("2026-11-23T12:30", False, id="est-0730-closed"),
        pytest.param("2026-11-23T13:00", True, id="est-0800-open"),
        pytest.param("2026-11-23T13:30", True, id="est-0830-open"),
        pytest.param("2026-11-24T00:59", True, id="est-mon-1959-open-on-utc-tuesday"),
        pytest.param("2026-11-24T01:00", False, id="est-mon-2000-closed"),
        # DST starts Sunday 2026-03-08: EST (UTC-5) before, EDT (UTC-4) after.
        pytest.param("2026-03-06T12:30", False, id="fri-before-dst-0730-closed"),
        pytest.param("2026-03-09T12:30", True, id="mon-after-dst-0830-open"),
        pytest.param("2026-03-09T11:59", False, id="mon-after-dst-0759-closed"),
        # DST ends Sunday 2026-11-01: EDT (UTC-4) before, EST (UTC-5) after.
        pytest.param("2026-10-30T12:30", True, id="fri-before-dst-end-0830-open"),
        pytest.param("2026-10-30T23:59", True, id="fri-before-dst-end-1959-open"),
        pytest.param("2026-10-31T00:00", False, id="fri-before-dst-end-2000-closed"),
        pytest.param("2026-11-02T12:30", False, id="mon-after-dst-end-0730-closed"),
        # Saturday 09:00-13:00 and the closed Sunday.
        pytest.param("2026-11-21T14:00", True, id="sat-0900-open"),
        pytest.param("2026-11-21T18:00", False, id="sat-1300-closed"),
        pytest.param("2026-11-22T15:00", False, id="sun-1000-closed"),
    ],
)
def test_number_is_open_in_its_own_time_zone(now: str, open_: bool) -> None:
    assert sales_number().is_open(utc(now)) is open_


def test_same_instant_differs_by_the_numbers_time_zone() -> None:
    now = utc("2026-11-23T12:30")  # 07:30 in New York, 12:30 in London
    assert not sales_number(tz=NEW_YORK).is_open(now)
    assert sales_number(tz=ZoneInfo("Europe/London")).is_open(now)


def test_number_without_hours_is_always_open() -> None:
    number = sales_number(hours=None)
    assert all(number.is_open(utc("2026-11-22T00:00") + timedelta(hours=h)) for h in range(168))


def test_number_with_empty_hours_is_never_open() -> None:
    number = sales_number(hours=OpeningHours.parse({}))
    assert not any(number.is_open(utc("2026-11-22T00:00") + timedelta(hours=h)) for h in range(168))
