"""Opening hours of a dialled number, evaluated in the number's own time zone.

Written as ``{"mon": ["08:00-20:00"], "sat": ["09:00-13:00"]}``: days that are
absent are closed, ``"00:00-24:00"`` is all day, and a range whose end is before its
start wraps past midnight into the next day (``"22:00-06:00"``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cti.text import brief

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^\s*([0-2]\d):([0-5]\d)\s*-\s*([0-2]\d):([0-5]\d)\s*$")
_MINUTES_PER_DAY = 24 * 60


class HoursError(ValueError):
    """Opening hours or a time window that cannot be understood."""


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Minutes since local midnight, ``start`` inclusive, ``end`` exclusive; may wrap."""

    start: int
    end: int

    @classmethod
    def parse(cls, text: str) -> TimeWindow:
        match = _RANGE.match(text)
        if not match:
            raise HoursError(f"{brief(text)}: expected HH:MM-HH:MM")
        sh, sm, eh, em = (int(g) for g in match.groups())
        start, end = sh * 60 + sm, eh * 60 + em
        if start >= _MINUTES_PER_DAY or end > _MINUTES_PER_DAY or start == end:
            raise HoursError(f"{brief(text)}: times must be 00:00-24:00 and the window not empty")
        return cls(start, end)

    @property
    def wraps(self) -> bool:
        return self.end < self.start

    def contains(self, minute: int) -> bool:
        """Whether ``minute`` of any day falls in this daily window."""
        if self.wraps:
            return minute >= self.start or minute < self.end
        return self.start <= minute < self.end

    def __str__(self) -> str:
        return f"{_clock(self.start)}-{_clock(self.end)}"


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def minute_of_day(moment: time | datetime) -> int:
    return moment.hour * 60 + moment.minute


@dataclass(frozen=True, slots=True)
class OpeningHours:
    """Weekly opening hours; ``windows[0]`` is Monday."""

    windows: tuple[tuple[TimeWindow, ...], ...]

    @classmethod
    def parse(cls, spec: Mapping[str, Sequence[str]]) -> OpeningHours:
        unknown = set(spec) - set(DAYS)
        if unknown:
            raise HoursError(
                f"unknown day(s) {brief(sorted(unknown, key=str))}; use {', '.join(DAYS)}"
            )
        windows = []
        for day in DAYS:
            ranges = spec.get(day, ())
            if isinstance(ranges, str):
                ranges = [ranges]
            windows.append(tuple(TimeWindow.parse(r) for r in ranges))
        return cls(tuple(windows))

    def to_spec(self) -> dict[str, list[str]]:
        return {day: [str(w) for w in ws] for day, ws in zip(DAYS, self.windows, strict=True) if ws}

    def is_open(self, local: datetime) -> bool:
        """True when ``local`` (already in the number's zone) falls in a window."""
        minute = minute_of_day(local)
        today = local.weekday()
        for window in self.windows[today]:
            if window.wraps:
                if minute >= window.start:
                    return True
            elif window.start <= minute < window.end:
                return True
        yesterday = (local - timedelta(days=1)).weekday()
        return any(w.wraps and minute < w.end for w in self.windows[yesterday])


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise HoursError(
            f"{brief(name)}: unknown time zone; use an IANA name such as Europe/Paris"
        ) from None
