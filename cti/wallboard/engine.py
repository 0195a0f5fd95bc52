"""The wallboard's engine: one instance counts each call event once and pushes frames.

Runs in every ``cti serve``; only works while its instance holds the wallboard's own
lease (``cti:wallboard:leader``, :mod:`cti.wallboard.store`; ``is_leader``), which
any instance may hold whichever PBXes it leads: the events of every PBX (each
published by that PBX's leader, :mod:`cti.calls.leadership`) come on the one
``cti:events`` stream, and the wallboard counts them all, once. Then it:

1. loads the counts and their stream cursor from Redis (:mod:`cti.wallboard.store`),
   so a standby taking over continues where the old leader's last save left off;
2. reads ``cti:events`` from that cursor with one blocking ``XREAD`` (the events the
   PBXes' leaders published, each once: the publisher drops repeats), and applies each to the
   pure :class:`~cti.wallboard.figures.Figures`;
3. at most every ``flush_s`` (20 ms; leading edge: an event after a quiet spell goes
   out at once; a busy centre gets at most 50 frames a second, which bounds what each
   open wallboard costs: one socket write per frame), writes the snapshot and
   publishes one frame holding the queues and agents that changed; every
   ``state_every_s`` the counts and cursor are saved with it.

Reading the stream rather than taking events from the outbox directly is what makes a
takeover exact: counts and cursor are saved together, and whatever the stream holds
after the cursor is counted by whoever leads next, once.

The cost per event is the same however many wallboards are open: nothing here knows
about viewers; each web process relays the published frames (cti.screenpop.wallboard).
Agents' states come the same way: the agent board's ``agent_state`` events
(:mod:`cti.agents.news`) travel the same stream, so they too are counted once and
survive a takeover. Every ``tick_s`` all figures are sent again (the rolling window moved, the
day may have turned, a pause may have passed its maximum).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import redis.asyncio as redis
import structlog
from redis.exceptions import RedisError

from cti.backoff import Backoff
from cti.calls.publisher import ALL_EVENTS_STREAM, stream_entries
from cti.wallboard.figures import FORMULA, Changed, Figures
from cti.wallboard.store import NotLeader, SavedState, WallboardStore

log = structlog.get_logger(__name__)

START = "0-0"


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


class WallboardEngine:
    def __init__(
        self,
        store: WallboardStore,
        open_reader: Callable[[], redis.Redis],
        owner: str,
        figures: Figures,
        *,
        is_leader: Callable[[], bool],
        flush_s: float = 0.02,
        state_every_s: float = 1.0,
        tick_s: float = 60.0,
        block_ms: int = 1000,
        batch: int = 500,
        clock: Callable[[], float] = time.time,
        timezone: Callable[[], ZoneInfo] | None = None,
    ) -> None:
        self._store = store
        self._open_reader = open_reader
        self.owner = owner
        self.figures = figures
        self._is_leader = is_leader
        self._flush_s = flush_s
        self._state_every_s = state_every_s
        self._tick_s = tick_s
        self._block_ms = block_ms
        self._batch = batch
        self._clock = clock
        self._timezone = timezone
        self._changed = Changed()
        self._wake = asyncio.Event()
        self.cursor = START
        self._reset = False
        self.seq = 0
        self.leading = False
        #: Figures for /metrics and tests.
        self.events = 0
        self.frames = 0

    # -- running ------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Lead the wallboard whenever this instance leads, until ``stop``."""
        backoff = Backoff(initial=0.2, cap=5.0)
        while not stop.is_set():
            if not self._is_leader():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.1)
                continue
            try:
                await self._lead(stop)
                backoff.reset()
            except NotLeader:
                log.info("wallboard: not the leader any more")
            except (RedisError, OSError) as exc:
                log.warning("wallboard: Redis failed; starting over", error=repr(exc))
                await backoff.wait(stop)
            except Exception:  # a bug must not leave the wallboard dead until a restart
                log.exception("wallboard: failed; starting over from the saved counts")
                await backoff.wait(stop)
            finally:
                self.leading = False

    async def _lead(self, stop: asyncio.Event) -> None:
        await self._load()
        self.leading = True
        log.info("wallboard: leading", cursor=self.cursor, seq=self.seq)
        self._mark_all(reset=True)
        reader = self._open_reader()
        read = asyncio.create_task(self._read(reader), name="wallboard-read")
        try:
            await self._flush_loop(stop, read)
            if stop.is_set() and self._is_leader():
                await self._flush(save_state=True)  # hand the next leader a fresh cursor
        finally:
            read.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await read
            await reader.aclose()

    async def _load(self) -> None:
        saved = await self._store.load_state()
        if saved is not None:
            self.figures.load_state(saved.figures)
            self.cursor, self.seq = saved.cursor, saved.seq
            return
        # The first leader ever: count what the stream still holds (its retention, an
        # hour by default): events published before this engine got going are today's
        # too, and the day's roll-over sorts older ones out.
        self.cursor = START

    async def _read(self, reader: redis.Redis) -> None:
        while True:
            reply = await reader.xread(
                {ALL_EVENTS_STREAM: self.cursor}, count=self._batch, block=self._block_ms
            )
            entries = stream_entries(reply)
            if self._timezone is not None:
                self.figures.timezone = self._timezone()
            for raw_id, fields in entries:
                raw = fields.get(b"e", fields.get("e"))
                try:
                    event = json.loads(raw) if raw is not None else None
                except ValueError:
                    event = None
                if isinstance(event, dict):
                    try:
                        self._changed.update(self.figures.apply(event))
                    except Exception:  # one odd event must not stop the count
                        log.exception("wallboard: event skipped", event=event.get("event"))
                    self.events += 1
                self.cursor = _text(raw_id)
            if entries and self._changed:
                self._wake.set()

    async def _flush_loop(self, stop: asyncio.Event, read: asyncio.Task[None]) -> None:
        last_flush = last_state = 0.0
        next_tick = (self._clock() // self._tick_s + 1) * self._tick_s
        while not stop.is_set():
            if read.done():
                read.result()  # raises what stopped the reader
                return
            if not self._is_leader():
                raise NotLeader("lease lost")
            now = self._clock()
            if now >= next_tick:
                next_tick = (now // self._tick_s + 1) * self._tick_s
                self._mark_all()
            if not self._changed and now - last_state < self._state_every_s:
                self._wake.clear()
                timeout = min(0.1, max(0.0, next_tick - now))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                continue
            wait = last_flush + self._flush_s - now
            if wait > 0:
                await asyncio.sleep(wait)
                now = self._clock()
            save_state = now - last_state >= self._state_every_s
            await self._flush(save_state=save_state)
            last_flush = now
            if save_state:
                last_state = now

    def _mark_all(self, *, reset: bool = False) -> None:
        """Send every figure again (``reset``: and write the snapshot afresh)."""
        self._reset = self._reset or reset
        self._changed.queues |= set(self.figures.queues)
        self._changed.agents |= set(self.figures.agents)
        self._changed.agents |= set(self.figures.statuses)
        self._wake.set()

    async def _flush(self, *, save_state: bool) -> None:
        changed, self._changed = self._changed, Changed()
        now = self._clock()
        figures = self.figures
        queues = {q: figures.queue_view(q, now) for q in sorted(changed.queues)}
        agents = {a: figures.agent_view(a, now) for a in sorted(changed.agents)}
        seq = self.seq + (1 if changed else 0)
        meta: dict[str, Any] = {
            "seq": seq,
            "at": now,
            "day": figures.local_day(now),
            "timezone": figures.timezone.key,
            "formula": FORMULA,
        }
        frame = ""
        if changed:
            frame = json.dumps(
                {"type": "wallboard", **meta, "queues": queues, "agents": agents},
                separators=(",", ":"),
            )
        state = SavedState(self.cursor, seq, figures.to_state()) if save_state else None
        reset, self._reset = self._reset, False
        try:
            await self._store.save(
                self.owner,
                meta=meta,
                queues=queues,
                agents=agents,
                frame=frame,
                state=state,
                reset=reset,
            )
        except BaseException:
            self._changed.update(changed)  # send them with the next frame
            self._reset = self._reset or reset
            raise
        self.seq = seq
        if frame:
            self.frames += 1
