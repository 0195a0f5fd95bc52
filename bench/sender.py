"""The fake Asterisk of the latency benchmarks: recorded calls played on a schedule.

A sender process (``run_sender``) holds a tests/fakes/ami_server.FakeAmi and, on the
parent's ``prepare`` and ``go``, plays a :class:`Schedule`: copies of the recorded
calls of tests/fixtures/ami, each renamed (tests/unit/ami_replay.Renamer), starting at
a steady rate, every event at its recorded offset with pauses cut to ``max_gap_s``.
Every write holding an ``AgentCalled`` is stamped just before ``write()``: the start of
every latency the benches measure. Which calls are played is each bench's choice (the
``build`` function it hands to ``run_sender``).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from bench.harness import AMI_SECRET, AMI_USER, child_process, now, percentile
from tests.fakes.ami_server import FakeAmi
from tests.unit import ami_replay


@dataclass(frozen=True)
class PhaseSpec:
    tag: str  # unique per phase: every channel of the phase carries it
    rate: int  # calls started per second
    warmup_s: float
    duration_s: float
    tail_s: float


def event_blocks(data: bytes) -> list[bytes]:
    """A capture's event blocks but FullyBooted (the recording's login, no part of a call)."""
    _, blocks = ami_replay.split_blocks(data)
    return [
        block
        for block in blocks
        if ami_replay.is_event_block(block) and not block.startswith(b"Event: FullyBooted\r\n")
    ]


@dataclass
class Capture:
    """One recording: its event blocks (renamable), their offsets in seconds from the
    first one, and how many customer calls it holds (distinct CTI_CALL_IDs, at least 1:
    interleaved_calls has 3)."""

    name: str
    renamer: ami_replay.Renamer
    offsets: list[float]
    calls: int


def load_captures(max_gap_s: float) -> list[Capture]:
    """Every fixture's event blocks at their recorded offsets, except that no pause is
    longer than ``max_gap_s`` (a block without a Timestamp goes with its predecessor)."""
    captures = []
    for name in ami_replay.fixture_names():
        data = ami_replay.load(name)
        events = event_blocks(data)
        stamps = [ami_replay.block_timestamp(block) for block in events]
        first = next((stamp for stamp in stamps if stamp is not None), 0.0)
        offsets, offset, previous = [], 0.0, first
        for stamp in stamps:
            if stamp is not None and stamp > previous:
                offset += min(stamp - previous, max_gap_s)
                previous = stamp
            offsets.append(offset)
        calls = len(set(re.findall(rb"CTI_CALL_ID=([^\r\n]+)", data))) or 1
        captures.append(Capture(name, ami_replay.Renamer(events), offsets, calls))
    return captures


def dest_channel(block: bytes) -> str | None:
    """The DestChannel of an AgentCalled block, else None."""
    if not block.startswith(b"Event: AgentCalled\r\n"):
        return None
    start = block.index(b"\r\nDestChannel: ") + len(b"\r\nDestChannel: ")
    return block[start : block.index(b"\r\n", start)].decode()


@dataclass
class Schedule:
    dues: list[float]  # seconds from the start of the phase
    blocks: list[bytes]
    channels: list[str | None]  # the AgentCalled's DestChannel
    calls: int
    window: tuple[float, float]  # AgentCalled due inside it are measured


def build_schedule(spec: PhaseSpec, copy_of: Callable[[int], Capture]) -> Schedule:
    """Copy k of the calls is ``copy_of(k)``, renamed ``<tag>c<k>x``; each copy starts
    when the calls before it, at ``spec.rate`` calls per second, are done starting."""
    window = (spec.warmup_s, spec.warmup_s + spec.duration_s)
    end = window[1] + spec.tail_s
    items: list[tuple[float, int, int, bytes]] = []
    start = 0.0
    copy = calls = 0
    while start < end:
        capture = copy_of(copy)
        blocks = ami_replay.split_blocks(capture.renamer.render(f"{spec.tag}c{copy}x"))[1]
        for position, (block, offset) in enumerate(zip(blocks, capture.offsets, strict=True)):
            due = start + offset
            if due >= end:
                break
            items.append((due, copy, position, block))
        calls += capture.calls
        copy += 1
        start = calls / spec.rate
    items.sort(key=lambda item: item[:3])
    blocks = [item[3] for item in items]
    return Schedule(
        dues=[item[0] for item in items],
        blocks=blocks,
        channels=[dest_channel(block) for block in blocks],
        calls=calls,
        window=window,
    )


async def play(fake: FakeAmi, schedule: Schedule) -> dict[str, Any]:
    """Write every block when due, all due blocks in one write; stamp AgentCalled writes."""
    sessions = fake.live
    if len(sessions) != 1:
        raise RuntimeError(f"expected one AMI session, found {len(sessions)}")
    writer = sessions[0].writer
    transport = writer.transport
    dues, blocks, channels = schedule.dues, schedule.blocks, schedule.channels
    low, high = schedule.window
    sent: list[tuple[str, float, bool]] = []
    lags: list[float] = []
    buffered = writes = size = 0
    total = len(dues)
    cpu = time.process_time()
    start = now() + 0.02
    i = 0
    while i < total:
        delay = start + dues[i] - now()
        if delay > 0:
            await asyncio.sleep(delay)
        due_by = now() - start
        j = i
        while j < total and dues[j] <= due_by:
            j += 1
        data = b"".join(blocks[i:j])
        # Stamped before: the woken reader of the socket may preempt us in write().
        stamp = now()
        writer.write(data)
        writes += 1
        size += len(data)
        lags.append(due_by - dues[i])
        for k in range(i, j):
            channel = channels[k]
            if channel is not None:
                sent.append((channel, stamp, low <= dues[k] < high))
        i = j
        if transport.get_write_buffer_size():
            buffered += 1  # the pipeline did not keep up with the socket
            await writer.drain()
    await writer.drain()
    lags.sort()
    return {
        "sent": sent,
        "events": total,
        "bytes": size,
        "writes": writes,
        "buffered_writes": buffered,
        "lag_p99_ms": 1000 * percentile(lags, 0.99),
        "lag_max_ms": 1000 * lags[-1],
        "span_s": now() - start,
        "cpu_s": time.process_time() - cpu,
    }


def run_sender(conn: Connection, make_build: Callable[[], Callable[[Any], Schedule]]) -> None:
    """The fake Asterisk's process: prepare / go / stop commands over ``conn``.
    ``make_build()`` (called in this process) gives the function that turns a
    ``prepare`` argument into a :class:`Schedule`; every benchmark shares the rest."""
    build = make_build()
    child_process(lambda c: _serve_schedules(c, build), conn)


async def _serve_schedules(conn: Connection, build: Callable[[Any], Schedule]) -> None:
    fake = await FakeAmi(username=AMI_USER, secret=AMI_SECRET).start()
    conn.send(("ready", fake.port))
    schedule: Schedule | None = None
    try:
        while True:
            try:
                command, arg = await asyncio.to_thread(conn.recv)
            except EOFError:
                return
            if command == "prepare":
                schedule = build(arg)
                conn.send(("prepared", {"events": len(schedule.dues), "calls": schedule.calls}))
            elif command == "go" and schedule is not None:
                try:
                    conn.send(("done", await play(fake, schedule)))
                except (RuntimeError, OSError) as exc:
                    conn.send(("error", f"{type(exc).__name__}: {exc}"))
                schedule = None
            else:
                return
    finally:
        await fake.close()
