"""The standby's memory over an hour of call events, simulated in seconds.

    .venv/bin/python -m bench.standby_memory                  # an hour at 30 calls/s
    .venv/bin/python -m bench.standby_memory --rate 100 --minutes 10
    .venv/bin/python -m bench.standby_memory --leader --rate 100 --minutes 10

``--leader``: the leader's window of what it published lately instead
(:class:`cti.calls.recent.RecentlyPublished`, the outbox's ``recent``, kept to publish
again what a failover loses): fed as the outbox feeds it, each event once published.

A standby instance hands every call event to :meth:`cti.calls.leadership.Leadership.take`
and keeps it in its window for a takeover. What that window holds after an hour decides
the standby's memory. Nobody waits an hour: the leadership gets an injected clock and
the hour's events are fed as fast as the process can take them, one call after another
at ``--rate`` calls per simulated second, each ``take`` seeing the simulated time.

The events are the real tracker's: every AMI capture of tests/fixtures/ami is played
once through :class:`~cti.calls.model.CallModel` and :class:`~cti.calls.tracker.CallTracker`
(queued, ringing, connected, transferred, ended, ...: 5 to 15 per call) and each
simulated call is a copy of one capture's events (cycling through them) with ids of its
own (call id, Linkedid, fingerprint, channel), so every held event is an object of its
own of the real size. A whole call's events are handed over at its start second.

At simulated minutes 1, 2, 3 and every tenth (2, 10, 30 and 60 among them) it samples
the events held (``standby_backlog``) and the bytes allocated since the feed began
(tracemalloc: what the window, and anything else the feed leaves behind, holds).
"Flat after two minutes" means the minute-60 bytes are about the minute-2 bytes (the
window is 120 s). No Redis is touched (the lease and the outbox do not run).
bench/attack_bench.py runs it as its last scenario.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import sys
import time
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from cti.calls.events import CallEvent
from cti.calls.leadership import Leadership
from cti.calls.model import CallModel
from cti.calls.publisher import EventPublisher
from cti.calls.tracker import CallTracker
from tests.unit import ami_replay


def sample_minutes(minutes: int) -> list[int]:
    """Minutes 1, 2, 3, every tenth and the last: 2, 10, 30 and 60 of an hour among them."""
    return [m for m in range(1, minutes + 1) if m <= 3 or m % 10 == 0 or m == minutes]


#: Never connected: a standby does not write to Redis (the client is built, not used).
UNUSED_REDIS_URL = "redis://127.0.0.1:6379/0"
_CALL_ID = re.compile(rb"CTI_CALL_ID=([^\r\n]+)")


@dataclass(frozen=True, slots=True)
class Template:
    """One capture's call events, and how many calls it holds (interleaved_calls: 3)."""

    name: str
    events: tuple[CallEvent, ...]
    calls: int


def templates() -> list[Template]:
    """Every capture played once through the real call model and tracker."""
    found = []
    for name in ami_replay.fixture_names():
        data = ami_replay.load(name)
        events: list[CallEvent] = []
        tracker = CallTracker(CallModel(), handover=events.extend, clock=lambda: 0.0)
        for message in ami_replay.parse(data):
            tracker.apply(message)
        if events:
            calls = len(set(_CALL_ID.findall(data))) or 1
            found.append(Template(name, tuple(events), calls))
    return found


def _tagged(value: Any, tag: str) -> Any:
    return f"{value}{tag}" if isinstance(value, str) and value else value


def copy_call(template: Template, n: int, at: float) -> list[CallEvent]:
    """The template's events as call ``n``'s: new ids, new strings, a dict each."""
    tag = f"-{n:x}"
    copies = []
    for event in template.events:
        data = {key: _tagged(value, tag) for key, value in event.data.items()}
        copies.append(
            CallEvent(
                kind=event.kind,
                call_key=event.call_key + tag,
                call_id=_tagged(event.call_id, tag),
                linkedid=event.linkedid + tag,
                fingerprint=event.fingerprint + tag,
                at=at,
                agent=event.agent,
                data=data,
                recipients=event.recipients,
                to_call_agents=event.to_call_agents,
            )
        )
    return copies


class SimulatedClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def standby(clock: SimulatedClock) -> Leadership:
    """A standby as cti.app.following builds it (defaults: 120 s window), never leading."""
    client = aioredis.Redis.from_url(UNUSED_REDIS_URL)
    publisher = EventPublisher(client, ttl_s=3600)
    return Leadership(client, publisher, "bench-standby", clock=clock)


def run(rate: int, minutes: int, *, leader: bool = False) -> dict[str, Any]:
    """Feed ``minutes`` simulated minutes of events at ``rate`` calls/s; sample as we go.
    ``leader``: into the leader's recently published window instead of the standby's."""
    shapes = templates()
    wanted = sample_minutes(minutes)
    clock = SimulatedClock(1_900_000_000.0)
    start = clock.now
    gc.collect()
    tracemalloc.start()
    leadership = standby(clock)
    recent = leadership.outbox.recent

    def feed(event: CallEvent) -> None:
        if leader:  # as the outbox does once a batch is acknowledged
            recent.add(clock.now, (event,))
        else:  # one AMI message's worth, as the tracker does
            leadership.take((event,))

    def held() -> int:
        return len(recent) if leader else leadership.standby_backlog

    base = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    calls = events = 0
    shape = 0
    for second in range(minutes * 60):
        clock.now = start + second
        placed = 0
        while placed < rate:
            template = shapes[shape % len(shapes)]
            shape += 1
            for event in copy_call(template, calls, clock.now):
                feed(event)
                events += 1
            calls += template.calls
            placed += template.calls
        if wanted and second + 1 == wanted[0] * 60:
            wanted.pop(0)
            gc.collect()
            rows.append(
                {
                    "minute": (second + 1) // 60,
                    "calls": calls,
                    "events_fed": events,
                    "events_held": held(),
                    "bytes": tracemalloc.get_traced_memory()[0] - base,
                }
            )
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    first, last = next(r for r in rows if r["minute"] >= 2), rows[-1]
    return {
        "window": "leader's published" if leader else "standby",
        "bytes_per_event_held": round(last["bytes"] / last["events_held"])
        if last["events_held"]
        else None,
        "rate": rate,
        "minutes": minutes,
        "captures": [t.name for t in shapes],
        "events_per_call": round(events / max(calls, 1), 2),
        "samples": rows,
        "peak_bytes": peak,
        "growth_after_first_sample": round(last["bytes"] / first["bytes"], 2)
        if first["bytes"]
        else None,
        "wall_s": round(time.perf_counter() - started, 1),
    }


def render(result: dict[str, Any]) -> str:
    lines = [
        f"{result.get('window', 'standby')} window, {result['rate']} calls/s"
        f" for {result['minutes']} simulated minutes"
        f" ({result['events_per_call']} events per call, fed in {result['wall_s']} s)",
        f"  {'minute':>6} {'calls':>9} {'events fed':>11} {'held':>9} {'MB':>8}",
    ]
    for row in result["samples"]:
        lines.append(
            f"  {row['minute']:>6} {row['calls']:>9,} {row['events_fed']:>11,}"
            f" {row['events_held']:>9,} {row['bytes'] / 1e6:>8.1f}"
        )
    growth = result["growth_after_first_sample"]
    lines.append(
        f"  bytes at the last sample / at minute 2: {'-' if growth is None else f'{growth:.2f}x'}"
        f" (flat: about 1.0); {result.get('bytes_per_event_held') or '-'} B per event held"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=30, help="calls per simulated second (30)")
    parser.add_argument("--minutes", type=int, default=60, help="simulated minutes (60)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--leader", action="store_true", help="the leader's recently published window"
    )
    args = parser.parse_args(argv)
    if args.rate < 1 or args.minutes < 2:
        parser.error("--rate >= 1 and --minutes >= 2")
    result = run(args.rate, args.minutes, leader=args.leader)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
