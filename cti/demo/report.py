"""How the demo's calls went, in words a newcomer reads at a glance.

Pure formatting over rows of ``interactions`` (routed by the daemon, summarised once
the call ended, followed over AMI) and the plan's dialled numbers: no I/O here, so the
wording is tested without Asterisk. A call no agent took says why (self-service, after
hours, abandoned after N s) instead of a blank; a line closed by the day or the hour is
named, because "sales went to after-hours" is otherwise a puzzle on a Sunday.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cti.routing.hours import DAYS, OpeningHours
from cti.routing.model import DialledNumber


@dataclass(frozen=True, slots=True)
class DemoCall:
    """One routed call as the demo shows it."""

    ani: str
    dnis: str
    customer: str | None
    tier: str
    route: str
    queue: str | None
    priority: int
    rule: str
    decision_ms: float
    agents: tuple[str, ...]
    ended: bool
    wait_s: float | None
    talk_s: float | None
    abandoned: bool

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> DemoCall:
        return cls(
            ani=row["ani"],
            dnis=row["dnis"],
            customer=row["customer"],
            tier=row["tier"],
            route=row["route"],
            queue=row["queue"],
            priority=row["priority"],
            rule=row["rule"],
            decision_ms=row["decision_us"] / 1000,
            agents=tuple(_agent(a) for a in row["agents"] or ()),
            ended=row["ended_at"] is not None,
            wait_s=row["wait_s"],
            talk_s=row["talk_s"],
            abandoned=bool(row["abandoned"]),
        )


def _agent(device: str) -> str:
    """``PJSIP/2001`` → ``2001``: the demo's agents are known by their extension."""
    return device.rpartition("/")[2] or device


def outcome(call: DemoCall) -> str:
    """Who took the call, or in a word why nobody did."""
    if call.agents:
        return ", ".join(call.agents)
    if call.route == "selfservice":
        return "self-service"
    if call.route == "afterhours":
        return "after hours"
    if not call.ended:
        return "still on the line"
    if call.wait_s is not None:
        return f"abandoned after {call.wait_s:.0f} s"
    return "not answered"


def talk(call: DemoCall) -> str:
    return f"{call.talk_s:.1f} s" if call.agents and call.talk_s is not None else "-"


_COLUMNS = (  # heading, right-aligned
    ("ANI", False),
    ("DNIS", False),
    ("customer", False),
    ("tier", False),
    ("route", False),
    ("queue", False),
    ("prio", True),
    ("rule", False),
    ("ms", True),
    ("answered by", False),
    ("talk", True),
)


def table(calls: Sequence[DemoCall]) -> list[str]:
    """The calls as an aligned table, every value whole (no name cut short)."""
    rows = [
        (
            c.ani,
            c.dnis,
            c.customer or "-",
            c.tier,
            c.route,
            c.queue or "-",
            str(c.priority),
            c.rule,
            f"{c.decision_ms:.1f}",
            outcome(c),
            talk(c),
        )
        for c in calls
    ]
    headings = tuple(name for name, _ in _COLUMNS)
    widths = [max(len(r[i]) for r in [headings, *rows]) for i in range(len(_COLUMNS))]

    def line(values: Sequence[str]) -> str:
        cells = (
            v.rjust(w) if right else v.ljust(w)
            for v, w, (_, right) in zip(values, widths, _COLUMNS, strict=True)
        )
        return ("  " + "  ".join(cells)).rstrip()

    return [line(headings), *(line(r) for r in rows)]


def describe_hours(hours: OpeningHours) -> str:
    """``Mon–Fri 08:00–20:00, Sat 09:00–13:00``: runs of days with the same windows."""
    parts: list[str] = []
    day = 0
    while day < len(DAYS):
        windows = hours.windows[day]
        last = day
        while last + 1 < len(DAYS) and hours.windows[last + 1] == windows:
            last += 1
        if windows:
            days = DAYS[day].title() + ("" if last == day else "–" + DAYS[last].title())
            parts.append(f"{days} {', '.join(str(w).replace('-', '–') for w in windows)}")
        day = last + 1
    return ", ".join(parts) or "never"


def closed_lines(
    numbers: Iterable[DialledNumber], now: datetime, calls: Sequence[DemoCall] = ()
) -> list[str]:
    """A note for each number closed at ``now`` by its day or hour, in its local time."""
    notes = []
    for number in sorted(numbers, key=lambda n: n.dnis):
        if number.hours is None or number.is_open(now):
            continue
        local = now.astimezone(number.timezone)
        note = (
            f"note: {number.dnis} ({number.service}) is closed now, "
            f"{local:%A %H:%M} in {number.timezone.key} "
            f"(open {describe_hours(number.hours)})"
        )
        if any(c.dnis == number.dnis and c.route == "afterhours" for c in calls):
            note += ": its calls get the after-hours message"
        notes.append(note + ".")
    return notes


def one_call(call: DemoCall) -> list[str]:
    """One call, told line by line (``cti demo call``)."""
    where = f"{call.route} {call.queue}" if call.queue else call.route
    lines = [
        f"call      {call.ani} -> {call.dnis}",
        f"route     {where} (priority {call.priority})",
        f"rule      {call.rule}",
        f"customer  {f'{call.customer} ({call.tier})' if call.customer else 'unknown'}",
    ]
    if call.agents:
        waited = f", after {call.wait_s:.1f} s in the queue" if call.wait_s is not None else ""
        lines.append(f"agent     {', '.join(call.agents)}{waited}")
    else:
        lines.append(f"agent     none: {outcome(call)}")
    lines.append(f"talk      {talk(call)}")
    return lines
