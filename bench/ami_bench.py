"""AMI throughput: our parser, our parser + call model, and panoramisk's parser.

    .venv/bin/python -m bench.ami_bench                 # ~200k events, 5 repeats
    .venv/bin/python -m bench.ami_bench --events 50000 --repeats 3

Traffic: every capture in tests/fixtures/ami (raw AMI from the Asterisk 22.10.1 test
bed), replicated with renamed ids (tests/unit/ami_replay.Renamer: new Uniqueids,
Linkedids, channel names, bridge ids and CTI_CALL_IDs per copy, same agents and queues)
until the stream holds about ``--events`` messages. Copies are interleaved message by
message in groups of ``--concurrency`` copies of every capture, so that many calls are in
flight at once, as on a busy Asterisk. The stream is cut into ``--chunk``-byte reads (a
socket read's size) and fed, in one process, on one core:

* ``ours: parse``      cti.ami.protocol.AmiParser.feed
* ``ours: parse+model`` the same, then cti.calls.CallModel.apply for every message
* ``panoramisk: parse`` panoramisk.ami_protocol.AMIProtocol.data_received with a fake
  transport and a factory whose ``dispatch`` only counts: panoramisk's own decode,
  split and ``Message.from_line``, i.e. all of its parsing and none of our code.

Each is timed ``--repeats`` times; the median is reported as the stream's events per
second (``out`` is what each returned: our parser also returns responses and the
greeting, panoramisk dispatches events only), with its ratio to panoramisk. Target
(issue 4): parse+model above 50,000 events/s. Exit 0; with ``--strict``, 1 when the
target is missed; 2 when the bench cannot run.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from cti.ami.protocol import AmiParser
from cti.calls.model import CallModel
from tests.unit import ami_replay

TARGET_EVENTS_PER_S = 50_000
GREETING = b"Asterisk Call Manager/11.0.0\r\n"


def build_stream(target: int, concurrency: int) -> tuple[bytes, int, int]:
    """(bytes, messages, copies): renamed copies of every capture, interleaved."""
    renamers = []
    per_copy = 0
    for name in ami_replay.fixture_names():
        _, blocks = ami_replay.split_blocks(ami_replay.load(name))
        renamers.append(ami_replay.Renamer(blocks))  # responses too: Login, Logoff
        per_copy += len(blocks)
    copies = max(1, -(-target // per_copy))
    parts = [GREETING]
    messages = 0
    done = 0
    group = 0
    while done < copies:
        n = min(concurrency, copies - done)
        streams = []
        for copy in range(n):
            for index, renamer in enumerate(renamers):
                tag = f"g{group}c{copy}f{index}x"
                streams.append(ami_replay.split_blocks(renamer.render(tag))[1])
        longest = max(map(len, streams))
        for position in range(longest):
            for stream in streams:
                if position < len(stream):
                    parts.append(stream[position])
                    messages += 1
        done += n
        group += 1
    return b"".join(parts), messages, copies


def chunks_of(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def run_ours_parse(chunks: list[bytes]) -> int:
    parser = AmiParser()
    count = 0
    for chunk in chunks:
        count += len(parser.feed(chunk))
    if parser.buffered:
        raise RuntimeError("parser left bytes over")
    return count


def run_ours_model(chunks: list[bytes]) -> int:
    parser = AmiParser()
    model = CallModel()
    apply = model.apply
    count = 0
    for chunk in chunks:
        for message in parser.feed(chunk):
            apply(message)
            count += 1
    stats = model.stats
    if model.size != (0, 0, 0) or stats.late_channels or stats.late_events or stats.unknown:
        raise RuntimeError(f"call model did not follow the traffic: {model.size} {stats}")
    return count


def make_panoramisk() -> Callable[[list[bytes]], int] | None:
    try:
        from panoramisk.ami_protocol import AMIProtocol
    except ImportError:
        return None

    class Transport:
        def write(self, data: bytes) -> None:
            pass

        def close(self) -> None:
            pass

    class Factory:
        def __init__(self) -> None:
            self.count = 0

        def dispatch(self, message: Any) -> None:
            self.count += 1

    def run(chunks: list[bytes]) -> int:
        protocol = AMIProtocol()
        protocol.connection_made(Transport())
        factory = Factory()
        protocol.factory = factory
        for chunk in chunks:
            protocol.data_received(chunk)
        return factory.count

    return run


def measure(
    run: Callable[[list[bytes]], int], chunks: list[bytes], repeats: int, events: int
) -> dict:
    """Median wall time of ``repeats`` runs; the rate is the stream's events per second
    (the same numerator for every contender: they all read the same bytes)."""
    times = []
    count = 0
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        count = run(chunks)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"messages": count, "median_s": median, "min_s": min(times), "rate": events / median}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="messages in the stream")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=65_536, help="bytes per read")
    parser.add_argument("--concurrency", type=int, default=50, help="copies interleaved")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target fails")
    args = parser.parse_args(argv)
    if args.events < 1 or args.repeats < 1 or args.chunk < 1 or args.concurrency < 1:
        print(
            "ami_bench: --events, --repeats, --chunk, --concurrency must be >= 1", file=sys.stderr
        )
        return 2

    print("building the stream ...", file=sys.stderr)
    data, messages, copies = build_stream(args.events, args.concurrency)
    events = data.count(b"\r\nEvent: ") + data.startswith(b"Event: ")
    chunks = chunks_of(data, args.chunk)
    print(
        f"stream: {len(data) / 1e6:.1f} MB, {messages} messages ({events} events), "
        f"{copies} copies of {len(ami_replay.fixture_names())} captures, "
        f"{args.concurrency} copies interleaved, {len(chunks)} reads of {args.chunk} B; "
        f"median of {args.repeats}; Python {platform.python_version()}",
    )

    runs: list[tuple[str, Callable[[list[bytes]], int]]] = [
        ("ours: parse", run_ours_parse),
        ("ours: parse+model", run_ours_model),
    ]
    panoramisk = make_panoramisk()
    if panoramisk is None:
        print("panoramisk is not installed (.venv/bin/pip install panoramisk): no baseline")
    else:
        runs.append(("panoramisk: parse", panoramisk))
    results = {}
    for label, run in runs:
        print(f"running {label} ...", file=sys.stderr)
        results[label] = measure(run, chunks, args.repeats, events)

    base = results.get("panoramisk: parse")
    print(f"{'':20} {'out':>9} {'median s':>9} {'events/s':>10} {'vs panoramisk':>14}")
    for label, result in results.items():
        ratio = f"{result['rate'] / base['rate']:.2f}x" if base else "n/a"
        print(
            f"{label:20} {result['messages']:>9} {result['median_s']:>9.3f} "
            f"{result['rate']:>10,.0f} {ratio:>14}"
        )
    if base and base["messages"] != events:
        print(f"note: panoramisk dispatched {base['messages']} events of {events}")
    model_rate = results["ours: parse+model"]["rate"]
    verdict = "PASS" if model_rate > TARGET_EVENTS_PER_S else "FAIL"
    print(f"target parse+model > {TARGET_EVENTS_PER_S:,} events/s: {verdict} ({model_rate:,.0f})")
    return 1 if args.strict and verdict == "FAIL" else 0


if __name__ == "__main__":
    sys.exit(main())
