"""Reports benchmark: a million calls' segments, and how long the reports take.

Seeds ``--calls`` calls (default 1,000,000) over the month ``--month`` (default
2026-11, which has the autumn daylight-saving change in America/New_York) into a
database of its own: for each call a timeline of model effects (queue, rings, answer or
abandon, holds, blind and attended transfers, overflow to a second queue, a queue's
timeout), turned into events by :func:`cti.calls.events.to_events` and into segments by
:func:`cti.reports.segments.derive`, the code the daemon runs, then COPYed into
``report_offers`` and ``report_legs``. One day's events also go to
``interaction_events``, to time the alternative of deriving a report from the timeline
on demand.

Then, in the same run, it times (best of ``--repeat``): ``SELECT count(*)`` over
``report_offers``; the day-by-30-minutes and month-by-day ``queues`` reports and the
``calls`` list for one queue and day (each through :func:`cti.reports.service.make_report`,
as the CLI and the API call it); the day's queue report derived on demand from its
events; and the day and calls queries with index scans turned off.

    .venv/bin/python -m bench.report_bench [--calls N] [--database-url URL] [--reseed]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from cti.calls import effects as fx
from cti.calls.events import CallEvent, to_events
from cti.db.migrate import migrate
from cti.reports.definitions import add, zero
from cti.reports.intervals import bounds, index_of
from cti.reports.segments import derive
from cti.reports.service import ReportRequest, make_report, plan_thresholds
from cti.reports.store import leg_rows, offer_rows
from cti.timeline.store import event_row

ZONE = ZoneInfo("America/New_York")
QUEUES = ("sales", "support", "billing", "retention", "vip", "overflow")
TIERS = ("platinum", "gold", "silver", "bronze", "unknown")
RULES = ("vip-first", "gold-priority", "default", "after-hours", "delinquent")
NUMBERS = (("8005550100", "sales"), ("8005550101", "support"), ("8005550102", "billing"))
AGENTS = tuple(f"PJSIP/{3000 + i}" for i in range(200))
OFFER_COLUMNS = [
    "call_id",
    "kind",
    "seq",
    "queue",
    "entered_at",
    "left_at",
    "wait_s",
    "outcome",
    "position",
    "agent",
    "talk_s",
    "hold_s",
    "wrapup_s",
    "transfers",
    "tier",
    "rule",
    "dnis",
    "service",
]
LEG_COLUMNS = [
    "call_id",
    "seq",
    "agent",
    "channel",
    "queue",
    "rang_at",
    "answered_at",
    "ended_at",
    "talk_s",
    "hold_s",
    "wrapup_s",
    "how",
    "to_whom",
    "started_at",
]


class Timeline:
    """Effects of one call, as the model would emit them."""

    def __init__(self, rng: random.Random, start: float) -> None:
        self.rng, self.t = rng, start
        self.ids = {"call_id": str(uuid.UUID(int=rng.getrandbits(128))), "linkedid": f"{start:.6f}"}
        self.effects: list[fx.Effect] = []
        self.legs = 0

    def at(self, step: float) -> float:
        self.t += step
        return self.t

    def channel(self, agent: str) -> str:
        self.legs += 1
        return f"{agent}-{self.legs:08x}"

    def queue(self, queue: str) -> None:
        self.effects.append(
            fx.CallQueued(**self.ids, at=self.at(0.2), queue=queue, position=1, priority=0)
        )

    def answer(self, queue: str | None, wait: float) -> tuple[str, str]:
        """Rings (a quarter of them unanswered for 15 s) and the answer ``wait`` seconds
        after now."""
        answer_at = self.t + wait
        while True:
            agent = self.rng.choice(AGENTS)
            leg = self.channel(agent)
            ring_at = self.at(min(2.0, max(0.0, answer_at - self.t)))
            self.effects.append(
                fx.AgentRinging(
                    **self.ids, at=ring_at, agent=agent, member_name=None, channel=leg, queue=queue
                )
            )
            if queue is not None and answer_at - self.t > 16 and self.rng.random() < 0.25:
                self.effects.append(
                    fx.AgentRingNoAnswer(
                        **self.ids, at=self.at(15), agent=agent, member_name=None, channel=leg,
                        queue=queue, ring_time_ms=15_000,
                    )
                )  # fmt: skip
                continue
            self.t = max(self.t + 1, answer_at)
            self.effects.append(
                fx.AgentConnected(
                    **self.ids, at=self.t, agent=agent, member_name=None, channel=leg,
                    queue=queue, via=(),
                )
            )  # fmt: skip
            return agent, leg

    def talk(self, agent: str, leg: str) -> None:
        self.at(self.rng.lognormvariate(5.0, 0.7))
        if self.rng.random() < 0.3:
            self.effects.append(fx.CallHeld(**self.ids, at=self.at(0), by=agent, channel=leg))
            self.effects.append(
                fx.CallUnheld(
                    **self.ids, at=self.at(self.rng.uniform(10, 90)), by=agent, channel=leg
                )
            )
            self.at(self.rng.uniform(10, 120))


def make_call(rng: random.Random, start: float) -> list[CallEvent]:
    c = Timeline(rng, start)
    first = rng.choices(QUEUES[:5], weights=(40, 30, 15, 10, 5))[0]
    c.queue(first)
    roll = rng.random()
    abandoned = False
    agents: list[str] = []
    if roll < 0.02:  # short abandon
        c.effects.append(
            fx.CallAbandoned(**c.ids, at=c.at(rng.uniform(0, 5)), queue=first, position=1,
                             original_position=1, hold_time_s=2)
        )  # fmt: skip
        abandoned = True
    elif roll < 0.10:
        c.effects.append(
            fx.CallAbandoned(**c.ids, at=c.at(5 + rng.expovariate(1 / 60)), queue=first, position=1,
                             original_position=1, hold_time_s=30)
        )  # fmt: skip
        abandoned = True
    elif roll < 0.13:  # the queue's timeout, then a message
        c.at(300)
    else:
        queue = first
        if roll < 0.15:  # overflow to a second queue
            c.at(60)
            queue = "overflow"
            c.queue(queue)
        agent, leg = c.answer(queue, rng.expovariate(1 / 18))
        agents.append(agent)
        c.talk(agent, leg)
        kind = rng.random()
        if kind < 0.10:  # blind transfer back to a queue
            c.effects.append(
                fx.CallTransferred(**c.ids, at=c.at(0.5), kind=fx.TransferKind.BLIND,
                                   from_agent=agent, to="600", context="agents")
            )  # fmt: skip
            c.effects.append(fx.AgentLeft(**c.ids, at=c.at(0), agent=agent, channel=leg))
            second = rng.choice(QUEUES[:5])
            c.queue(second)
            agent, leg = c.answer(second, rng.expovariate(1 / 25))
            agents.append(agent)
            c.talk(agent, leg)
        elif kind < 0.15:  # attended transfer to an agent outside any queue
            c.effects.append(fx.CallHeld(**c.ids, at=c.at(0), by=agent, channel=leg))
            target = rng.choice(AGENTS)
            target_leg = c.channel(target)
            c.effects.append(
                fx.AgentConnected(**c.ids, at=c.at(rng.uniform(10, 60)), agent=target,
                                  member_name=None, channel=target_leg, queue=None, via=())
            )  # fmt: skip
            c.effects.append(
                fx.CallTransferred(**c.ids, at=c.at(0), kind=fx.TransferKind.ATTENDED,
                                   from_agent=agent, to=target, to_channel=target_leg)
            )  # fmt: skip
            c.effects.append(fx.AgentLeft(**c.ids, at=c.at(0.3), agent=agent, channel=leg))
            agents.append(target)
            agent, leg = target, target_leg
            c.talk(agent, leg)
        c.effects.append(fx.AgentLeft(**c.ids, at=c.at(0), agent=agent, channel=leg))
    c.effects.append(
        fx.CallEnded(**c.ids, at=c.at(0), cause="16", cause_txt="Normal Clearing",
                     abandoned=abandoned, agents=tuple(agents))
    )  # fmt: skip
    return [e for effect in c.effects for e in to_events(effect, now=c.t)]


def call_start(rng: random.Random, month: date) -> float:
    """A moment of the month in the centre's zone, busier by day."""
    days = ((month.replace(day=28) + timedelta(days=4)).replace(day=1) - month).days
    day = month + timedelta(days=rng.randrange(days))
    hour = min(23.99, max(0.0, rng.gauss(13.5, 3.2)))
    local = datetime.combine(day, datetime.min.time(), tzinfo=ZONE) + timedelta(hours=hour)
    return local.astimezone(UTC).timestamp()


async def seed(conn: asyncpg.Connection, calls: int, month: date, events_day: date) -> None:
    rng = random.Random(14)
    await conn.execute("TRUNCATE report_offers, report_legs, interaction_events")
    await conn.executemany(
        "INSERT INTO queues (name) VALUES ($1) ON CONFLICT DO NOTHING", [(q,) for q in QUEUES]
    )
    await conn.executemany(
        "INSERT INTO dialled_numbers (dnis, service, default_queue, timezone)"
        " VALUES ($1, $2, $2, 'America/New_York') ON CONFLICT DO NOTHING",
        NUMBERS,
    )
    day_start = datetime.combine(events_day, datetime.min.time(), tzinfo=ZONE).timestamp()
    day_end = datetime.combine(events_day + timedelta(days=1), datetime.min.time(), tzinfo=ZONE)
    # Calls end, and are written, in time order: so are their rows on disk.
    starts = sorted(call_start(rng, month) for _ in range(calls))
    began = time.perf_counter()
    chunk = 20_000
    for done in range(0, calls, chunk):
        offers: list[tuple[Any, ...]] = []
        legs: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        for n in range(min(chunk, calls - done)):
            timeline = make_call(rng, starts[done + n])
            call_id = timeline[0].call_id or ""
            segments = derive(timeline)
            dnis, service = rng.choice(NUMBERS)
            dims = (
                rng.choices(TIERS, weights=(5, 15, 30, 40, 10))[0],
                rng.choice(RULES),
                dnis,
                service,
            )
            offers += [(*row, *dims) for row in offer_rows(call_id, segments)]
            legs += leg_rows(call_id, segments)
            if day_start <= timeline[0].at < day_end.timestamp():
                events += [r for e in timeline if (r := event_row(e)) is not None]
        await conn.copy_records_to_table("report_offers", records=offers, columns=OFFER_COLUMNS)
        await conn.copy_records_to_table("report_legs", records=legs, columns=LEG_COLUMNS)
        if events:
            await conn.copy_records_to_table(
                "interaction_events",
                records=events,
                columns=[
                    "call_key",
                    "call_id",
                    "linkedid",
                    "fingerprint",
                    "at",
                    "kind",
                    "agent",
                    "detail",
                ],
            )
        rate = (done + chunk) / (time.perf_counter() - began)
        print(f"seeded {min(done + chunk, calls)} calls ({rate:.0f}/s)", file=sys.stderr)
    # What autovacuum does to a table written over a month: hint bits, visibility map.
    await conn.execute("VACUUM (ANALYZE) report_offers, report_legs, interaction_events")


async def best(repeat: int, action: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    """The best time of ``repeat`` runs (inf if one gave up: the report's timeout)."""
    times, result = [], None
    for _ in range(repeat):
        began = time.perf_counter()
        try:
            result = await action()
        except TimeoutError:
            return math.inf, None
        times.append(time.perf_counter() - began)
    print(f"  {min(times) * 1000:.1f} ms", file=sys.stderr)
    return min(times), result


async def on_demand_day(conn: asyncpg.Connection, edges: list[datetime]) -> int:
    """The day's queue report the other way: read its events, derive, aggregate."""
    records = await conn.fetch(
        "SELECT call_key, call_id, linkedid, fingerprint, at, kind, agent, detail"
        " FROM interaction_events WHERE call_id IN (SELECT call_id FROM interaction_events"
        " WHERE kind = 'queued' AND at >= $1 AND at < $2)",
        edges[0],
        edges[-1],
    )
    by_call: dict[Any, list[CallEvent]] = {}
    for r in records:
        by_call.setdefault(r["call_id"], []).append(
            CallEvent(kind=r["kind"], call_key=r["call_key"], call_id=str(r["call_id"]),
                      linkedid=r["linkedid"], fingerprint=r["fingerprint"],
                      at=r["at"].timestamp(), agent=r["agent"], data=json.loads(r["detail"]))
        )  # fmt: skip
    thresholds = await plan_thresholds(conn)
    totals: dict[tuple[int, str], dict[str, float]] = {}
    for events in by_call.values():
        for v in derive(events).visits:
            i = index_of(edges, datetime.fromtimestamp(v.entered, tz=UTC))
            if i is not None:
                add(
                    totals.setdefault((i, v.queue), zero()),
                    v,
                    thresholds[v.queue],
                    int(v.transferred),
                )
    return len(by_call)


async def measure(conn: asyncpg.Connection, month: date, day: date, repeat: int) -> dict[str, Any]:
    start = datetime.combine(day, datetime.min.time(), tzinfo=ZONE)
    day_req = ReportRequest("queues", start, start + timedelta(days=1), "30m")
    month_start = datetime.combine(month, datetime.min.time(), tzinfo=ZONE)
    month_end = datetime.combine(
        (month.replace(day=28) + timedelta(days=4)).replace(day=1), datetime.min.time(), tzinfo=ZONE
    )
    month_req = ReportRequest("queues", month_start, month_end, "day")
    calls_req = ReportRequest("calls", start, start + timedelta(days=1), queues=("sales",))
    out: dict[str, Any] = {}
    out["count_s"], out["offers"] = await best(
        repeat, lambda: conn.fetchval("SELECT count(*) FROM report_offers")
    )
    out["day_30m_s"], rows = await best(repeat, lambda: make_report(conn, day_req, ZONE))
    out["day_rows"] = len(rows)
    out["day_offered"] = sum(r["offered"] for r in rows)
    out["month_day_s"], rows = await best(repeat, lambda: make_report(conn, month_req, ZONE))
    out["month_rows"] = len(rows)
    out["month_offered"] = sum(r["offered"] for r in rows)
    out["calls_s"], rows = await best(repeat, lambda: make_report(conn, calls_req, ZONE))
    out["calls_rows"] = len(rows)
    edges = bounds(start, start + timedelta(days=1), "30m", ZONE)
    out["on_demand_day_s"], out["on_demand_calls"] = await best(
        max(1, repeat // 2), lambda: on_demand_day(conn, edges)
    )
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off")
        out["day_30m_noindex_s"], _ = await best(repeat, lambda: make_report(conn, day_req, ZONE))
        # Without the primary key's index the calls list is a nested loop: one try.
        out["calls_noindex_s"], _ = await best(1, lambda: make_report(conn, calls_req, ZONE))
    return out


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.report_bench")
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument(
        "--database-url", default="postgresql://postgres@127.0.0.1:5432/cti_bench_reports"
    )
    parser.add_argument("--month", type=date.fromisoformat, default=date(2026, 11, 1))
    parser.add_argument("--day", type=date.fromisoformat, default=date(2026, 11, 17))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--reseed", action="store_true", help="seed even if already seeded")
    args = parser.parse_args(argv)
    if "bench" not in args.database_url.rsplit("/", 1)[-1]:
        print(
            "report_bench: the database's name must contain 'bench' (it is emptied)",
            file=sys.stderr,
        )
        return 2
    await migrate(args.database_url)
    conn = await asyncpg.connect(args.database_url)
    try:
        seeded = await conn.fetchval("SELECT count(*) FROM report_offers WHERE kind = 'call'")
        if args.reseed or seeded != args.calls:
            await seed(conn, args.calls, args.month, args.day)
        result = await measure(conn, args.month, args.day, args.repeat)
    finally:
        await conn.close()
    result["calls_seeded"] = args.calls
    width = max(map(len, result))
    for key, value in result.items():
        if key.endswith("_s"):
            shown = f"{value * 1000:10.1f} ms" if math.isfinite(value) else "  gave up (> 60 s)"
        else:
            shown = f"{value:>10}"
        print(f"{key.ljust(width)}  {shown}")
    return 0 if math.isfinite(result["month_day_s"]) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
