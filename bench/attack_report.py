"""The targets and the table of bench/attack_bench.py (issue 9's "Measure")."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from bench import standby_memory

# Targets (PASS/FAIL; they fail the exit code only with --strict).
P99_RATIO_MAX = 2.0  # p99 under attack / quiet
LOGIN_P99_MAX_S = 1.0
STANDBY_FLAT_MAX = 1.2  # bytes at minute 60 / at minute 2
NAMES = {
    "quiet": "quiet",
    "http": "(a) idle HTTP + logins",
    "agi": "(b) FastAGI flood",
}


def _pct(values: Sequence[float], q: float) -> float | None:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1] if ordered else None


def _ratio(ours: float | None, base: float | None) -> float | None:
    return round(ours / base, 2) if ours is not None and base else None


def _summary(phases: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One row from one or more phases of a kind (the quiet ones are pooled)."""
    latencies = [x for p in phases for x in p["latencies_ms"]]
    logins = [x for p in phases for x in p["logins_s"]]
    statuses: dict[str, int] = {}
    for p in phases:
        for status, n in p["login_statuses"].items():
            statuses[status] = statuses.get(status, 0) + n
    return {
        "routed": len(latencies),
        "failed": sum(p["failed"] for p in phases),
        "failures": {k: v for p in phases for k, v in p["failures"].items()},
        "fail_open": sum(p["fail_open"] for p in phases),
        "p50_ms": _pct(latencies, 0.50),
        "p99_ms": _pct(latencies, 0.99),
        "max_ms": max(latencies, default=None),
        "logins": len(logins),
        "login_p50_s": _pct(logins, 0.50),
        "login_p99_s": _pct(logins, 0.99),
        "login_statuses": statuses,
        "logins_given_up": sum(p["logins_given_up"] for p in phases),
        "start_lag_p99_ms": [p["start_lag_p99_ms"] for p in phases],
        "server_cpu_pct": [p["cpu"]["server_pct"] for p in phases],
        "attacker_cpu_pct": [p["cpu"].get("attacker_pct") for p in phases],
        "other_cpu_pct": [p["cpu"]["other_pct"] for p in phases],
        "attack": [p["attack"] for p in phases if p["attack"]],
    }


def _per_phase(phases: Sequence[dict[str, Any]], name: str) -> list[float]:
    return [v for p in phases if (v := _summary([p])[name]) is not None]


def _best(phases: Sequence[dict[str, Any]], name: str) -> float | None:
    """The lowest of the phases' own figures. Other tenants of a shared machine only
    ever add latency, so of phases run alike the least disturbed one is the fairest."""
    return min(_per_phase(phases, name), default=None)


def _median(phases: Sequence[dict[str, Any]], name: str) -> float | None:
    values = _per_phase(phases, name)
    return statistics.median(values) if values else None


def _target(name: str, value: Any, limit: str, ok: bool | None) -> dict[str, Any]:
    verdict = "n/a" if ok is None else ("PASS" if ok else "FAIL")
    return {"target": name, "value": value, "limit": limit, "verdict": verdict}


def assess(report: dict[str, Any], idle: int, logins: int) -> dict[str, Any]:
    phases = report.get("phases", [])
    rows: dict[str, dict[str, Any]] = {}
    for kind in ("quiet", "http", "agi"):
        mine = [p for p in phases if p["name"] == kind]
        if mine:
            rows[kind] = _summary(mine)
    quiets = [p for p in phases if p["name"] == "quiet"]
    each = [{**_summary([p]), "name": p["name"]} for p in phases]  # in the order run
    for kind in ("quiet", "http", "agi"):
        if kind in rows:
            mine = [p for p in phases if p["name"] == kind]
            for name in ("p50_ms", "p99_ms"):
                rows[kind][f"best_{name}"] = _best(mine, name)
                rows[kind][f"median_{name}"] = _median(mine, name)
    base = rows.get("quiet", {})
    for kind in ("http", "agi"):
        if kind in rows:
            row = rows[kind]
            row["p99_ratio"] = _ratio(row.get("best_p99_ms"), base.get("best_p99_ms"))
            row["p50_ratio"] = _ratio(row.get("best_p50_ms"), base.get("best_p50_ms"))
            row["p99_ratio_median"] = _ratio(row.get("median_p99_ms"), base.get("median_p99_ms"))
            row["login_p99_ratio"] = _ratio(row["login_p99_s"], _median(quiets, "login_p99_s"))
    targets = []
    for kind in ("http", "agi"):
        row = rows.get(kind)
        ratio = row.get("p99_ratio") if row else None
        # Nothing routed at all (no p99) is a failure too, not "n/a".
        ok = None if row is None else ratio is not None and ratio <= P99_RATIO_MAX
        targets.append(_target(f"p99 {NAMES[kind]} / quiet", ratio, f"<= {P99_RATIO_MAX:g}x", ok))
        failed = row["failed"] if row else None
        targets.append(
            _target(
                f"failed routes {NAMES[kind]}", failed, "0", None if row is None else not failed
            )
        )
    http = rows.get("http")
    login_p99 = http["login_p99_s"] if http else None
    ok = None
    if http is not None and http["logins"] + http["logins_given_up"]:  # the sidebar ran
        ok = login_p99 is not None and login_p99 < LOGIN_P99_MAX_S and not http["logins_given_up"]
    targets.append(_target("legitimate login p99 during (a), s", login_p99, "< 1 s", ok))
    part = report.get("partition")
    if part is not None:
        worst = part["decision_max_ms"]
        targets.append(
            _target(
                "max decision during the partition, ms",
                worst,
                f"< {part['budget_ms']} (budget)",
                worst is not None
                and worst < part["budget_ms"]
                and not part["failed"]
                and part["decisions_recorded"] == part["calls"],
            )
        )
    standby = report.get("standby")
    if standby is not None:
        growth = standby["growth_after_first_sample"]
        targets.append(
            _target(
                "standby bytes, last sample / minute 2",
                growth,
                f"<= {STANDBY_FLAT_MAX:g}x (flat)",
                None if growth is None else growth <= STANDBY_FLAT_MAX,
            )
        )
    return {"summary": rows, "each_phase": each, "targets": targets}


def _f(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _max(values: Sequence[float | None]) -> float | None:
    """A pooled row's CPU or lag: its worst phase."""
    return max((v for v in values if v is not None), default=None)


def _counts(counts: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "-"


def render(report: dict[str, Any]) -> str:
    meta = report["meta"]
    o = meta["options"]
    out = [
        f"attack_bench {meta['started_at']} ({meta['git']}; cti from {meta.get('cti')});"
        f" {meta['cpus']} CPUs, load"
        f" {meta['loadavg_start'][0]:.1f} -> {meta['loadavg_end'][0]:.1f}",
    ]
    rows = report["summary"]
    if rows:
        out += [
            "",
            f"FastAGI at {o['rate']} routes/s, {o['duration_s']:g} s per phase;"
            f" ulimit -n {o['nofile']}; sidebar {o['sidebar']};"
            f" {'daemon on the first CPU, attackers on the last' if o['pin'] else 'no pinning'}",
            f"{'phase':<28}{'routed':>7}{'failed':>7}{'f-open':>7}{'p50 ms':>8}{'p99 ms':>8}"
            f"{'max ms':>8}{'p99 x':>7}{'login p50/p99 s':>17}{'gave up':>8}{'srv cpu':>9}"
            f"{'atk cpu':>9}{'other':>9}{'lag ms':>7}",
        ]
        shown = [(f"  {n}. {NAMES[r['name']]}", r) for n, r in enumerate(report["each_phase"], 1)]
        shown += [(f"{name} (all)", rows[kind]) for kind, name in NAMES.items() if kind in rows]
        for label, r in shown:
            cpu, atk, other = (
                _f(_max(r[name]), ".0f") + "%"
                for name in ("server_cpu_pct", "attacker_cpu_pct", "other_cpu_pct")
            )
            out.append(
                f"{label:<28}{r['routed']:>7}{r['failed']:>7}{r['fail_open']:>7}"
                f"{_f(r['p50_ms'], '.2f'):>8}{_f(r['p99_ms'], '.2f'):>8}{_f(r['max_ms'], '.1f'):>8}"
                f"{_f(r.get('p99_ratio'), '.2f'):>7}"
                f"{_f(r['login_p50_s'], '.3f') + ' / ' + _f(r['login_p99_s'], '.3f'):>17}"
                f"{r['logins_given_up']:>8}{cpu:>9}{atk:>9}{other:>9}"
                f"{_f(_max(r['start_lag_p99_ms']), '.0f'):>7}"
            )
        for kind, r in rows.items():
            if r["failures"]:
                out.append(f"  {NAMES[kind]} failed routes by cause: {_counts(r['failures'])}")
            out.append(f"  {NAMES[kind]} login attempts by status: {_counts(r['login_statuses'])}")
            for attack in r["attack"]:
                for who, counts in attack.items():
                    shown = _counts(counts) if isinstance(counts, dict) else str(counts)
                    out.append(f"  {NAMES[kind]} {who}: {shown}")
        for kind in ("http", "agi"):
            r = rows.get(kind)
            if r is not None and "quiet" in rows:
                q = rows["quiet"]
                out.append(
                    f"  {NAMES[kind]}: p99 of its best phase {_f(r['best_p99_ms'], '.2f')} ms,"
                    f" quiet's best {_f(q['best_p99_ms'], '.2f')} ms:"
                    f" {_f(r['p99_ratio'], '.2f')}x (p99 x); medians"
                    f" {_f(r['median_p99_ms'], '.2f')} / {_f(q['median_p99_ms'], '.2f')} ms:"
                    f" {_f(r['p99_ratio_median'], '.2f')}x"
                )
    part = report.get("partition")
    if part is not None:
        out += [
            "",
            f"PostgreSQL partition of {part['seconds']:g} s at {part['rate']} calls/s:"
            f" {part['calls']} calls, {part['routed']} routed, {part['failed']} failed,"
            f" {part['fail_open']} fail-open",
            f"  decision (daemon's decision_us) max {_f(part['decision_max_ms'], '.1f')} ms,"
            f" p99 {_f(part['decision_p99_ms'], '.1f')} ms ({part['decisions_recorded']} recorded);"
            f" client-observed max {_f(part['client_max_ms'], '.1f')} ms,"
            f" p99 {_f(part['client_p99_ms'], '.1f')} ms; budget {part['budget_ms']} ms",
        ]
    if report.get("standby") is not None:
        out += ["", standby_memory.render(report["standby"])]
    out += ["", f"{'target':<44}{'value':>10}  {'limit':<20}verdict"]
    for t in report["targets"]:
        value = t["value"]
        shown = _f(value, ".2f") if isinstance(value, float) else str(value)
        out.append(f"{t['target']:<44}{shown:>10}  {t['limit']:<20}{t['verdict']}")
    return "\n".join(out)
