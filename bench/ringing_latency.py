"""Ringing latency: AgentCalled on the AMI socket → the ``ringing`` entry readable in Redis.

    .venv/bin/python -m bench.ringing_latency            # full run, about 2 minutes
    .venv/bin/python -m bench.ringing_latency --quick    # smoke run, about 22 s
    .venv/bin/python -m bench.ringing_latency --rates 10,100 --duration 5 --json

Why: the ``ringing`` event is the one call event a person waits on (the agent's sidebar
shows who is calling while the phone rings), so what the issue asks for is its delay from
Asterisk's ``AgentCalled`` to the entry a sidebar's ``XREAD`` can see, under load, with
the floor that a socket and one Redis round trip set on this machine next to it.

Three processes, so that the reader and the fake Asterisk do not share an event loop
(or a core, when one is free) with the code under test:

* **sender**: tests/fakes/ami_server.FakeAmi in its own process and event loop, playing
  Asterisk. It plays the captures of tests/fixtures/ami as calls that start at a steady
  ``rate`` per second, every call a renamed copy (tests/unit/ami_replay.Renamer: its own
  channels, Uniqueids, Linkedids, CTI_CALL_ID; the same agents and queues) cycling
  through the captures (~50 events a call). Each event keeps its recorded offset from
  the one before, except that pauses longer than ``--max-gap`` (0.1 s: ringing, talking)
  are cut to it: the bursts Asterisk writes (the AgentCalled comes with the member
  leg's Newchannel, DialBegin, ... within a millisecond or two) arrive as recorded and a
  call lasts 0.2-0.8 s. Due events go out in one write per loop turn; each write holding
  an ``AgentCalled`` is stamped just before ``write()``, with the ``DestChannel`` it rings.
* **pipeline** (this process, on uvloop like ``cti serve``): what cti.app.following's
  ``follow_calls`` wires, minus PostgreSQL: AmiClient → CallTracker (leader by the
  Lease on ``cti:ami:leader``) → Outbox → EventPublisher → Redis. The timeline writer
  and the data expiry are not wired (they are off the publish path). The lease task is
  started once AMI is up, which only saves its first 1 s retry.
* **reader**: its own process with a synchronous redis client, blocked in ``XREAD`` over
  every agent's stream; each ``ringing`` entry is stamped when ``XREAD`` returned it.

Latency = (reader's stamp) − (sender's write), matched by the payload's ``channel``
(the AgentCalled's DestChannel). Both stamps are ``CLOCK_MONOTONIC``, which on Linux is
one clock for every process of the machine (and, unlike ``time.time``, never stepped).
Only AgentCalled blocks scheduled inside the measured window count: calls start
``--warmup`` seconds before it (the load is steady once the first calls end) and go on
for a short tail after it (events past the tail are not sent).

**Floor**, measured in the same run: the same sender and AmiClient, the sink replaced by
one that ``XADD``\\ s every AgentCalled to ``bench:floor:agent:<Interface>`` (awaited
inside ``apply``): socket + parse + one round trip. The machine is shared and noisy, so
compare the cti / floor ratios; per rate the phases run floor, cti, cti, floor, ...
(``--rounds``, 2; ``--quick``: 1), the measured ``--duration`` split between them, so
that a drift of the machine's load hits both alike.

The pipeline's own stamps split the cti time: ``ami→sink`` (socket, parse, the client's
queue), ``sink→pub`` (model, tracker, waiting for the Outbox task to wake up or for the
batch in flight), ``pub→read`` (publish_many called → the reader has it) and ``pub call``
(publish_many's whole duration).

Needs Redis on 127.0.0.1:6379; uses db 12 (``--redis-url``), flushed at start and end.
Prints a table; ``--json [PATH]`` also writes the results (default
bench/results/ringing-<UTC timestamp>.json). Exit 0; 2 when the bench cannot run.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import re
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from typing import Any

import redis
from redis.exceptions import RedisError

from bench.harness import (
    FLOOR_PREFIX,
    RINGING_MARK,
    TAIL_S,
    Child,
    CommonOptions,
    CtiPipeline,
    FloorPipeline,
    Pipeline,
    Stamps,
    add_common_arguments,
    collect,
    common_options,
    flush_redis,
    fmt,
    merge_problems,
    now,
    poll_until,
    progress,
    ratio,
    redis_client,
    redis_cpu_s,
    round_targets,
    run_main,
    run_meta,
    summary_ms,
)
from bench.sender import Capture, PhaseSpec, Schedule, build_schedule, load_captures, run_sender
from cti.calls.publisher import agent_stream
from cti.logs import configure_logging
from tests.unit import ami_replay

DRAIN_TIMEOUT_S = 15.0  # the pipeline, after the sender's last write
COLLECT_TIMEOUT_S = 5.0  # the reader, once the pipeline has drained


# -- options -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Options(CommonOptions):
    rates: tuple[int, ...]


def _rates(text: str) -> tuple[int, ...]:
    try:
        rates = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not rates or min(rates) < 1:
        raise argparse.ArgumentTypeError("rates must be integers >= 1")
    return rates


def parse_options(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ringing_latency", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="smoke run, under 30 s")
    parser.add_argument("--rates", type=_rates, help="calls/s, comma separated (10,50,100,200)")
    add_common_arguments(parser, "ringing")
    args = parser.parse_args(argv)
    common = common_options(parser, args, "ringing", duration_s=(12.0, 2.0), warmup_s=(1.0, 1.0))
    return Options(
        **asdict(common),
        rates=args.rates or ((10, 50, 100) if common.quick else (10, 50, 100, 200)),
    )


# -- the traffic: every capture in turn --------------------------------------------------
def watched_agents() -> list[str]:
    """Every member interface of the captures, as AgentCalled names it (the floor's
    streams) and as the model does (its StateInterface: the cti streams)."""
    agents: set[str] = set()
    for name in ami_replay.fixture_names():
        found = re.findall(rb"\r\n(?:Interface|StateInterface): ([^\r\n]+)", ami_replay.load(name))
        agents.update(value.decode() for value in found)
    return sorted(agents)


def captures_in_turn(captures: Sequence[Capture], spec: PhaseSpec) -> Schedule:
    """Copies of the captures in turn (``interleaved_calls`` counts as its 3 calls)."""
    return build_schedule(spec, lambda copy: captures[copy % len(captures)])


def sender_main(conn: Connection, max_gap_s: float) -> None:
    run_sender(conn, lambda: functools.partial(captures_in_turn, load_captures(max_gap_s)))


# -- the reader ------------------------------------------------------------------------
def reader_main(conn: Connection, redis_url: str, streams: Sequence[str]) -> None:
    """Blocks in XREAD over every stream; keeps (channel, stamp) of ``ringing`` entries
    and hands them over on ``flush``. Synchronous: nothing else runs in this process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops us
    client = redis.Redis.from_url(redis_url)
    client.ping()
    ids: dict[str, str | bytes] = {stream: "0-0" for stream in streams}
    records: list[tuple[str, float]] = []
    conn.send(("ready", None))
    cpu = time.process_time()
    try:
        while True:
            if conn.poll():
                command, _ = conn.recv()
                if command != "flush":
                    return
                conn.send(("records", (records, time.process_time() - cpu)))
                records = []
                cpu = time.process_time()
            answer = client.xread(ids, block=50)
            stamp = now()
            for stream, entries in answer:
                for _entry_id, fields in entries:
                    payload = fields.get(b"e", b"")
                    if RINGING_MARK in payload:
                        records.append((json.loads(payload)["channel"], stamp))
                ids[stream.decode()] = entries[-1][0]
    except EOFError:
        return
    finally:
        client.close()


SEGMENTS = ("ami_to_sink", "sink_to_publish", "publish_to_read", "publish_call")


@dataclass
class PhaseRun:
    """One phase (a target at a rate, one round): raw samples and counters."""

    rate: int
    target: str  # floor | cti
    calls: int  # calls started, warm-up and tail included
    events: int  # AMI events the sender wrote
    ringing: int  # AgentCalled written inside the measured window
    latencies: list[float]  # of those the reader saw
    segments: dict[str, list[float]]
    taken_in: int  # AMI events the client read
    span_s: float  # first write -> pipeline drained
    cpu_s: float
    redis_cpu_s: float | None
    sender_cpu_s: float
    reader_cpu_s: float
    lag_p99_ms: float
    buffered_writes: int
    published: int  # cti: events published (all kinds)
    problems: dict[str, Any]  # cti: the call model's nonzero trouble counters


@dataclass
class PhaseResult:
    """A target at a rate, every round merged (percentiles over all samples)."""

    rate: int
    target: str
    rounds: int
    calls: int
    events: int
    ringing: int
    read: int
    events_per_s: float  # AMI events the pipeline took in, per second
    pipeline_cpu_pct: float  # this process, % of one core, first write -> drained
    redis_cpu_pct: float | None  # every redis-server of the machine
    sender_cpu_pct: float
    reader_cpu_pct: float
    latency_ms: dict[str, float | None]
    segments_ms: dict[str, dict[str, float | None]]
    send_lag_p99_ms: float  # the worst round's
    buffered_writes: int
    published: int
    model_problems: dict[str, Any]


async def run_phase(
    index: int,
    rate: int,
    target: str,
    options: Options,
    sender: Child,
    reader: Child,
    port: int,
) -> PhaseRun:
    duration = options.duration_s / options.rounds
    spec = PhaseSpec(f"p{index}", rate, options.warmup_s, duration, TAIL_S)
    prepared = await sender.ask("prepare", spec, timeout_s=120)
    client = redis_client(options.redis_url)
    stamps = Stamps()
    pipeline: Pipeline = (
        CtiPipeline(client, port, stamps)
        if target == "cti"
        else FloorPipeline(client, port, stamps)
    )
    reader_cpu = 0.0

    async def flush() -> list[tuple[str, float]]:
        nonlocal reader_cpu
        records, used = await reader.ask("flush")
        reader_cpu += used
        return records

    try:
        await pipeline.start()
        await reader.ask("flush")  # forget entries of earlier phases
        gc.collect()
        events_before = pipeline.ami.stats.events
        cpu = time.process_time()
        redis_before = redis_cpu_s()
        started = now()
        done = await sender.ask("go", timeout_s=options.warmup_s + duration + TAIL_S + 60)
        await poll_until(
            lambda: (
                pipeline.ami.stats.events - events_before >= done["events"] and not pipeline.backlog
            ),
            DRAIN_TIMEOUT_S,
        )
        span = now() - started
        cpu = time.process_time() - cpu
        redis_after = redis_cpu_s()
        taken_in = pipeline.ami.stats.events - events_before
        wanted = {channel: stamp for channel, stamp, measured in done["sent"] if measured}
        seen = await collect(flush, wanted, COLLECT_TIMEOUT_S)
        published = pipeline.publisher.published if isinstance(pipeline, CtiPipeline) else 0
        problems = pipeline.problems()
    finally:
        await pipeline.close()
        await client.aclose()
    latencies: list[float] = []
    segments: dict[str, list[float]] = {name: [] for name in SEGMENTS}
    for channel, sent_at in wanted.items():
        read_at = seen.get(channel)
        if read_at is None:
            continue
        latencies.append(read_at - sent_at)
        applied = stamps.apply.get(channel)
        published_at = stamps.publish.get(channel)
        if applied is None or published_at is None:
            continue
        segments["ami_to_sink"].append(applied - sent_at)
        segments["sink_to_publish"].append(published_at[0] - applied)
        segments["publish_to_read"].append(read_at - published_at[0])
        segments["publish_call"].append(published_at[1] - published_at[0])
    return PhaseRun(
        rate=rate,
        target=target,
        calls=prepared["calls"],
        events=done["events"],
        ringing=len(wanted),
        latencies=latencies,
        segments=segments,
        taken_in=taken_in,
        span_s=span,
        cpu_s=cpu,
        redis_cpu_s=(
            None if redis_before is None or redis_after is None else redis_after - redis_before
        ),
        sender_cpu_s=done["cpu_s"],
        reader_cpu_s=reader_cpu,
        lag_p99_ms=done["lag_p99_ms"],
        buffered_writes=done["buffered_writes"],
        published=published,
        problems=problems,
    )


def aggregate(runs: Sequence[PhaseRun]) -> PhaseResult:
    span = sum(run.span_s for run in runs)
    redis_cpu = [run.redis_cpu_s for run in runs]

    def pct(seconds: float) -> float:
        return round(100 * seconds / span, 1)

    return PhaseResult(
        rate=runs[0].rate,
        target=runs[0].target,
        rounds=len(runs),
        calls=sum(run.calls for run in runs),
        events=sum(run.events for run in runs),
        ringing=sum(run.ringing for run in runs),
        read=sum(len(run.latencies) for run in runs),
        events_per_s=round(sum(run.taken_in for run in runs) / span, 1),
        pipeline_cpu_pct=pct(sum(run.cpu_s for run in runs)),
        redis_cpu_pct=None if None in redis_cpu else pct(sum(filter(None, redis_cpu))),
        sender_cpu_pct=pct(sum(run.sender_cpu_s for run in runs)),
        reader_cpu_pct=pct(sum(run.reader_cpu_s for run in runs)),
        latency_ms=summary_ms([x for run in runs for x in run.latencies]),
        segments_ms={
            name: summary_ms([x for run in runs for x in run.segments[name]]) for name in SEGMENTS
        },
        send_lag_p99_ms=round(max(run.lag_p99_ms for run in runs), 3),
        buffered_writes=sum(run.buffered_writes for run in runs),
        published=sum(run.published for run in runs),
        model_problems=merge_problems(run.problems for run in runs),
    )


async def run_bench(options: Options) -> dict[str, Any]:
    configure_logging("console", "warning")  # as the route bench runs the daemon
    agents = watched_agents()
    streams = [agent_stream(a) for a in agents] + [FLOOR_PREFIX + a for a in agents]
    await flush_redis(options.redis_url)
    meta = run_meta(options, agents=agents)
    sender = Child("sender", sender_main, options.max_gap_s)
    reader = Child("reader", reader_main, options.redis_url, streams)
    phases: list[PhaseResult] = []
    try:
        port = await sender.receive(30)
        await reader.receive(30)
        index = 0
        for rate in options.rates:
            runs: dict[str, list[PhaseRun]] = {"floor": [], "cti": []}
            for round_ in range(options.rounds):
                for target in round_targets(round_):
                    progress(f"{rate} calls/s, {target}, round {round_ + 1} ...")
                    run = await run_phase(index, rate, target, options, sender, reader, port)
                    lat = summary_ms(list(run.latencies))
                    progress(
                        f"  {len(run.latencies)}/{run.ringing} ringing, p50 {lat['p50']} ms,"
                        f" p99 {lat['p99']} ms, {run.taken_in / run.span_s:,.0f} events/s"
                    )
                    runs[target].append(run)
                    index += 1
            phases += [aggregate(runs["floor"]), aggregate(runs["cti"])]
    finally:
        sender.stop()
        reader.stop()
        with contextlib.suppress(RedisError, OSError):
            await flush_redis(options.redis_url)
    meta["loadavg_end"] = os.getloadavg()[0]
    ratios = []
    for rate in options.rates:
        floor = next(p for p in phases if p.rate == rate and p.target == "floor")
        cti = next(p for p in phases if p.rate == rate and p.target == "cti")
        ratios.append(
            {
                "rate": rate,
                "p50": ratio(cti.latency_ms["p50"], floor.latency_ms["p50"]),
                "p99": ratio(cti.latency_ms["p99"], floor.latency_ms["p99"]),
            }
        )
    return {"meta": meta, "phases": [asdict(p) for p in phases], "ratios": ratios}


# -- output ------------------------------------------------------------------------------
def render(report: dict[str, Any]) -> str:
    meta, opts = report["meta"], report["meta"]["options"]
    out = [
        f"ringing latency {meta['started_at']}  {meta['cpus']} CPUs  python {meta['python']}"
        f" ({meta['loop']})  load avg {meta['loadavg_start']:.2f} -> {meta['loadavg_end']:.2f}",
        f"{opts['duration_s']:g} s measured per row in {opts['rounds']} round(s), each after"
        f" {opts['warmup_s']:g} s of calls;"
        f" pauses in calls cut to {opts['max_gap_s']:g} s;"
        " latency = AgentCalled written -> ringing readable (XREAD, other process)",
        "",
        f"{'rate':>6} {'target':<6} {'ringing':>8} {'lost':>5} {'events/s':>9}"
        f" {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'cpu':>5} {'redis':>5} {'send lag':>8}",
    ]
    for p in report["phases"]:
        lat = p["latency_ms"]
        out.append(
            f"{p['rate']:>4}/s {p['target']:<6} {p['ringing']:>8}"
            f" {p['ringing'] - p['read']:>5} {p['events_per_s']:>9,.0f}"
            f" {fmt(lat['p50'], '.2f'):>7} {fmt(lat['p99'], '.2f'):>7}"
            f" {fmt(lat['max'], '.2f'):>7} {p['pipeline_cpu_pct']:>4.0f}%"
            f" {fmt(p['redis_cpu_pct'], '.0f') + '%':>5}"
            f" {p['send_lag_p99_ms']:>6.1f}ms"
        )
    out += [
        "  (cpu: the pipeline's process, redis: redis-server, % of one core; send lag: p99 of"
        " the sender's writes behind schedule)",
        "",
        f"{'cti / floor':>11} {'p50':>6} {'p99':>6}",
    ]
    for r in report["ratios"]:
        out.append(
            f"{str(r['rate']) + '/s':>11} {fmt(r['p50'], '.2f') + 'x':>6}"
            f" {fmt(r['p99'], '.2f') + 'x':>6}"
        )
    out += [
        "",
        "where the time goes, p50 / p99 ms (ami->sink: socket, parse, client queue;"
        " sink->pub: model, tracker, Outbox wake-up;",
        " pub->read: publish call -> readable by the reader; pub call: publish_many's duration)",
        f"{'rate':>6} {'target':<6} {'ami->sink':>14} {'sink->pub':>14} {'pub->read':>14}"
        f" {'pub call':>14}",
    ]
    for p in report["phases"]:
        cells = [
            f"{fmt(s['p50'], '.2f')} / {fmt(s['p99'], '.2f')}" for s in p["segments_ms"].values()
        ]
        out.append(f"{p['rate']:>4}/s {p['target']:<6} " + " ".join(f"{c:>14}" for c in cells))
    notes = []
    for p in report["phases"]:
        if p["read"] < p["ringing"]:
            notes.append(
                f"note: {p['rate']}/s {p['target']}: {p['ringing'] - p['read']} ringing never read"
            )
        if p["buffered_writes"]:
            notes.append(
                f"note: {p['rate']}/s {p['target']}: the socket backed up"
                f" {p['buffered_writes']} times (the pipeline fell behind)"
            )
        if p["model_problems"]:
            notes.append(
                f"note: {p['rate']}/s {p['target']}: the call model could not place every"
                f" event: {p['model_problems']}"
            )
    if notes:
        out += ["", *notes]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_options(argv)
    return run_main("ringing_latency", lambda: run_bench(options), render, options.json_path)


if __name__ == "__main__":
    sys.exit(main())
