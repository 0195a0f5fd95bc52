"""The assessment and the table of bench/route_bench.py: targets, ratios, notes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.route_bench import PhaseResult
    from bench.route_options import Options

# Targets (printed PASS/FAIL; they fail the exit code only with --strict).
TARGET_P99_RATE = 500
TARGET_P99_MS = 5.0
TARGET_THROUGHPUT = 2000.0
TARGET_BARE_SHARE = 0.5
GENERATOR_HEADROOM = 1.5  # bare peak / our peak above this: the generator is not our limit


# --- assessment and report ---------------------------------------------------------------


def _find(phases: Sequence[PhaseResult], target: str, mode: str, load: int) -> PhaseResult | None:
    for phase in phases:
        if (phase.target, phase.mode, phase.load) == (target, mode, load):
            return phase
    return None


def _peak(phases: Sequence[PhaseResult], target: str) -> PhaseResult | None:
    closed = [p for p in phases if p.target == target and p.mode == "closed"]
    return max(closed, key=lambda p: p.routes_per_s, default=None)


def _ratio(ours: float | None, base: float | None) -> float | None:
    return round(ours / base, 2) if ours is not None and base else None


def assess(phases: Sequence[PhaseResult], options: Options) -> dict[str, Any]:
    comparisons = []
    for phase in phases:
        if phase.target != "cti":
            continue
        bare = _find(phases, "bare", phase.mode, phase.load)
        if bare is None:
            continue
        comparisons.append(
            {
                "mode": phase.mode,
                "load": phase.load,
                "p99_ratio": _ratio(phase.latency_ms["p99"], bare.latency_ms["p99"]),
                "throughput_ratio": _ratio(phase.routes_per_s, bare.routes_per_s),
                "server_cpu_ratio": _ratio(
                    phase.cpu["server_us_per_route"], bare.cpu["server_us_per_route"]
                ),
            }
        )
    ours, bare_peak = _peak(phases, "cti"), _peak(phases, "bare")
    at_rate = _find(phases, "cti", "open", TARGET_P99_RATE)
    p99 = at_rate.latency_ms["p99"] if at_rate else None
    share = _ratio(
        ours.routes_per_s if ours else None, bare_peak.routes_per_s if bare_peak else None
    )
    targets = [
        _target(
            f"p99 at {TARGET_P99_RATE} routes/s < {TARGET_P99_MS:g} ms",
            None if p99 is None else f"{p99:.2f} ms",
            None if p99 is None or at_rate is None else p99 < TARGET_P99_MS and at_rate.failed == 0,
        ),
        _target(
            f"saturated throughput > {TARGET_THROUGHPUT:,.0f} routes/s",
            None if ours is None else f"{ours.routes_per_s:,.0f}/s ({ours.label})",
            None if ours is None else ours.routes_per_s > TARGET_THROUGHPUT,
        ),
        _target(
            f"throughput >= {TARGET_BARE_SHARE:g} x bare responder",
            None
            if share is None or ours is None or bare_peak is None
            else f"{share:.2f} ({ours.routes_per_s:,.0f} / {bare_peak.routes_per_s:,.0f})",
            None if share is None else share >= TARGET_BARE_SHARE,
        ),
    ]
    generator = None
    if ours is not None and bare_peak is not None:
        headroom = _ratio(bare_peak.routes_per_s, ours.routes_per_s)
        generator = {
            "bare_peak_routes_per_s": bare_peak.routes_per_s,
            "cti_peak_routes_per_s": ours.routes_per_s,
            "headroom": headroom,
            "generator_pct_at_cti_peak": ours.cpu["generator_pct"],
            "generator_pct_at_bare_peak": bare_peak.cpu["generator_pct"],
            "cti_server_pct_at_cti_peak": ours.cpu["server_pct"],
            "generator_is_bottleneck": headroom is None or headroom < GENERATOR_HEADROOM,
        }
    log_cost = None
    info = _find(phases, "cti-info", "closed", options.info_concurrency)
    warn = _find(phases, "cti", "closed", options.info_concurrency)
    if info is not None and warn is not None:
        per_route = (info.cpu["server_us_per_route"], warn.cpu["server_us_per_route"])
        log_cost = {
            "concurrency": options.info_concurrency,
            "info_routes_per_s": info.routes_per_s,
            "warning_routes_per_s": warn.routes_per_s,
            "throughput_ratio": _ratio(info.routes_per_s, warn.routes_per_s),
            "info_p99_ms": info.latency_ms["p99"],
            "warning_p99_ms": warn.latency_ms["p99"],
            "server_cpu_us_per_route_delta": None
            if None in per_route
            else round(float(per_route[0] or 0) - float(per_route[1] or 0), 1),
        }
    return {
        "comparisons": comparisons,
        "targets": targets,
        "generator_check": generator,
        "log_cost": log_cost,
    }


def _target(name: str, value: str | None, passed: bool | None) -> dict[str, Any]:
    verdict = "n/a" if passed is None else ("PASS" if passed else "FAIL")
    return {"target": name, "value": value, "verdict": verdict}


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def render(report: dict[str, Any]) -> str:
    meta = report["meta"]
    opts = meta["options"]
    out = [
        f"route bench {meta['started_at']}  {meta['cpus']} CPUs  python {meta['python']}"
        f"  git {meta['git_commit']}  load avg {_fmt(meta['loadavg_start'][0], '.2f')}"
        f" -> {_fmt(meta['loadavg_end'][0], '.2f')}",
        f"{opts['customers']:,} customers; {opts['duration_s']:g} s per phase;"
        f" open loop = {'Poisson' if opts['poisson'] else 'uniform'} arrivals;"
        " latency = client connect -> server close",
        "",
        f"{'load':>7} {'target':<8} {'routes':>7} {'fail':>4} {'f-open':>6} {'routes/s':>8}"
        f" {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'dec p50/p99 us':>14}"
        f" {'srv cpu':>7} {'us/route':>8} {'gen cpu':>7} {'pg+redis':>8} {'other':>6}",
    ]
    for p in report["phases"]:
        label = f"{p['load']}/s" if p["mode"] == "open" else f"N={p['load']}"
        lat, cpu, dec = p["latency_ms"], p["cpu"], p["decision_us"]
        decision = "-" if not dec or dec["p50"] is None else f"{dec['p50']:.0f}/{dec['p99']:.0f}"
        out.append(
            f"{label:>7} {p['target']:<8} {p['routes']:>7} {p['failed']:>4}"
            f" {p['fail_open'] if p['target'] != 'bare' else '-':>6} {p['routes_per_s']:>8.0f}"
            f" {_fmt(lat['p50'], '.2f'):>7} {_fmt(lat['p99'], '.2f'):>7}"
            f" {_fmt(lat['max'], '.1f'):>7} {decision:>14}"
            f" {_pct(cpu['server_pct']):>7} {_fmt(cpu['server_us_per_route'], '.0f'):>8}"
            f" {_pct(cpu['generator_pct']):>7} {_pct(cpu['pg_redis_pct']):>8}"
            f" {_pct(cpu['other_pct']):>6}"
        )
    out += [
        "  (cpu columns: % of one core over the phase; us/route: server CPU per route;"
        " other: everything else on the machine;",
        "   dec: the daemon's own decision_us from the interactions table)",
        "",
        f"{'cti / bare':>10} {'p99':>6} {'routes/s':>9} {'cpu/route':>10}",
    ]
    for c in report["comparisons"]:
        label = f"{c['load']}/s" if c["mode"] == "open" else f"N={c['load']}"
        out.append(
            f"{label:>10} {_fmt(c['p99_ratio'], '.2f') + 'x':>6}"
            f" {_fmt(c['throughput_ratio'], '.2f'):>9}"
            f" {_fmt(c['server_cpu_ratio'], '.1f') + 'x':>10}"
        )
    out += ["", "targets"]
    for t in report["targets"]:
        out.append(f"  {t['verdict']:<4}  {t['target']:<42} {t['value'] or '(not measured)'}")
    gen = report["generator_check"]
    if gen:
        verdict = (
            "MAY BE the bottleneck (bare is not clearly faster than cti)"
            if gen["generator_is_bottleneck"]
            else "is not the bottleneck of the cti numbers"
        )
        out += [
            "",
            f"generator check: bare peak {gen['bare_peak_routes_per_s']:,.0f}/s vs cti peak"
            f" {gen['cti_peak_routes_per_s']:,.0f}/s ({_fmt(gen['headroom'], '.2f')}x);"
            f" generator CPU {_fmt(gen['generator_pct_at_cti_peak'], '.0f')}% at the cti peak"
            f" (daemon {_fmt(gen['cti_server_pct_at_cti_peak'], '.0f')}%)"
            f" -> the generator {verdict}",
        ]
    cost = report["log_cost"]
    if cost:
        out.append(
            f"per-call log line (CTI_LOG_LEVEL=info vs warning, N={cost['concurrency']}):"
            f" {cost['info_routes_per_s']:,.0f} vs {cost['warning_routes_per_s']:,.0f} routes/s"
            f" ({_fmt(cost['throughput_ratio'], '.2f')}x), p99 {_fmt(cost['info_p99_ms'], '.2f')}"
            f" vs {_fmt(cost['warning_p99_ms'], '.2f')} ms,"
            f" +{_fmt(cost['server_cpu_us_per_route_delta'], '.0f')} us daemon CPU per route"
        )
    notes = _notes(report)
    if notes:
        out += ["", *notes]
    return "\n".join(out)


def _notes(report: dict[str, Any]) -> list[str]:
    notes = []
    for p in report["phases"]:
        label = f"{p['mode']} {p['load']}{'/s' if p['mode'] == 'open' else ''} {p['target']}"
        if p["failures"]:
            notes.append(f"note: {label}: failed routes {p['failures']}")
        if p["target"] != "bare" and p["fail_open"]:
            notes.append(f"note: {label}: {p['fail_open']} routes failed open")
        if p["shed"]:
            notes.append(f"note: {label}: generator shed {p['shed']} arrivals (too many in flight)")
        lag = p["start_lag_ms"]
        if lag and lag["p99"] is not None and lag["p99"] > 5:
            notes.append(f"note: {label}: calls started late (p99 {lag['p99']:.1f} ms)")
    warnings = report["meta"].get("daemon_warning_lines")
    if warnings:
        notes.append(f"note: the daemon logged {warnings} warning/error lines (kept in results/)")
    return notes
