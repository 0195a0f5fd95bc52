"""The standby's memory over an hour of call events (issue 9: flat after two minutes).

    .venv/bin/python -m bench.standby_memory                  # an hour at 30 calls/s
    .venv/bin/python -m bench.standby_memory --rate 100 --minutes 10

A :class:`Leadership` that never leads is handed a recorded answered call's events
(tests/fixtures/ami, five events a call, each call its own ids) at ``--rate`` calls a
second of an injected clock, so an hour takes seconds; ``tracemalloc`` reports what the
Python heap holds at each minute mark, with the events the window holds. No Redis is
touched (the lease and the outbox do not run).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tracemalloc

import redis.asyncio as aioredis

from cti.calls.events import CallEvent, to_events
from cti.calls.leadership import Leadership
from cti.calls.publisher import EventPublisher
from tests.unit.ami_replay import replay_fixture


def main(args: argparse.Namespace) -> int:
    template = [e for f in replay_fixture("answered_call").effects for e in to_events(f, 0)]
    now = [1_800_000_000.0]
    unconnected = aioredis.Redis()  # never used: no lease or outbox task runs here
    standby = Leadership(
        unconnected, EventPublisher(unconnected, ttl_s=600), "bench", clock=lambda: now[0]
    )
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    n = 0
    print("minute  events held  heap MB")
    for minute in range(1, args.minutes + 1):
        for _second in range(60):
            batch: list[CallEvent] = []
            for _ in range(args.rate):
                batch.extend(
                    dataclasses.replace(
                        e, call_key=f"c{n}", call_id=f"c{n}", fingerprint=f"{n}", data=dict(e.data)
                    )
                    for e in template
                )
                n += 1
            standby.take(batch)
            now[0] += 1
        if minute <= 3 or minute % 10 == 0 or minute == args.minutes:
            held = standby.standby_backlog
            heap = (tracemalloc.get_traced_memory()[0] - base) / 1_000_000
            print(f"{minute:6d}  {held:11d}  {heap:7.1f}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rate", type=int, default=30, help="calls per second")
    parser.add_argument("--minutes", type=int, default=60)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
