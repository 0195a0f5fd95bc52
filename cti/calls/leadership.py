"""Which instance publishes the call events, and what the others do with them meanwhile.

Every instance follows AMI and keeps its own call model, so a standby knows every call
the moment it takes over; the tracker (:mod:`cti.calls.tracker`) turns what the model
says into events and hands them to the one :class:`Leadership` of the process, which
decides their fate:

* **leader** (holds the lease, :mod:`cti.calls.lease`): events go to the outbox, which
  publishes them to Redis Streams in order (:mod:`cti.calls.publisher`), to the
  timeline writer (PostgreSQL), and a call's end shortens its data's expiry;
* **standby**: events are kept in a window of the last ``standby_window_s`` seconds,
  pruned by age as events arrive (so the window, not the event rate, bounds the
  standby's memory; ``standby_max`` events is only a backstop against a flood).
  When this instance becomes the leader it hands the whole window to the outbox first.
  Events the old leader already published are skipped by their fingerprints; events it
  never got to publish (it died first, or during the seconds before the lease expired)
  go out now. That is how a handover loses no event and doubles none;
* **lost the lease with events still in the outbox**: the publish script refuses them
  (it checks the lease's owner on every write: a fencing check), the outbox hands them
  back, and they go to the front of the standby window for whoever leads next (this
  instance again, perhaps);
* **published, then lost by Redis** (a Sentinel failover's replication window, or Redis
  back empty): the outbox keeps what it published in the last ``standby_window_s``
  seconds (:mod:`cti.calls.recent`) and every batch leaves a mark; when the next batch
  (or a check between batches) finds the mark is not the last one it left, that window
  goes back to the outbox, and the fingerprints let only the lost events through. When
  the lease is lost, the window joins the standby window, so an instance that takes
  the lease again (Redis lost its key too) publishes it again with the rest.

The lease, the leader flag, the window and the outbox live in one object because they
change together: taking the lease moves the window into the outbox, losing it moves
the outbox back into the window. Only an instance whose AMI connection is up and
resynced may take the lease (``ami_connected``), so one that lost Asterisk does not
keep everyone blind.

Several PBXes (:mod:`cti.pbx`): one Leadership per PBX, each with that PBX's lease
(``lease_key=cti.calls.lease.lease_key(pbx)``), which its outbox's writes are fenced by;
they may share one :class:`~cti.calls.publisher.EventPublisher`.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import deque
from collections.abc import Callable, Sequence

import redis.asyncio as redis
import structlog
from redis.exceptions import RedisError

from cti.backoff import Backoff
from cti.calls.events import CallEvent
from cti.calls.lease import LEASE_KEY, Lease, LeaseSpread
from cti.calls.publisher import EventPublisher, Mark, NotLeader
from cti.calls.recent import PublishMarks, RecentlyPublished, mark_key

log = structlog.get_logger(__name__)


class Outbox:
    """The leader's queue of events to publish, drained by one task in order.

    A failed batch is retried (with backoff) until it goes in: Redis being away delays
    events, it does not lose them. ``on_not_leader`` gets the unpublished events back
    when the lease turns out to be lost, so the caller can keep them for later.
    Published events stay in ``recent`` for ``recent_window_s``: a Redis that lost them
    (its mark says so, :mod:`cti.calls.recent`) gets them again."""

    def __init__(
        self,
        publisher: EventPublisher,
        owner: str,
        on_not_leader: Callable[[list[CallEvent]], None],
        *,
        max_batch: int = 256,
        backoff: Backoff | None = None,
        lease_key: str = LEASE_KEY,
        recent_window_s: float = 120.0,
        recent_max: int = 100_000,
        check_every_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``recent_window_s``: how long published events are kept to publish again if
        Redis loses them (:mod:`cti.calls.recent`); ``check_every_s``: how often the
        marks are checked while no batch goes out and the window is not empty."""
        self._publisher = publisher
        self._owner = owner
        #: The lease the owner must hold to publish: its PBX's (cti.calls.lease.lease_key).
        self._lease_key = lease_key
        self._on_not_leader = on_not_leader
        self._max_batch = max_batch
        self._backoff = backoff or Backoff(initial=0.05, cap=2.0)
        self._pending: list[CallEvent] = []
        self._wake = asyncio.Event()
        self.failures = 0
        self._clock = clock
        self._check_every_s = check_every_s
        self.recent = RecentlyPublished(recent_window_s, recent_max)
        self.marks = PublishMarks()
        self._mark_key = mark_key(lease_key, owner)
        #: Times Redis was found to have lost what was published (the window went back).
        self.losses = 0

    @property
    def backlog(self) -> int:
        return len(self._pending)

    @property
    def pending(self) -> tuple[CallEvent, ...]:
        """What is waiting to be published, oldest first."""
        return tuple(self._pending)

    def submit(self, events: Sequence[CallEvent]) -> None:
        self._pending.extend(events)
        self._wake.set()

    def take_all(self) -> list[CallEvent]:
        """Remove and return everything not yet published (leadership lost)."""
        pending, self._pending = self._pending, []
        return pending

    def take_published(self) -> list[tuple[float, CallEvent]]:
        """Remove and return the recently published events, with when each went out
        (leadership lost: they join the standby window; the marks start again)."""
        self.marks.forget()
        return self.recent.take(self._clock())

    def _lost(self, why: str) -> None:
        """Redis lost (perhaps) what we published: the window goes out again, ahead of
        what is waiting (it happened first). Fingerprints skip what survived."""
        events = [event for _at, event in self.recent.take(self._clock())]
        self.losses += 1
        log.warning(why, republished=len(events))
        if events:
            self._pending[:0] = events
            self._wake.set()

    async def _check_marks(self) -> None:
        """Between batches: is the last batch's mark still there?"""
        try:
            found = await self._publisher.read_mark(self._mark_key)
        except (RedisError, OSError):
            return  # Redis away: the next check or batch will tell
        if not self.marks.still_there(found):
            self._lost("redis lost recently published call events; publishing them again")

    def _keep(self, batch: Sequence[CallEvent]) -> None:
        before = self.recent.overflow
        self.recent.add(self._clock(), batch)
        if self.recent.overflow and not before:
            log.warning("published window full; oldest events dropped", cap=self.recent.max)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop`` is set and nothing is pending (or Redis is away)."""
        while True:
            if not self._pending:
                if stop.is_set():
                    return
                self._wake.clear()
                waiter = asyncio.ensure_future(self._wake.wait())
                stopper = asyncio.ensure_future(stop.wait())
                checking = self.marks.expected is not None and len(self.recent) > 0
                done, _ = await asyncio.wait(
                    {waiter, stopper},
                    timeout=self._check_every_s if checking else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                waiter.cancel()
                stopper.cancel()
                if not done:
                    await self._check_marks()
                continue
            batch = self._pending[: self._max_batch]
            mark = Mark(self._mark_key, self.marks.next(), self.marks.expected)
            try:
                found = await self._publisher.publish_many(
                    batch, self._owner, lease_key=self._lease_key, mark=mark
                )
            except NotLeader:
                log.warning("not the AMI leader any more; events kept for later")
                self._on_not_leader(self.take_all())
                continue
            except (RedisError, OSError) as exc:
                self.failures += 1
                log.warning("publishing call events failed; retrying", error=repr(exc))
                if not await self._backoff.wait(stop):
                    return
                continue
            self._backoff.reset()
            if not self.marks.batch_went_in(mark.value, found):
                # Nothing of the batch went in (the script checked the mark): what was
                # lost goes first, then the batch, in the order they happened.
                self._lost("redis lost recently published call events; publishing them again")
                continue
            del self._pending[: len(batch)]
            self._keep(batch)


class Leadership:
    """The lease, the leader flag, the standby window and the outbox of one instance.

    ``take`` is where the tracker hands its events over; ``ami_connected`` is told when
    the AMI feed is up (resynced) or lost; ``run`` holds or waits for the lease and
    publishes until stopped. ``record`` (the timeline) and ``call_ended`` (the call
    data's expiry) get what the leader publishes, in order."""

    def __init__(
        self,
        client: redis.Redis,
        publisher: EventPublisher,
        owner: str,
        *,
        lease_ttl_s: float = 5.0,
        lease_key: str = LEASE_KEY,
        record: Callable[[CallEvent], object] | None = None,
        call_ended: Callable[[str], object] | None = None,
        standby_window_s: float = 120.0,
        standby_max: int = 100_000,
        clock: Callable[[], float] = time.time,
        outbox_backoff: Backoff | None = None,
        spread: LeaseSpread | None = None,
    ) -> None:
        """``spread`` (:meth:`cti.calls.spreading.Spreading.seat`) shares this PBX's
        lease out with the other instances' leases; None takes it whenever possible."""
        self.owner = owner
        self._record = record
        self._call_ended = call_ended
        self._window_s = standby_window_s
        self._clock = clock
        self._standby_max = standby_max
        #: (when it was seen, the event), oldest first; the times never decrease.
        self._standby: deque[tuple[float, CallEvent]] = deque()
        #: Events dropped from the window by the count backstop before their time.
        self.standby_overflow = 0
        self.leader = False
        #: Handing the lease over: new events wait in the window, the outbox drains.
        self.holding_back = False
        self.ami_up = False
        self.lease = Lease(
            client,
            owner,
            key=lease_key,
            ttl_s=lease_ttl_s,
            renew_s=lease_ttl_s / 5,
            on_change=self.set_leader,
            eligible=lambda: self.ami_up,
            spread=spread,
            drain=self.drain,
        )
        self.outbox = Outbox(
            publisher,
            owner,
            on_not_leader=self.keep_unpublished,
            backoff=outbox_backoff,
            lease_key=lease_key,
            recent_window_s=standby_window_s,
            recent_max=standby_max,
            check_every_s=lease_ttl_s / 5,
            clock=clock,
        )

    # -- from the tracker -----------------------------------------------------------------
    def take(self, events: Sequence[CallEvent]) -> None:
        """New events, in the order they happened: published if we lead, else kept."""
        if not events:
            return
        if self.leader and not self.holding_back:
            self._deliver(events)
        else:
            now = self._clock()
            self._standby.extend((now, event) for event in events)
            self._prune(now)

    def ami_connected(self, up: bool) -> None:
        """The AMI feed is up and resynced (True) or lost: whether we may lead."""
        self.ami_up = up

    # -- from the lease and the outbox -----------------------------------------------------
    def set_leader(self, leader: bool) -> None:
        """Called by the lease on every change. Taking over replays the window."""
        self.holding_back = False
        if leader == self.leader:
            return
        self.leader = leader
        if leader:
            self._replay("taking over call events")
        else:
            self._keep_published()

    def drain(self, start: bool) -> bool:
        """The lease is about to be handed over (``start``): new events wait in the
        window like a standby's, and the lease is released once the outbox is empty
        (returns whether it is). Called off (not ``start``): what waited goes out."""
        if start:
            self.holding_back = True
            return self.outbox.backlog == 0
        if self.holding_back:
            self.holding_back = False
            if self.leader:
                self._replay("hand-over called off")
        return True

    def _replay(self, why: str) -> None:
        """Hand the window to the outbox: what happened while we did not publish."""
        self._prune(self._clock())
        events = [event for _seen, event in self._standby]
        self._standby.clear()
        log.info(why, replayed=len(events))
        self._deliver(events)

    def keep_unpublished(self, events: Sequence[CallEvent]) -> None:
        """Events the outbox could not publish because the lease was lost: keep them in
        the standby window, ahead of anything newer, for whoever leads next (this
        instance again, perhaps)."""
        if not events:
            return
        now = self._clock()
        self.leader = False
        self._keep_published()
        newer = list(self._standby)
        # They happened before ``newer``: stamped no later than its oldest, so the
        # window stays in time order and pruning from its old end stays right.
        seen = min(now, newer[0][0]) if newer else now
        self._standby.clear()
        self._standby.extend((seen, event) for event in events)
        self._standby.extend(newer)
        self._prune(now)

    def _keep_published(self) -> None:
        """Leadership lost: what we published lately joins the standby window (in time
        order), so that if we lead again it goes out again with the rest: a lease lost
        because Redis lost its key (restarted empty, a failover's replication window)
        lost those events too, and the fingerprints skip the ones still there."""
        published = self.outbox.take_published()
        if published:
            merged = list(heapq.merge(published, self._standby, key=lambda seen: seen[0]))
            self._standby.clear()
            self._standby.extend(merged)
            self._prune(self._clock())

    # -- running ----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Hold (or wait for) the lease and publish until ``stop``. Then publish what is
        pending while still holding the lease, and only then release it: a clean
        shutdown leaves the next leader nothing to replay from us."""
        release = asyncio.Event()
        lease = asyncio.create_task(self.lease.run(release), name="ami-lease")
        try:
            await self.outbox.run(stop)
        finally:
            release.set()
            await lease

    @property
    def backlog(self) -> int:
        """Events waiting in the outbox."""
        return self.outbox.backlog

    @property
    def standby_backlog(self) -> int:
        """Events held in the standby window now (older ones pruned first)."""
        if not self.leader or self.holding_back:
            self._prune(self._clock())
        return len(self._standby)

    def _prune(self, now: float) -> None:
        """Drop what is older than the window, then (a flood) what is beyond the cap."""
        cutoff = now - self._window_s
        window = self._standby
        while window and window[0][0] < cutoff:
            window.popleft()
        over = len(window) - self._standby_max
        if over > 0:
            if not self.standby_overflow:
                log.warning("standby window full; oldest events dropped", cap=self._standby_max)
            self.standby_overflow += over
            for _ in range(over):
                window.popleft()

    def _deliver(self, events: Sequence[CallEvent]) -> None:
        if not events:
            return
        self.outbox.submit(events)
        for event in events:
            if self._record is not None:
                self._record(event)
            if event.kind == "ended" and event.call_id and self._call_ended is not None:
                self._call_ended(event.call_id)
