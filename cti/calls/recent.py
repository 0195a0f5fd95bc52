"""What the leader published lately, and whether Redis still has it.

Redis replication is asynchronous: a master acknowledges a write before its replica has
it, so when Sentinel promotes the replica the last writes are gone (README, "The
replication window"). The outbox had dropped those events once acknowledged, so without
this module they would be missing from the streams for good. Redis restarted without
persistence (or flushed) loses them the same way.

Two pure parts, used by the outbox (:mod:`cti.calls.leadership`):

* :class:`RecentlyPublished`: the events published in the last ``window_s`` seconds,
  pruned by age as events go (like the standby window, and as long: a failover that
  took longer than that has also cost the lease, and the next leader replays its own
  standby window). The count cap is a backstop against a flood only.
* :class:`PublishMarks`: how the leader notices the loss. Each batch's pipeline ends
  with ``SET <mark key> <token>:<n> GET``: the reply is the mark the previous batch
  left. Replication keeps the master's order, so finding our last mark means every
  write before it survived; finding another value (an older mark: the promoted replica
  had not received the last batches; nothing: Redis came back empty) means some may be
  lost, and the whole window goes back to the outbox. The publish script's fingerprints
  skip what survived, so what was lost goes in once and nothing is doubled. The script
  also checks the mark before writing each event (as it checks the lease), so the batch
  that finds the loss writes nothing and goes out again after the lost events: they
  stay in the order they happened. That costs one small command in a pipeline that is
  sent anyway and one ``GET`` inside the script; when no batch goes out, a ``GET`` of
  the mark every renewal interval (only while the window holds something) catches a
  failover in a quiet moment before the window forgets the events.

What it does not bring back: events published more than ``window_s`` before Redis
served again (a restart or failover that long, or a replica cut off from its master
that long, then promoted). If the leader dies with Redis, the next leader replays its
standby window, as for any takeover. A retry after a pipeline that failed half-way
may find its own mark from the failed attempt and send the window again: harmless
(fingerprints), and rare.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Sequence

from cti.calls.events import CallEvent


def mark_key(lease_key: str, owner: str) -> str:
    """One mark per leader and PBX lease: another instance leading the same PBX later,
    or this one leading another PBX, never reads this one's marks as its own."""
    return f"{lease_key}:published:{owner}"


class RecentlyPublished:
    """The events published in the last ``window_s`` seconds, oldest first."""

    def __init__(self, window_s: float, max_events: int = 100_000) -> None:
        self._window_s = window_s
        self.max = max_events
        #: (when it was published, the event); the times never decrease.
        self._events: deque[tuple[float, CallEvent]] = deque()
        #: Events dropped by the count backstop before their time.
        self.overflow = 0

    def __len__(self) -> int:
        return len(self._events)

    def add(self, now: float, events: Sequence[CallEvent]) -> None:
        self._events.extend((now, event) for event in events)
        self.prune(now)

    def prune(self, now: float) -> None:
        """Drop what is older than the window, then (a flood) what is beyond the cap."""
        cutoff = now - self._window_s
        events = self._events
        while events and events[0][0] < cutoff:
            events.popleft()
        over = len(events) - self.max
        if over > 0:
            self.overflow += over
            for _ in range(over):
                events.popleft()

    def take(self, now: float) -> list[tuple[float, CallEvent]]:
        """Remove and return what is still in the window, with when each went out."""
        self.prune(now)
        taken = list(self._events)
        self._events.clear()
        return taken


class PublishMarks:
    """The marks one leader leaves with its batches, and the decision whether what it
    published before is still in Redis.

    ``expected`` is the mark the last acknowledged batch left; None when there is no
    claim to check (nothing published yet, or a check just found the marks broken and
    the window is on its way back to the outbox)."""

    def __init__(self, token: str | None = None) -> None:
        self._token = token or uuid.uuid4().hex[:12]
        self._sent = 0
        self.expected: str | None = None

    def next(self) -> str:
        """The mark for the next batch: unique for this leader."""
        self._sent += 1
        return f"{self._token}:{self._sent}"

    def batch_went_in(self, sent: str, found: str | None) -> bool:
        """The batch marked ``sent`` was acknowledged; its ``SET ... GET`` found
        ``found``. Returns whether everything published before it is still there."""
        intact = self.expected is None or found == self.expected
        self.expected = sent
        return intact

    def still_there(self, found: str | None) -> bool:
        """A check between batches found ``found`` under the mark key: whether what
        was published is still there. When not, the next batch starts a new claim."""
        intact = self.expected is None or found == self.expected
        if not intact:
            self.expected = None
        return intact

    def forget(self) -> None:
        """The lease changed hands: nothing to claim until the next batch goes in."""
        self.expected = None
