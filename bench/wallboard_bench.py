"""Wallboard latency and cost: an AMI event → the changed figure in a wallboard frame.

    .venv/bin/python -m bench.wallboard_bench            # full run, about 3 minutes
    .venv/bin/python -m bench.wallboard_bench --quick    # smoke run, about 1 minute
    .venv/bin/python -m bench.wallboard_bench --rates 20,100 --viewers 1,50 --json

What issue 11 asks: from the fake Asterisk's write of a call's events to the wallboard
WebSocket frame that shows the change, p50/p99 at 20 and 100 calls/s with 1 and 50
wallboards open, next to the floor the pop benchmark uses; and the CPU of 50 wallboards
against one (target: p99 < 100 ms; 50 wallboards ≤ 1.1× the CPU of one).

Processes: the **sender** (bench/sender.py's fake Asterisk playing answered_call.txt,
its member renamed round-robin over 20 agents, its timestamps moved to now so that the
calls are today's); the **server**, which per phase runs either cti's pipeline
(bench.harness.CtiPipeline: the call model, the tracker, the lease and the publisher)
plus the wallboard engine (cti.wallboard.engine) on the leader, or the **floor**
(every AgentCalled ``XADD``-ed to ``cti:events`` inside the AMI sink, as bench.pop's
floor does, no model, no Lua), and in both the HTTP app (cti.screenpop.app.build_app)
with its wallboard relay and its sidebar WebSocket; the **client** (this process), N
WebSockets: ``/ws/wallboard`` for cti, a supervisor's ``/ws`` (the stream, one XREAD
per socket) for the floor, stamping every frame as the socket hands it over.

Latency, cti: the k-th ``QueueCallerJoin`` written → the first frame whose queue shows
``offered`` ≥ k (and likewise ``AgentConnect`` → ``answered``); floor: the k-th
``AgentCalled`` → the frame carrying it. One ``CLOCK_MONOTONIC`` for all processes.
Only events due inside the measured window count. CPU: the server process's CPU time
plus redis-server's over the window; the 50/1 ratio is of those.

Needs Redis on 127.0.0.1:6379 (db 12, ``--redis-url``; flushed before every phase) and
PostgreSQL on 127.0.0.1:5432 (``--pg-server``): a throwaway database with one supervisor
(the sockets' tokens are issued in-process), dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import secrets
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg

from bench.harness import (
    AMI_SECRET,
    AMI_USER,
    FILTERS,
    TAIL_S,
    BenchError,
    Child,
    CtiPipeline,
    Pipeline,
    Stamps,
    add_common_arguments,
    child_process,
    common_options,
    flush_redis,
    fmt,
    now,
    progress,
    redis_client,
    redis_cpu_s,
    run_main,
    run_meta,
    summary_ms,
)
from bench.pop_processes import AgentCalls, PopSpec, drop_database
from bench.sender import Schedule, run_sender
from cti.ami.client import AmiClient
from cti.ami.protocol import Message
from cti.calldata.service import CallDataService
from cti.calldata.store import CallDataStore
from cti.calls.publisher import ALL_EVENTS_STREAM, STREAM_RETENTION_S, EventPublisher
from cti.db.migrate import migrate
from cti.logs import configure_logging
from cti.screenpop.app import HttpServer, build_app
from cti.screenpop.auth import Sessions, hash_password
from cti.screenpop.context import WsLimits
from cti.screenpop.ws import reader_factory
from cti.wallboard.engine import WallboardEngine
from cti.wallboard.figures import Figures
from cti.wallboard.store import WallboardStore
from tests.unit import ami_replay

AGENTS = 20
SUPERVISOR = ("boss", "PJSIP/boss", "Boss", "supervisor")
JOIN, ANSWER = b"Event: QueueCallerJoin\r\n", b"Event: AgentConnect\r\n"
COLLECT_S = 3.0


# -- the sender: the pop bench's calls, stamped where this bench measures ------------------
def wallboard_schedule(calls: AgentCalls, spec: PopSpec) -> Schedule:
    """Copy k starts at k / rate; its timestamps moved to now; every QueueCallerJoin,
    AgentConnect and AgentCalled labelled (``join``, ``answer``, the DestChannel)."""
    window = (spec.warmup_s, spec.warmup_s + spec.duration_s)
    end = window[1] + spec.tail_s
    base = time.time() + 1.0  # about when the phase starts
    items: list[tuple[float, int, int, bytes]] = []
    copy = 0
    while (start := copy / spec.rate) < end:
        capture = calls.to(copy % spec.agents + 1)
        first = capture.renamer.render("x")  # the first timestamp, to shift from
        shift = base + start - (ami_replay.block_timestamp(_first_stamped(first)) or 0.0)
        blocks = ami_replay.split_blocks(capture.renamer.render(f"{spec.tag}c{copy}x", shift))[1]
        for position, (block, offset) in enumerate(zip(blocks, capture.offsets, strict=True)):
            if start + offset < end:
                items.append((start + offset, copy, position, block))
        copy += 1
    items.sort(key=lambda item: item[:3])
    blocks = [item[3] for item in items]
    return Schedule(
        dues=[item[0] for item in items],
        blocks=blocks,
        channels=[_label(block) for block in blocks],
        calls=copy,
        window=window,
    )


def _first_stamped(data: bytes) -> bytes:
    for block in ami_replay.split_blocks(data)[1]:
        if ami_replay.block_timestamp(block) is not None:
            return block
    return b""


def _label(block: bytes) -> str | None:
    if block.startswith(JOIN):
        return "join"
    if block.startswith(ANSWER):
        return "answer"
    if block.startswith(b"Event: AgentCalled\r\n"):
        start = block.index(b"\r\nDestChannel: ") + len(b"\r\nDestChannel: ")
        return block[start : block.index(b"\r\n", start)].decode()
    return None


def sender_main(conn: Connection, max_gap_s: float) -> None:
    def build() -> Any:
        calls = AgentCalls(max_gap_s)
        return lambda spec: wallboard_schedule(calls, spec)

    run_sender(conn, build)


# -- the server ----------------------------------------------------------------------------
class FloorAll(Pipeline):
    """The pop bench's floor, into the supervisors' stream: each AgentCalled ``XADD``-ed
    inside the AMI sink; the sidebar's WebSocket (one XREAD per socket) carries it."""

    def __init__(self, client: Any, port: int) -> None:
        super().__init__()
        self.up = False
        self._redis = client
        self.ami = AmiClient(
            "127.0.0.1",
            port,
            AMI_USER,
            AMI_SECRET,
            events_sink=self,
            id_prefix="floor",
            filters=FILTERS,
        )

    def reset(self) -> None:
        pass

    def connected(self, up: bool) -> None:
        self.up = up

    async def apply(self, msg: Message) -> None:
        if msg.name != "AgentCalled":
            return
        payload = json.dumps(
            {"event": "ringing", "channel": msg.fields.get("destchannel", "")},
            separators=(",", ":"),
        )
        min_id = f"{int((time.time() - STREAM_RETENTION_S) * 1000)}-0"  # as the publisher trims
        await self._redis.xadd(ALL_EVENTS_STREAM, {"e": payload}, minid=min_id, approximate=True)

    async def start(self) -> None:
        self._spawn(self.ami.run(self._stop), "ami")
        await self._until(lambda: self.up, "AMI not up")


def server_main(conn: Connection, ami_port: int, redis_url: str, db_url: str, key: str) -> None:
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 <pid>: where a stuck server is
    child_process(lambda c: _serve(c, ami_port, redis_url, db_url, key), conn)


async def _serve(conn: Connection, ami_port: int, redis_url: str, db_url: str, key: str) -> None:
    configure_logging("json", "warning")
    client = redis_client(redis_url)
    pool = await asyncpg.create_pool(db_url, min_size=0, max_size=2)
    store = CallDataStore(client, 60, pool=pool)
    app = build_app(
        pool=pool,
        redis_client=client,
        call_data=CallDataService(store, EventPublisher(client, ttl_s=60)),
        sessions=Sessions(bytes.fromhex(key), 3600),
        ws_limits=WsLimits(per_agent=1000, block_ms=1000),
    )
    http = HttpServer(app)
    await http.start("127.0.0.1", 0)
    conn.send(("ready", http.port))
    pipeline: Pipeline | None = None
    engine_task: asyncio.Task[None] | None = None
    stop = asyncio.Event()
    try:
        while True:
            command, arg = await asyncio.to_thread(conn.recv)
            if command == "start":
                stop = asyncio.Event()
                if arg == "cti":
                    started = start_cti(client, ami_port, stop)
                    pipeline, engine_task = await _bounded("start", started)
                else:
                    pipeline = FloorAll(client, ami_port)
                    await _bounded("start", pipeline.start())
                conn.send(("started", None))
            elif command == "cpu":
                conn.send(("cpu", time.process_time()))
            elif command == "end":
                stop.set()
                if engine_task is not None:
                    await _bounded("engine stop", engine_task)
                    engine_task = None
                if pipeline is not None:
                    await _bounded("pipeline close", pipeline.close())
                    pipeline = None
                conn.send(("ended", None))
            else:
                return
    finally:
        await http.stop()
        await pool.close()
        await client.aclose()


async def _bounded(step: str, awaitable: Any, timeout_s: float = 20.0) -> Any:
    """``awaitable`` within ``timeout_s``; else every task's stack on stderr and an error
    (a stuck step names itself rather than leaving the bench waiting)."""
    try:
        return await asyncio.wait_for(awaitable, timeout_s)
    except TimeoutError:
        for task in asyncio.all_tasks():
            print(f"-- task {task.get_name()}", file=sys.stderr)
            task.print_stack(file=sys.stderr)
        raise BenchError(f"server: {step} took over {timeout_s:g} s") from None


async def start_cti(
    client: Any, ami_port: int, stop: asyncio.Event
) -> tuple[Pipeline, asyncio.Task[None]]:
    """cti's pipeline and the wallboard engine on its leadership (as cti serve wires it)."""
    cti = CtiPipeline(client, ami_port, Stamps())
    await cti.start()
    leadership = cti.leadership
    engine = WallboardEngine(
        WallboardStore(client),
        reader_factory(client, 1000),
        leadership.owner,
        Figures(ZoneInfo("UTC")),
        is_leader=lambda: leadership.leader,
    )
    task = asyncio.create_task(engine.run(stop))
    if not await _wait(lambda: engine.leading):
        raise BenchError("the wallboard engine did not lead")
    return cti, task


async def _wait(predicate: Any, timeout_s: float = 10.0) -> bool:
    deadline = now() + timeout_s
    while not predicate():
        if now() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


# -- the client ------------------------------------------------------------------------------
class Viewers:
    """N WebSockets, every frame stamped as it is handed over (parsed after the phase)."""

    def __init__(self, session: aiohttp.ClientSession, url: str, count: int) -> None:
        self._session, self._url, self._count = session, url, count
        self.frames: list[list[tuple[float, str]]] = [[] for _ in range(count)]
        self._sockets: list[aiohttp.ClientWebSocketResponse] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self) -> None:
        for i in range(self._count):
            ws = await self._session.ws_connect(self._url, max_msg_size=0)
            self._sockets.append(ws)
            self._tasks.append(asyncio.create_task(self._read(ws, self.frames[i])))

    async def _read(
        self, ws: aiohttp.ClientWebSocketResponse, out: list[tuple[float, str]]
    ) -> None:
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                out.append((now(), message.data))

    def clear(self) -> None:
        for frames in self.frames:
            frames.clear()

    async def close(self) -> None:
        for ws in self._sockets:
            await ws.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def cti_latencies(sent: Sequence[tuple[str, float, bool]], frames: Sequence[tuple[float, str]]):
    """Per label (join/answer): latency of each measured event to the first frame whose
    support queue's counter reached it."""
    counter = {"join": "offered", "answer": "answered"}
    seen: dict[str, list[tuple[float, int]]] = {"join": [], "answer": []}
    for stamp, text in frames:
        frame = json.loads(text)
        body = frame.get("snapshot", frame)
        today = (body.get("queues") or {}).get("support", {}).get("today")
        if today:
            for label, name in counter.items():
                seen[label].append((stamp, today[name]))
    out: dict[str, list[float]] = {"join": [], "answer": []}
    for label in out:
        k = 0
        points, p = seen[label], 0
        for channel, stamp, measured in sent:
            if channel != label:
                continue
            k += 1
            while p < len(points) and points[p][1] < k:
                p += 1
            if p < len(points) and measured:
                out[label].append(points[p][0] - stamp)
    return out


def floor_latencies(sent: Sequence[tuple[str, float, bool]], frames: Sequence[tuple[float, str]]):
    got: dict[str, float] = {}
    for stamp, text in frames:
        event = json.loads(text).get("event") or {}
        if event.get("event") == "ringing":
            got.setdefault(event.get("channel", ""), stamp)
    return [got[c] - s for c, s, measured in sent if measured and c in got]


# -- the run ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    rates: tuple[int, ...]
    viewers: tuple[int, ...]
    duration_s: float
    warmup_s: float
    max_gap_s: float
    redis_url: str
    pg_server: str
    json_path: Any
    quick: bool


async def create_database(pg_server: str) -> str:
    name = f"cti_bench_wb_{secrets.token_hex(4)}"
    await migrate(f"{pg_server}/{name}")
    conn = await asyncpg.connect(f"{pg_server}/{name}", timeout=10)
    try:
        username, endpoint, display, role = SUPERVISOR
        await conn.execute(
            "INSERT INTO agents (username, display_name, endpoint, role, password_hash)"
            " VALUES ($1, $2, $3, $4, $5)",
            username,
            display,
            endpoint,
            role,
            hash_password(secrets.token_urlsafe(16)),
        )
    finally:
        await conn.close()
    return name


async def phase(
    options: Options,
    sender: Child,
    server: Child,
    http: aiohttp.ClientSession,
    base: str,
    token: str,
    *,
    mode: str,
    rate: int,
    viewers: int,
    n: int,
) -> dict[str, Any]:
    await flush_redis(options.redis_url)
    await server.ask("start", mode)
    path = "/ws/wallboard" if mode == "cti" else "/ws"
    sockets = Viewers(http, f"{base}{path}?token={token}", viewers)
    await sockets.open()
    await asyncio.sleep(0.3)
    sockets.clear()  # the greeting frames
    spec = PopSpec(f"w{n}", rate, options.warmup_s, options.duration_s, TAIL_S, AGENTS)
    await sender.ask("prepare", spec, timeout_s=120)
    cpu0, redis0 = await server.ask("cpu"), redis_cpu_s()
    played = await sender.ask("go", timeout_s=options.warmup_s + options.duration_s + 60)
    cpu1, redis1 = await server.ask("cpu"), redis_cpu_s()
    await asyncio.sleep(COLLECT_S)
    await sockets.close()
    await server.ask("end", timeout_s=30)
    sent = played["sent"]
    span = played["span_s"]
    result: dict[str, Any] = {
        "mode": mode,
        "rate": rate,
        "viewers": viewers,
        "server_cpu_per_s": round((cpu1 - cpu0) / span, 4),
        "redis_cpu_per_s": round((redis1 - redis0) / span, 4)
        if redis0 is not None and redis1 is not None
        else None,
        "frames_per_viewer": round(sum(len(f) for f in sockets.frames) / viewers, 1),
    }
    if mode == "cti":
        joins: list[float] = []
        answers: list[float] = []
        for frames in sockets.frames:
            got = cti_latencies(sent, frames)
            joins += got["join"]
            answers += got["answer"]
        expected = sum(1 for c, _s, m in sent if c == "join" and m) * viewers
        result.update(join=summary_ms(joins), answer=summary_ms(answers))
        result["measured"] = len(joins)
        result["missing"] = expected - len(joins)
    else:
        latencies: list[float] = []
        for frames in sockets.frames:
            latencies += floor_latencies(sent, frames)
        expected = sum(1 for c, _s, m in sent if m and c not in ("join", "answer")) * viewers
        result.update(ringing=summary_ms(latencies), measured=len(latencies))
        result["missing"] = expected - len(latencies)
    result["cpu_per_s"] = round(result["server_cpu_per_s"] + (result["redis_cpu_per_s"] or 0), 4)
    return result


async def run(options: Options) -> dict[str, Any]:
    database = await create_database(options.pg_server)
    key = secrets.token_bytes(32)
    sessions = Sessions(key, 3600)
    username, endpoint, display, role = SUPERVISOR
    token, _ = sessions.issue(username=username, display_name=display, endpoint=endpoint, role=role)
    sender = Child("sender", sender_main, options.max_gap_s)
    server: Child | None = None
    rows = []
    try:
        ami_port = await sender.receive(30)
        server = Child(
            "server",
            server_main,
            ami_port,
            options.redis_url,
            f"{options.pg_server}/{database}",
            key.hex(),
        )
        port = await server.receive(60)
        progress(f"server pid {server.process.pid}")
        base = f"http://127.0.0.1:{port}"
        n = 0
        async with aiohttp.ClientSession() as http:
            for rate in options.rates:
                for viewers in options.viewers:
                    for mode in ("floor", "cti"):
                        n += 1
                        progress(f"{mode} {rate}/s {viewers} viewer(s)")
                        rows.append(
                            await phase(
                                options, sender, server, http, base, token,
                                mode=mode, rate=rate, viewers=viewers, n=n,
                            )
                        )  # fmt: skip
    finally:
        if server is not None:
            server.stop()
        sender.stop()
        await flush_redis(options.redis_url)
        await drop_database(options.pg_server, database)
    return {"meta": run_meta(options), "rows": rows, "cpu_ratios": cpu_ratios(rows)}


def cpu_ratios(rows: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Per rate: the CPU (server + Redis) with the most viewers over that with the fewest."""
    out: dict[str, float | None] = {}
    for mode in ("cti", "floor"):
        for rate in sorted({r["rate"] for r in rows}):
            same = sorted((r for r in rows if r["mode"] == mode and r["rate"] == rate),
                          key=lambda r: r["viewers"])  # fmt: skip
            if len(same) >= 2 and same[0]["cpu_per_s"]:
                key = f"{mode} {rate}/s {same[-1]['viewers']}v/{same[0]['viewers']}v"
                out[key] = round(same[-1]["cpu_per_s"] / same[0]["cpu_per_s"], 3)
    return out


def render(report: dict[str, Any]) -> str:
    lines = [
        "mode   rate  viewers  p50 ms   p99 ms   max ms   n      miss  cpu/s (srv+redis)  frames",
    ]
    for r in report["rows"]:
        figure = r["join"] if r["mode"] == "cti" else r["ringing"]
        lines.append(
            f"{r['mode']:<6} {r['rate']:>4}  {r['viewers']:>7}  {fmt(figure['p50'], '7.1f')}  "
            f"{fmt(figure['p99'], '7.1f')}  {fmt(figure['max'], '7.1f')}  {r['measured']:<6} "
            f"{r['missing']:<5} {r['cpu_per_s']:.3f} ({r['server_cpu_per_s']:.3f}+"
            f"{fmt(r['redis_cpu_per_s'], '.3f')})  {r['frames_per_viewer']}"
        )
        if r["mode"] == "cti":
            a = r["answer"]
            lines.append(
                f"  answer→frame p50 {fmt(a['p50'], '.1f')} ms, p99 {fmt(a['p99'], '.1f')} ms"
            )
    lines.append("")
    lines += [f"CPU {name}: {value}" for name, value in report["cpu_ratios"].items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.wallboard_bench", description=__doc__)
    add_common_arguments(parser, "wallboard")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rates", default="20,100")
    parser.add_argument("--viewers", default="1,50")
    parser.add_argument("--pg-server", default="postgresql://postgres@127.0.0.1:5432")
    args = parser.parse_args(argv)
    common = common_options(parser, args, "wallboard", duration_s=(10.0, 3.0), warmup_s=(2.0, 1.0))
    options = Options(
        rates=tuple(int(x) for x in args.rates.split(",")),
        viewers=tuple(int(x) for x in args.viewers.split(",")),
        duration_s=common.duration_s,
        warmup_s=common.warmup_s,
        max_gap_s=common.max_gap_s,
        redis_url=common.redis_url,
        pg_server=args.pg_server.rstrip("/"),
        json_path=common.json_path,
        quick=common.quick,
    )
    return run_main("wallboard_bench", lambda: run(options), render, options.json_path)


if __name__ == "__main__":
    sys.exit(main())
