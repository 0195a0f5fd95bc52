"""What an hour of call events costs in Redis (the streams' retention, README).

    .venv/bin/python -m bench.stream_memory --redis-url redis://127.0.0.1:6379/2
    .venv/bin/python -m bench.stream_memory --calls 50000 --agents 500 --rate 100

Publishes ``--calls`` copies of a recorded answered call (tests/fixtures/ami:
queued, ringing, connected, left, ended) through the real :class:`EventPublisher`,
each copy its own call id and one of ``--agents`` agents, into an empty Redis database,
and reads ``MEMORY USAGE`` of every key it made: the supervisors' stream, the agents'
streams, and the per-call sets (fingerprints seen, agents on the call). Bytes per call
times ``--rate`` × retention is what the streams hold in steady state; the per-call sets
live as long as the call data (``CTI_CALL_DATA_TTL_S``), so they are reported apart.

Refuses Redis db 0, and flushes the database it is given.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from urllib.parse import urlsplit

import redis.asyncio as aioredis

from cti.calls.events import CallEvent, to_events
from cti.calls.lease import LEASE_KEY
from cti.calls.publisher import AGENT_STREAM_PREFIX, ALL_EVENTS_STREAM, EventPublisher
from tests.unit.ami_replay import replay_fixture

AGENT = "PJSIP/2001"


def call_events(template: list[CallEvent], n: int, agents: int) -> list[CallEvent]:
    """The template call as call number ``n``: its own ids, one of ``agents`` agents."""
    call_id = f"{n:08x}-0000-4000-8000-000000000000"
    agent = f"PJSIP/{3000 + n % agents}"

    def device(name: str | None) -> str | None:
        return agent if name == AGENT else name

    out = []
    for event in template:
        data = dict(event.data)
        if "agents" in data:
            data["agents"] = [device(a) for a in data["agents"]]
        out.append(
            dataclasses.replace(
                event,
                call_key=call_id,
                call_id=call_id,
                linkedid=f"{n}.1",
                fingerprint=f"{event.fingerprint}|{n}",
                agent=device(event.agent),
                recipients=tuple(str(device(r)) for r in event.recipients),
                data=data,
            )
        )
    return out


async def key_bytes(client: aioredis.Redis, pattern: str) -> tuple[int, int]:
    """(keys, bytes) of the keys matching ``pattern``."""
    count = total = 0
    async for key in client.scan_iter(match=pattern, count=1000):
        count += 1
        total += int(await client.memory_usage(key, samples=0) or 0)
    return count, total


async def main(args: argparse.Namespace) -> int:
    if urlsplit(args.redis_url).path in ("", "/", "/0"):
        print("stream_memory: refusing Redis db 0 (it flushes the database)", file=sys.stderr)
        return 2
    template = [
        e for effect in replay_fixture("answered_call").effects for e in to_events(effect, 0)
    ]
    client = aioredis.Redis.from_url(args.redis_url)
    await client.flushdb()
    await client.set(LEASE_KEY, "bench")
    publisher = EventPublisher(client, ttl_s=86_400, retention_s=86_400)
    for start in range(0, args.calls, 500):
        batch = [
            e
            for n in range(start, min(start + 500, args.calls))
            for e in call_events(template, n, args.agents)
        ]
        await publisher.publish_many(batch, "bench")
    events, (_, all_bytes) = (
        await client.xlen(ALL_EVENTS_STREAM),
        await key_bytes(client, ALL_EVENTS_STREAM),
    )
    agent_keys, agent_bytes = await key_bytes(client, AGENT_STREAM_PREFIX + "*")
    set_keys, set_bytes = await key_bytes(client, "cti:callev:*")
    await client.flushdb()
    await client.aclose()
    per_call = (all_bytes + agent_bytes) / args.calls
    hour_calls = args.rate * 3600
    mb = 1_000_000
    print(f"calls {args.calls}, events per call {events / args.calls:.1f}, agents {agent_keys}")
    print(f"cti:events {all_bytes / mb:.1f} MB ({all_bytes / events:.0f} B/entry)")
    print(f"agent streams {agent_bytes / mb:.1f} MB")
    print(f"streams per call {per_call:.0f} B")
    print(f"per-call sets {set_bytes / args.calls:.0f} B/call ({set_keys} keys)")
    hour_mb = per_call * hour_calls / mb
    print(f"an hour at {args.rate} calls/s ({hour_calls} calls): streams {hour_mb:.0f} MB")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--agents", type=int, default=500)
    parser.add_argument("--rate", type=int, default=100, help="calls per second to extrapolate to")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
