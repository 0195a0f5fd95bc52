"""Pop latency: AgentCalled on the AMI socket → the ``ringing`` frame on the agent's WebSocket.

    .venv/bin/python -m bench.pop_latency            # full run, about 2.5 minutes
    .venv/bin/python -m bench.pop_latency --quick    # smoke run, about 30 s
    .venv/bin/python -m bench.pop_latency --loads 100x100 --instances 2 --json

What issue 5 asks: the time from Asterisk's ``AgentCalled`` to the pop frame arriving at
the agent's browser, p50 and p99, with 20 and 100 agents receiving pops at once, with one
daemon instance and with two; target p99 under 50 ms end to end.

Processes (each its own event loop, uvloop where installed, as ``cti serve`` runs; see
bench/pop_processes.py): the **sender**, a fake Asterisk playing the recorded
answered_call.txt with its member renamed to one of the N bench agents, round-robin;
**A**, cti.app.following's ``follow_calls`` minus PostgreSQL (bench/harness.CtiPipeline),
which with **one instance** also serves the HTTP app (cti.screenpop.app.build_app) and
with **two** leaves it to **B** (as ``cti screenpop`` without call control), so that
every pop crosses Redis; the **client**, one WebSocket per agent, stamping each
``ringing`` frame as the socket hands it over.

Latency = client's stamp − sender's stamp, matched by the event's ``channel`` (the
AgentCalled's DestChannel). Both are ``CLOCK_MONOTONIC``, one clock for every process of
a Linux machine. Only AgentCalleds scheduled inside the measured window count: calls
start ``--warmup`` seconds before it and go on 0.3 s after it.

**Floor**, in the same run and the same processes: A's sink replaced by one that
``XADD``\\ s each AgentCalled to the agent's stream (``cti:events:agent:<Interface>``,
one round trip awaited in ``apply``; no model, tracker, outbox or Lua), with the same
HTTP app, WebSocket and client. Per configuration the phases run floor, cti, cti,
floor (``--rounds`` 2; ``--quick``: 1), the measured ``--duration`` split between them.

Stamps taken in A and in the HTTP process split the time (``ami→sink``, ``sink→pub``,
``pub→xread``, ``xread→ws``, ``pub call``); the ``other`` column is the rest of the
machine's busy CPU meanwhile, the noise of a shared machine (bench/README.md has both).

Needs Redis on 127.0.0.1:6379 (db 12, ``--redis-url``; flushed before every phase and at
the end) and PostgreSQL on 127.0.0.1:5432 (``--pg-server``): a throwaway database
``cti_bench_pop_<hex>`` is migrated (cti.db.migrate), given the bench agents, and
dropped at the end. Prints a table; ``--json [PATH]`` also writes the results (default
bench/results/pop-<UTC timestamp>.json). Exit 0; 2 when the bench cannot run.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from redis.exceptions import RedisError

from bench.harness import (
    TAIL_S,
    BenchError,
    Child,
    CommonOptions,
    add_common_arguments,
    collect,
    common_options,
    flush_redis,
    fmt,
    host_busy_s,
    merge_problems,
    now,
    progress,
    ratio,
    redis_cpu_s,
    round_targets,
    run_main,
    run_meta,
    summary_ms,
)
from bench.pop_processes import (
    CAPTURE,
    COLLECT_TIMEOUT_S,
    CONNECT_TIMEOUT_S,
    SESSION_TTL_S,
    PopSpec,
    ServerSpec,
    agent_names,
    client_main,
    create_database,
    drop_database,
    sender_main,
    server_main,
)
from cti.logs import configure_logging
from cti.screenpop.auth import Sessions

DEFAULT_PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
TARGET_P99_MS = 50.0
#: A row during which the rest of the machine kept more than this share of one core busy
#: is flagged: its tail is other tenants' (2 cores in all), compare it with its floor.
NOISY_OTHER_PCT = 50.0
LOADS_FULL = ((20, 20), (20, 100), (100, 20), (100, 100))  # (agents, calls/s)
LOADS_QUICK = ((20, 20), (100, 100))


# -- options -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Options(CommonOptions):
    loads: tuple[tuple[int, int], ...]  # (agents, calls/s)
    instances: tuple[int, ...]
    pg_server: str


def _loads(text: str) -> tuple[tuple[int, int], ...]:
    loads = []
    for part in text.split(","):
        agents, sep, rate = part.strip().partition("x")
        if not sep or not agents.isdigit() or not rate.isdigit():
            raise argparse.ArgumentTypeError(f"not AGENTSxRATE: {part!r}")
        if not 1 <= int(agents) <= 9999 or int(rate) < 1:
            raise argparse.ArgumentTypeError("agents 1..9999, rate >= 1")
        loads.append((int(agents), int(rate)))
    return tuple(loads)


def _instances(text: str) -> tuple[int, ...]:
    values = tuple(part.strip() for part in text.split(",") if part.strip())
    if not values or any(v not in ("1", "2") for v in values):
        raise argparse.ArgumentTypeError("instances: 1, 2 or 1,2")
    return tuple(int(v) for v in values)


def parse_options(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pop_latency", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="smoke run, under 40 s")
    parser.add_argument(
        "--loads",
        type=_loads,
        help="AGENTSxCALLS_PER_S, comma separated (20x20,20x100,100x20,100x100;"
        " --quick: 20x20,100x100)",
    )
    parser.add_argument("--instances", type=_instances, help="1, 2 or 1,2 (1,2)")
    parser.add_argument(
        "--pg-server",
        default=os.environ.get("CTI_TEST_PG", DEFAULT_PG_SERVER),
        help="PostgreSQL server URL without a database (a throwaway one is created)",
    )
    add_common_arguments(parser, "pop")
    args = parser.parse_args(argv)
    if urlsplit(args.pg_server).path.strip("/"):
        parser.error("--pg-server is a server URL without a database name")
    common = common_options(parser, args, "pop", duration_s=(6.0, 2.0), warmup_s=(1.0, 0.5))
    return Options(
        **asdict(common),
        loads=args.loads or (LOADS_QUICK if common.quick else LOADS_FULL),
        instances=args.instances or (1, 2),
        pg_server=args.pg_server.rstrip("/"),
    )


# -- one phase ---------------------------------------------------------------------------
SEGMENTS = ("ami_to_sink", "sink_to_publish", "publish_to_xread", "xread_to_ws", "publish_call")


@dataclass(frozen=True)
class Setup:
    instances: int
    agents: int
    rate: int

    @property
    def label(self) -> str:
        return f"{self.instances} inst {self.agents:>3} agents {self.rate:>3}/s"


@dataclass
class Kids:
    sender: Child
    server_a: Child
    server_b: Child
    client: Child
    ami_port: int = 0


@dataclass
class PhaseRun:
    setup: Setup
    target: str  # floor | cti
    calls: int
    events: int
    pops: int  # AgentCalled written inside the measured window
    latencies: list[float]
    segments: dict[str, list[float]]
    taken_in: int
    span_s: float  # mark -> everything collected
    play_s: float  # the sender's first write -> last write
    cpu_a_s: float
    cpu_b_s: float | None
    cpu_client_s: float
    redis_cpu_s: float | None
    other_s: float | None  # the machine's busy CPU minus the bench's processes and Redis
    lag_p99_ms: float
    buffered_writes: int
    published: int
    frames: int
    problems: dict[str, Any]


@dataclass
class PhaseResult:
    instances: int
    agents: int
    rate: int
    target: str
    rounds: int
    calls: int
    events: int
    pops: int
    received: int
    events_per_s: float
    cpu_a_pct: float
    cpu_b_pct: float | None
    cpu_client_pct: float
    redis_cpu_pct: float | None
    other_pct: float | None
    latency_ms: dict[str, float | None]
    round_p99_ms: list[float | None]  # each round's own p99: a noisy round shows here
    segments_ms: dict[str, dict[str, float | None]]
    send_lag_p99_ms: float
    buffered_writes: int
    published: int
    frames: int
    problems: dict[str, Any] = field(default_factory=dict)


async def run_phase(
    index: int,
    setup: Setup,
    target: str,
    options: Options,
    kids: Kids,
    tokens: Sequence[tuple[str, str]],
    database_url: str,
    secret: bytes,
) -> PhaseRun:
    duration = options.duration_s / options.rounds
    spec = PopSpec(f"p{index}", setup.rate, options.warmup_s, duration, TAIL_S, setup.agents)
    await flush_redis(options.redis_url)  # nothing of the last phase: empty streams, no lease
    prepared = await kids.sender.ask("prepare", spec, timeout_s=120)
    two = setup.instances == 2
    server = ServerSpec(
        target=target,
        http=not two,
        ami_port=kids.ami_port,
        redis_url=options.redis_url,
        database_url=database_url,
        secret=secret,
    )
    try:
        started = await kids.server_a.ask("start", server)
        if two:
            started = await kids.server_b.ask(
                "start", ServerSpec(None, True, 0, options.redis_url, database_url, secret)
            )
        await kids.client.ask(
            "connect", (started["http_port"], tokens[: setup.agents]), CONNECT_TIMEOUT_S + 5
        )
        await kids.server_a.ask("mark")
        if two:
            await kids.server_b.ask("mark")
        gc.collect()
        redis_before, host_before, main_before = redis_cpu_s(), host_busy_s(), time.process_time()
        begun = now()
        done = await kids.sender.ask("go", timeout_s=options.warmup_s + duration + TAIL_S + 60)
        wanted = {channel: stamp for channel, stamp, measured in done["sent"] if measured}
        browsers: dict[str, Any] = {}

        async def flush() -> list[tuple[str, float]]:
            nonlocal browsers
            browsers = await kids.client.ask("flush")
            return browsers["records"]

        seen = await collect(flush, wanted, COLLECT_TIMEOUT_S)
        span = now() - begun
        redis_after, host_after, main_after = redis_cpu_s(), host_busy_s(), time.process_time()
        a = await kids.server_a.ask("drain", done["events"], timeout_s=COLLECT_TIMEOUT_S + 10)
        b = await kids.server_b.ask("drain", 0) if two else None
    finally:
        with contextlib.suppress(BenchError, OSError):
            await kids.client.ask("close")
        with contextlib.suppress(BenchError, OSError):
            await kids.server_a.ask("end")
        if two:
            with contextlib.suppress(BenchError, OSError):
                await kids.server_b.ask("end")
    http = b if b is not None else a
    latencies: list[float] = []
    segments: dict[str, list[float]] = {name: [] for name in SEGMENTS}
    for channel, sent_at in wanted.items():
        received_at = seen.get(channel)
        if received_at is None:
            continue
        latencies.append(received_at - sent_at)
        applied = a["apply"].get(channel)
        published = a["publish"].get(channel)
        xread = http["xread"].get(channel)
        if applied is None or published is None or xread is None:
            continue
        segments["ami_to_sink"].append(applied - sent_at)
        segments["sink_to_publish"].append(published[0] - applied)
        segments["publish_to_xread"].append(xread - published[0])
        segments["xread_to_ws"].append(received_at - xread)
        segments["publish_call"].append(published[1] - published[0])
    problems: dict[str, Any] = dict(a["problems"])
    if not a["drained"]:
        problems["not_drained"] = 1
    for name in ("wrong_agent", "closed_early"):
        if browsers.get(name):
            problems[name] = browsers[name]
    redis_used = None if redis_before is None or redis_after is None else redis_after - redis_before
    other = None
    if host_before is not None and host_after is not None and redis_used is not None:
        ours = (
            a["cpu_s"]
            + (b["cpu_s"] if b is not None else 0.0)
            + browsers.get("cpu_s", 0.0)
            + done["cpu_s"]
            + (main_after - main_before)
            + redis_used
        )
        other = max(0.0, host_after - host_before - ours)
    return PhaseRun(
        setup=setup,
        target=target,
        calls=prepared["calls"],
        events=done["events"],
        pops=len(wanted),
        latencies=latencies,
        segments=segments,
        taken_in=a["taken_in"],
        span_s=span,
        play_s=done["span_s"],
        cpu_a_s=a["cpu_s"],
        cpu_b_s=b["cpu_s"] if b is not None else None,
        cpu_client_s=browsers.get("cpu_s", 0.0),
        redis_cpu_s=redis_used,
        other_s=other,
        lag_p99_ms=done["lag_p99_ms"],
        buffered_writes=done["buffered_writes"],
        published=a["published"],
        frames=browsers.get("frames", 0),
        problems=problems,
    )


def aggregate(runs: Sequence[PhaseRun]) -> PhaseResult:
    span = sum(run.span_s for run in runs)

    def pct(seconds: float) -> float:
        return round(100 * seconds / span, 1)

    redis_cpu = [run.redis_cpu_s for run in runs]
    other = [run.other_s for run in runs]
    cpu_b = [run.cpu_b_s for run in runs]
    setup = runs[0].setup
    return PhaseResult(
        instances=setup.instances,
        agents=setup.agents,
        rate=setup.rate,
        target=runs[0].target,
        rounds=len(runs),
        calls=sum(run.calls for run in runs),
        events=sum(run.events for run in runs),
        pops=sum(run.pops for run in runs),
        received=sum(len(run.latencies) for run in runs),
        events_per_s=round(sum(run.taken_in for run in runs) / sum(r.play_s for r in runs), 1),
        cpu_a_pct=pct(sum(run.cpu_a_s for run in runs)),
        cpu_b_pct=None if None in cpu_b else pct(sum(filter(None, cpu_b))),
        cpu_client_pct=pct(sum(run.cpu_client_s for run in runs)),
        redis_cpu_pct=None if None in redis_cpu else pct(sum(filter(None, redis_cpu))),
        other_pct=None if None in other else pct(sum(filter(None, other))),
        latency_ms=summary_ms([x for run in runs for x in run.latencies]),
        round_p99_ms=[summary_ms(list(run.latencies))["p99"] for run in runs],
        segments_ms={
            name: summary_ms([x for run in runs for x in run.segments[name]]) for name in SEGMENTS
        },
        send_lag_p99_ms=round(max(run.lag_p99_ms for run in runs), 3),
        buffered_writes=sum(run.buffered_writes for run in runs),
        published=sum(run.published for run in runs),
        frames=sum(run.frames for run in runs),
        problems=merge_problems(run.problems for run in runs),
    )


def passed(phase: PhaseResult) -> bool:
    p99 = phase.latency_ms["p99"]
    return p99 is not None and p99 < TARGET_P99_MS and phase.received == phase.pops


async def run_bench(options: Options) -> dict[str, Any]:
    configure_logging("console", "warning")  # as the route bench runs the daemon
    max_agents = max(agents for agents, _rate in options.loads)
    secret = secrets.token_bytes(32)
    sessions = Sessions(secret, SESSION_TTL_S)
    tokens = []
    for username, endpoint in agent_names(max_agents):
        token, _claims = sessions.issue(
            username=username, display_name=f"Agent {username}", endpoint=endpoint, role="agent"
        )
        tokens.append((endpoint, token))
    await flush_redis(options.redis_url)
    meta = run_meta(options, capture=CAPTURE)
    started = now()
    database = await create_database(options.pg_server, max_agents)
    database_url = f"{options.pg_server}/{database}"
    kids: Kids | None = None
    phases: list[PhaseResult] = []
    try:
        kids = Kids(
            sender=Child("sender", sender_main, options.max_gap_s),
            server_a=Child("server-a", server_main),
            server_b=Child("server-b", server_main),
            client=Child("client", client_main),
        )
        kids.ami_port = await kids.sender.receive(30)
        for kid in (kids.server_a, kids.server_b, kids.client):
            await kid.receive(30)
        index = 0
        for instances in options.instances:
            for agents, rate in options.loads:
                setup = Setup(instances, agents, rate)
                runs: dict[str, list[PhaseRun]] = {"floor": [], "cti": []}
                for round_ in range(options.rounds):
                    for target in round_targets(round_):
                        progress(f"{setup.label}, {target}, round {round_ + 1} ...")
                        run = await run_phase(
                            index, setup, target, options, kids, tokens, database_url, secret
                        )
                        lat = summary_ms(list(run.latencies))
                        other = (
                            "-" if run.other_s is None else f"{100 * run.other_s / run.span_s:.0f}%"
                        )
                        progress(
                            f"  {len(run.latencies)}/{run.pops} pops, p50 {lat['p50']} ms,"
                            f" p99 {lat['p99']} ms, max {lat['max']} ms, other {other}"
                        )
                        runs[target].append(run)
                        index += 1
                phases += [aggregate(runs["floor"]), aggregate(runs["cti"])]
    finally:
        if kids is not None:
            for kid in (kids.client, kids.server_a, kids.server_b, kids.sender):
                kid.stop()
        with contextlib.suppress(RedisError, OSError):
            await flush_redis(options.redis_url)
        with contextlib.suppress(asyncpg.PostgresError, OSError):
            await drop_database(options.pg_server, database)
    meta["loadavg_end"] = os.getloadavg()[0]
    meta["wall_s"] = round(now() - started, 1)
    ratios = []
    for i in range(0, len(phases), 2):
        floor, cti = phases[i], phases[i + 1]
        ratios.append(
            {
                "instances": cti.instances,
                "agents": cti.agents,
                "rate": cti.rate,
                "p50": ratio(cti.latency_ms["p50"], floor.latency_ms["p50"]),
                "p99": ratio(cti.latency_ms["p99"], floor.latency_ms["p99"]),
            }
        )
    ctis = [p for p in phases if p.target == "cti"]
    target = {
        "p99_ms_under": TARGET_P99_MS,
        "passed": all(passed(p) for p in ctis),
        "worst_p99_ms": max((p.latency_ms["p99"] or 0.0) for p in ctis) if ctis else None,
    }
    return {
        "meta": meta,
        "phases": [asdict(p) for p in phases],
        "ratios": ratios,
        "target": target,
    }


# -- output ------------------------------------------------------------------------------
def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def render(report: dict[str, Any]) -> str:
    meta, opts = report["meta"], report["meta"]["options"]
    out = [
        f"pop latency {meta['started_at']}  {meta['cpus']} CPUs  python {meta['python']}"
        f" ({meta['loop']})  load avg {meta['loadavg_start']:.2f} -> {meta['loadavg_end']:.2f}"
        f"  {meta['wall_s']:g} s",
        f"{opts['duration_s']:g} s measured per row in {opts['rounds']} round(s), each after"
        f" {opts['warmup_s']:g} s of calls; {meta['capture']} calls, pauses cut to"
        f" {opts['max_gap_s']:g} s; latency = AgentCalled written -> ringing frame received"
        " on the agent's WebSocket (other process)",
        "",
        f"{'inst':>4} {'agents':>6} {'rate':>6} {'target':<6} {'pops':>5} {'lost':>4}"
        f" {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'cpu A':>6} {'cpu B':>6}"
        f" {'client':>6} {'redis':>6} {'other':>6} {'send lag':>8} {'p99<50':>6}",
    ]
    for p in report["phases"]:
        lat = p["latency_ms"]
        verdict = ""
        if p["target"] == "cti":
            ok = lat["p99"] is not None and lat["p99"] < TARGET_P99_MS
            verdict = "PASS" if ok and p["received"] == p["pops"] else "FAIL"
        out.append(
            f"{p['instances']:>4} {p['agents']:>6} {p['rate']:>4}/s {p['target']:<6}"
            f" {p['pops']:>5} {p['pops'] - p['received']:>4}"
            f" {fmt(lat['p50'], '.2f'):>7} {fmt(lat['p99'], '.2f'):>7}"
            f" {fmt(lat['max'], '.2f'):>7} {_pct(p['cpu_a_pct']):>6} {_pct(p['cpu_b_pct']):>6}"
            f" {_pct(p['cpu_client_pct']):>6} {_pct(p['redis_cpu_pct']):>6}"
            f" {_pct(p['other_pct']):>6} {p['send_lag_p99_ms']:>6.1f}ms {verdict:>6}"
        )
    out += [
        "  (inst 1: A follows AMI and serves the WebSockets; inst 2: A follows AMI, B serves"
        " them. cpu: % of one core;",
        "   redis: every redis-server; other: the rest of the machine's busy CPU (other"
        " tenants, kernel, steal): the noise;",
        "   send lag: p99 of the fake Asterisk's writes behind schedule)",
        "",
        f"{'cti / floor':<27} {'p50':>6} {'p99':>6}",
    ]
    for r in report["ratios"]:
        label = Setup(r["instances"], r["agents"], r["rate"]).label
        out.append(f"{label:<27} {fmt(r['p50'], '.2f') + 'x':>6} {fmt(r['p99'], '.2f') + 'x':>6}")
    out += [
        "",
        "where the time goes, p50 / p99 ms (ami->sink: socket, parse, client queue; sink->pub:"
        " model, tracker, Outbox;",
        " pub->xread: publish called -> the socket's XREAD returned it in the HTTP process;"
        " xread->ws: frame sent and received; pub call: publish_many)",
        f"{'inst':>4} {'agents':>6} {'rate':>6} {'target':<6} {'ami->sink':>13}"
        f" {'sink->pub':>13} {'pub->xread':>13} {'xread->ws':>13} {'pub call':>13}",
    ]
    for p in report["phases"]:
        cells = [
            f"{fmt(s['p50'], '.2f')} / {fmt(s['p99'], '.2f')}" for s in p["segments_ms"].values()
        ]
        out.append(
            f"{p['instances']:>4} {p['agents']:>6} {p['rate']:>4}/s {p['target']:<6} "
            + " ".join(f"{c:>13}" for c in cells)
        )
    target = report["target"]
    out += [
        "",
        f"target p99 < {target['p99_ms_under']:g} ms end to end, nothing lost, every cti row:"
        f" {'PASS' if target['passed'] else 'FAIL'} (worst cti p99"
        f" {fmt(target['worst_p99_ms'], '.2f')} ms)",
    ]
    notes: list[str] = []
    noisy: list[str] = []
    for p in report["phases"]:
        where = f"{p['instances']} inst {p['agents']} agents {p['rate']}/s {p['target']}"
        if p["received"] < p["pops"]:
            notes.append(f"note: {where}: {p['pops'] - p['received']} pops never received")
        if p["buffered_writes"]:
            notes.append(
                f"note: {where}: the AMI socket backed up {p['buffered_writes']} times"
                " (the pipeline fell behind)"
            )
        if p["problems"]:
            notes.append(f"note: {where}: {p['problems']}")
        if p["other_pct"] is not None and p["other_pct"] > NOISY_OTHER_PCT:
            noisy.append(f"{where} {p['other_pct']:.0f}%")
    if noisy:
        notes.append(
            f"note: noisy rows (the rest of the machine kept over {NOISY_OTHER_PCT:.0f}% of a core"
            f" busy): {'; '.join(noisy)}. Their tail is the machine's: compare cti with floor,"
            " or run again"
        )
    if notes:
        out += ["", *notes]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    return run_main(
        "pop_latency",
        lambda: run_bench(options),
        render,
        options.json_path,
        errors=(asyncpg.PostgresError,),
    )


if __name__ == "__main__":
    sys.exit(main())
