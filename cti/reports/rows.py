"""Report rows from aggregated measures, and their JSON, CSV and table forms. Pure.

Every interval × group value is a row, traffic or not (a quiet interval is a row of
zeros). Columns: ``interval_start`` (ISO 8601 in the centre's zone), the group (``queue``,
``tier``, ``rule``, ``dnis``, ``service``), then the figures of
:data:`cti.reports.definitions.DEFINITIONS` in their order.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from cti.reports.definitions import DEFINITIONS, Totals, figures, zero

#: Report kind → the name of its group column.
GROUP_COLUMN = {
    "queues": "queue",
    "tiers": "tier",
    "rules": "rule",
    "dnis": "dnis",
    "services": "service",
    "agents": "agent",
}
KINDS = (*GROUP_COLUMN, "calls")
FORMATS = ("table", "csv", "json")

AGENT_FIGURES = (
    "staffed_s",
    "available_s",
    "ringing_s",
    "on_call_s",
    "wrapup_state_s",
    "paused_s",
    "paused_by_reason",
    "occupancy",
    "presented",
    "answered",
    "talk_s",
    "hold_s",
    "wrapup_s",
    "aht_s",
    "avg_talk_s",
    "avg_hold_s",
    "avg_wrapup_s",
    "transfers_out",
)
CALL_COLUMNS = (
    "call_id",
    "entered_at",
    "tier",
    "rule",
    "dnis",
    "service",
    "outcome",
    "wait_s",
    "visits",
    "legs",
)


def columns(kind: str) -> tuple[str, ...]:
    if kind == "calls":
        return CALL_COLUMNS
    if kind == "agents":
        return ("interval_start", "agent", *AGENT_FIGURES)
    return ("interval_start", GROUP_COLUMN[kind], *(d.name for d in DEFINITIONS))


def offer_rows(
    kind: str,
    edges: Sequence[datetime],
    groups: Iterable[str],
    totals: Mapping[tuple[int, str], Totals],
) -> list[dict[str, Any]]:
    """One row per interval and group value, in time then group order."""
    names = sorted({*groups, *(g for _, g in totals)})
    column = GROUP_COLUMN[kind]
    rows = []
    for index, start in enumerate(edges[:-1]):
        for name in names:
            measures = totals.get((index, name)) or zero()
            rows.append({"interval_start": start.isoformat(), column: name, **figures(measures)})
    return rows


def _avg(num: float, den: float) -> float:
    return 0.0 if den <= 0 else round(num / den, 1)


def agent_rows(
    edges: Sequence[datetime],
    legs: Mapping[tuple[int, str], Mapping[str, float]],
    states: Mapping[tuple[int, str], Mapping[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """Per interval and agent (every agent with a leg or a state in the span).

    From the agent's states (time split at interval boundaries): ``staffed_s`` (every
    state but logged out), ``available_s``, ``ringing_s``, ``on_call_s`` (on a call,
    on hold included), ``wrapup_state_s``, ``paused_s`` and ``paused_by_reason``
    (``reason=seconds`` pairs), ``occupancy`` = (on call + wrap-up) / (staffed −
    paused), in percent. From the legs (counted in the interval they rang in):
    ``presented``, ``answered``, ``talk_s``, ``hold_s``, ``wrapup_s`` (of the calls
    the agent answered), their averages per answered leg and ``aht_s``, and
    ``transfers_out``."""
    states = states or {}
    agents = sorted({a for _, a in legs} | {a for _, a in states})
    empty = dict.fromkeys(("presented", "answered", "talk", "hold", "wrapup", "transfers"), 0.0)
    rows = []
    for index, start in enumerate(edges[:-1]):
        for agent in agents:
            t = legs.get((index, agent)) or empty
            s = states.get((index, agent)) or {}
            answered = t["answered"]
            on_call = s.get("on_call", 0.0) + s.get("on_hold", 0.0)
            staffed = sum(v for k, v in s.items() if ":" not in k)
            paused = s.get("paused", 0.0)
            handling = on_call + s.get("wrap_up", 0.0)
            reasons = sorted(
                (k.split(":", 1)[1], v) for k, v in s.items() if k.startswith("paused:")
            )
            rows.append(
                {
                    "interval_start": start.isoformat(),
                    "agent": agent,
                    "staffed_s": round(staffed, 1),
                    "available_s": round(s.get("available", 0.0), 1),
                    "ringing_s": round(s.get("ringing", 0.0), 1),
                    "on_call_s": round(on_call, 1),
                    "wrapup_state_s": round(s.get("wrap_up", 0.0), 1),
                    "paused_s": round(paused, 1),
                    "paused_by_reason": " ".join(f"{r}={v:.0f}" for r, v in reasons),
                    "occupancy": None
                    if staffed - paused <= 0
                    else round(100 * handling / (staffed - paused), 2),
                    "presented": int(t["presented"]),
                    "answered": int(answered),
                    "talk_s": round(t["talk"], 1),
                    "hold_s": round(t["hold"], 1),
                    "wrapup_s": round(t["wrapup"], 1),
                    "aht_s": _avg(t["talk"] + t["hold"] + t["wrapup"], answered),
                    "avg_talk_s": _avg(t["talk"], answered),
                    "avg_hold_s": _avg(t["hold"], answered),
                    "avg_wrapup_s": _avg(t["wrapup"], answered),
                    "transfers_out": int(t["transfers"]),
                }
            )
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def to_csv(kind: str, rows: Sequence[Mapping[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    names = columns(kind)
    writer.writerow(names)
    for row in rows:
        writer.writerow([_cell(row.get(n)) for n in names])
    return out.getvalue()


def to_json(rows: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps(list(rows), default=_cell, indent=1)


def to_table(kind: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """Aligned columns for a terminal (the calls list's long fields last)."""
    names = columns(kind)
    cells = [list(names), *([_cell(row.get(n)) for n in names] for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(names))]
    return (
        "\n".join(
            "  ".join(
                c.rjust(w) if i > 1 else c.ljust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
            for line in cells
        )
        + "\n"
    )
