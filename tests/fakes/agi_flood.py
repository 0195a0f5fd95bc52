"""A hostile peer, run as its own process: many connections that each send one header
line (FastAGI's, or with ``--http`` an HTTP request's first lines), wait for the server
to close them, and come back. ``--source`` may name several local addresses (comma-
separated): the workers take them in turn, as several hosts would.

Against a server without admission control each connection holds a slot until the
header deadline; 1,100 of them fill a 1,000-slot server and real calls are refused.
Bounded in connections per worker and in time, so a test that uses it always ends.
Prints its counts as one JSON line on stdout when done.

    python -m tests.fakes.agi_flood PORT [--source 127.0.0.2,127.0.0.3] [--http] ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter

LINE = b"agi_network: yes\n"
HTTP_LINES = b"GET /healthz HTTP/1.1\r\nHost: x\r\n"  # and never the blank line


async def _worker(args: argparse.Namespace, source: str, counts: Counter[str]) -> None:
    for round_ in range(args.rounds):
        try:
            reader, writer = await asyncio.open_connection(
                args.host, args.port, local_addr=(source, 0)
            )
        except OSError:
            counts["connect_failed"] += 1
            if round_ == 0:
                _first_try_done(args, counts)
            await asyncio.sleep(args.pause_s)
            continue
        counts["connections"] += 1
        try:
            writer.write(HTTP_LINES if args.http else LINE)
            await writer.drain()
            if round_ == 0:
                _first_try_done(args, counts)
            await reader.read()  # until the server closes: at once, or at its header deadline
        except OSError:
            counts["reset"] += 1
            if round_ == 0:
                _first_try_done(args, counts)
        finally:
            writer.close()
        await asyncio.sleep(args.pause_s)


def _first_try_done(args: argparse.Namespace, counts: Counter[str]) -> None:
    """Once every worker has made its first try (and, against a server without a
    deadline, holds its connection), one line on stdout: the flood is at full strength."""
    counts["first_try"] += 1
    if counts["first_try"] == args.workers:
        print(json.dumps({"connected": counts["connections"]}), flush=True)


async def flood(args: argparse.Namespace) -> Counter[str]:
    counts: Counter[str] = Counter()
    sources = args.source.split(",")
    workers = [
        asyncio.create_task(_worker(args, sources[i % len(sources)], counts))
        for i in range(args.workers)
    ]
    try:
        async with asyncio.timeout(args.seconds):
            await asyncio.gather(*workers)
    except TimeoutError:
        counts["cut_at_deadline"] = 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--source", default="127.0.0.2")
    parser.add_argument("--http", action="store_true", help="an HTTP request's first lines")
    parser.add_argument("--workers", type=int, default=1100)
    parser.add_argument("--rounds", type=int, default=10, help="connections per worker")
    parser.add_argument("--pause-s", type=float, default=0.2)
    parser.add_argument("--seconds", type=float, default=30)
    print(json.dumps(asyncio.run(flood(parser.parse_args()))), flush=True)


if __name__ == "__main__":
    main()
