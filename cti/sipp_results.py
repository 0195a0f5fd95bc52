"""What a SIPp run of ``cti loadtest`` counted, read from the files SIPp writes.

SIPp reports through files, not its exit code: ``-trace_stat`` (``stat.csv``, one row a
second with cumulative counters), ``-trace_counts`` (``<scenario>_<pid>_counts.csv``:
per scenario step, timeouts and unexpected messages), ``-trace_err`` (a log of error
lines, not always one a line) and ``-trace_error_codes`` (unexpected SIP status codes).
Parsing them is a job of its own, kept apart from starting SIPp.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class SippResult:
    exit_code: int
    attempted: int = 0
    successful: int = 0
    failed: int = 0
    failure_counters: dict[str, int] = field(default_factory=dict)  # FailedX(C) > 0
    step_problems: dict[str, int] = field(default_factory=dict)  # "4_200_Timeout": n
    retransmissions: int = 0
    error_lines: list[tuple[str, int]] = field(default_factory=list)  # most frequent first
    unexpected_codes: dict[str, int] = field(default_factory=dict)
    placing_s: float = 0.0  # from SIPp's start until it had created the last call
    achieved_rate_cps: float = 0.0  # attempted / placing_s
    elapsed_s: float = 0.0


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle, delimiter=";"))
    return [dict(zip(rows[0], row, strict=False)) for row in rows[1:] if row] if rows else []


def _last_csv_row(path: Path) -> dict[str, str]:
    rows = _csv_rows(path)
    return rows[-1] if rows else {}


def _seconds(value: str | None) -> float:
    """SIPp's ``HH:MM:SS`` or ``HH:MM:SS:micro`` durations."""
    parts = (value or "").split(":")
    try:
        seconds = int(parts[0]) * 3600 + int(parts[1]) * 60 + int(parts[2])
        return seconds + (int(parts[3]) / 1e6 if len(parts) > 3 else 0)
    except (IndexError, ValueError):
        return 0.0


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


# SIPp's -trace_err log: entries start with "DATE\tTIME\tEPOCH: " (not always on a new line).
_ERR_ENTRY = re.compile(r"\d{4}-\d\d-\d\d\t[\d:.]+\t[\d.]+: ")
_CALL_ID = re.compile(r"Call-I[dD]:? *'[^']*'")


def summarize_errors(text: str, top: int = 8) -> list[tuple[str, int]]:
    """The distinct error messages (first line, call ids removed), most frequent first."""
    entries: Counter[str] = Counter()
    for entry in _ERR_ENTRY.split(text)[1:]:
        first = entry.strip().splitlines()[0] if entry.strip() else ""
        if first:
            entries[" ".join(_CALL_ID.sub("Call-ID '*'", first).split())] += 1
    return entries.most_common(top)


def parse_sipp_results(workdir: Path, exit_code: int, pid: int) -> SippResult:
    periods = _csv_rows(workdir / "stat.csv")
    stats = periods[-1] if periods else {}
    result = SippResult(
        exit_code=exit_code,
        attempted=_int(stats.get("TotalCallCreated")),
        successful=_int(stats.get("SuccessfulCall(C)")),
        failed=_int(stats.get("FailedCall(C)")),
        retransmissions=_int(stats.get("Retransmissions(C)")),
    )
    result.elapsed_s = _seconds(stats.get("ElapsedTime(C)"))
    # Rows come every second (-fd 1): the first one with every call created.
    placed = next((p for p in periods if _int(p.get("TotalCallCreated")) >= result.attempted), {})
    result.placing_s = _seconds(placed.get("ElapsedTime(C)"))
    if result.placing_s > 0:
        result.achieved_rate_cps = round(result.attempted / result.placing_s, 2)
    result.failure_counters = {
        key[: -len("(C)")]: _int(value)
        for key, value in stats.items()
        if key.startswith("Failed") and key.endswith("(C)") and key != "FailedCall(C)"
        and _int(value) > 0
    }  # fmt: skip
    counts = workdir / f"caller_{pid}_counts.csv"
    if counts.exists():
        row = _last_csv_row(counts)
        result.step_problems = {
            key: _int(value)
            for key, value in row.items()
            if key.endswith(("_Timeout", "_Unexp")) and _int(value) > 0
        }
    errors_log = workdir / "errors.log"
    if errors_log.exists():
        result.error_lines = summarize_errors(errors_log.read_text(errors="replace"))
    codes: Counter[str] = Counter()
    codes_log = workdir / f"caller_{pid}_error_codes.csv"
    if codes_log.exists():
        # "DATE\tTIME\tEPOCH;ELAPSED;404,503," per period
        for line in codes_log.read_text(errors="replace").splitlines():
            fields = line.split(";")
            codes.update(c for c in fields[-1].split(",") if c.strip().isdigit())
    result.unexpected_codes = dict(codes.most_common())
    return result
