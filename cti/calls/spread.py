"""Which instance should lead which PBX: the leases spread over the instances.

Each instance runs one lease per PBX (:func:`cti.calls.lease.lease_key`). Without a
rule the first instance to start takes every lease and keeps them, so one process
publishes for every PBX while the others idle. This rule keeps the load even without
ever leaving a PBX unled for long, from what every instance announces
(:mod:`cti.calls.presence`): which PBXes it can reach (its AMI connection is up) and
which it holds. One :class:`SpreadRule` per instance, shared by its leases; each lease
asks :meth:`SpreadRule.decide` for its PBX on every turn.

* **Take or wait.** A PBX nobody leads goes to the least-loaded instance that can reach
  it: an instance waits while another one that can reach the PBX holds fewer leases
  (ties all try; ``SET NX`` picks one). Waiting is bounded: a PBX still unled after
  ``patience_s`` (half a TTL) is taken by whoever can, so a slow or dead peer that
  still looks alive never leaves a PBX unled for more than about one TTL; and a PBX
  that only this instance can reach is taken at once, whatever its load (once a fresh
  instance has read ``settle_views`` views, so that instances started together first
  see each other). An instance's leases decide concurrently, so a lease it was just
  told to take counts as held until the lease says whether it got it.
* **Hand over.** An instance holding at least two leases more than another instance
  that can reach one of its PBXes gives that PBX up: one lease, at most one per TTL,
  not within a TTL of taking one (the others' announcements lag a renewal behind), not
  while the view shows a PBX someone can reach but nobody holds (a move is still under
  way), and only once its outbox is empty (the lease's caller checks that). When several
  could give to the same lighter instance, only the most loaded does (the first by
  name among equals), so a newcomer gets one lease, not one from each. With equal
  reach that ends at the fair share, ``ceil(PBXes / instances)`` (4 PBXes, 3
  instances: 2/1/1). The margin of two is the hysteresis: a move only ever makes the
  sum of the squared loads smaller, so leases cannot go round in circles, and a
  difference of one (2/1/1) is left alone.
* **Blind.** When the view of the others is older than a TTL (Redis unreachable), the
  rule says what a lease did before spreading existed: take whenever it can, keep what
  it holds.

The clock is injected (monotonic seconds); the view comes in through :meth:`see`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass


class Verdict(enum.Enum):
    TAKE = "take"  # not held: try to take it now
    WAIT = "wait"  # not held: leave it to a less-loaded instance for now
    KEEP = "keep"  # held: renew it
    HAND_OVER = "hand_over"  # held: drain the outbox, then release it


@dataclass(frozen=True)
class Peer:
    """What one instance announces: the PBXes it can reach and the leases it holds."""

    owner: str
    reach: frozenset[str] = frozenset()
    holds: frozenset[str] = frozenset()


class SpreadRule:
    """One instance's side of the spreading: its own state (told by its leases), the
    last view of the others, and when it last handed a lease over."""

    def __init__(
        self,
        owner: str,
        *,
        ttl_s: float,
        clock: Callable[[], float],
        patience_s: float | None = None,
        settle_views: int = 1,
    ) -> None:
        self.owner = owner
        self.ttl_s = ttl_s
        #: How long a PBX may stay unled before anyone who can reach it takes it.
        self.patience_s = ttl_s / 2 if patience_s is None else patience_s
        #: How many views of the others to read before taking anything: instances
        #: started together then see each other (and everything each can reach: the
        #: first announcement of each has only what its first lease knew) first.
        self.settle_views = settle_views
        self._views = 0
        self._clock = clock
        self._reach: set[str] = set()
        self._holds: set[str] = set()
        #: Told to take, not yet told whether it got it: counted as held meanwhile, as
        #: the instance's leases decide concurrently.
        self._taking: set[str] = set()
        self._peers: tuple[Peer, ...] = ()
        self._seen_at: float | None = None
        self._unled_since: dict[str, float] = {}
        self._handed_at: float | None = None
        self._took_at: float | None = None
        self._handing: str | None = None
        #: Leases this instance handed over (for the metrics and the tests).
        self.handovers = 0

    # -- what the leases and the presence tell -------------------------------------------
    def local(self, pbx: str, *, eligible: bool, held: bool) -> None:
        """This instance's own lease for ``pbx``: may it lead (AMI up), does it hold."""
        (self._reach.add if eligible else self._reach.discard)(pbx)
        self.held(pbx, held)

    def held(self, pbx: str, held: bool) -> None:
        """The lease for ``pbx`` was taken or lost, or an attempt to take it failed
        (told at once, not on the next turn, so the next lease of this instance counts
        it)."""
        self._taking.discard(pbx)
        if held:
            if pbx not in self._holds:
                self._took_at = self._clock()
            self._holds.add(pbx)
            self._unled_since.pop(pbx, None)
        else:
            self._holds.discard(pbx)
            if self._handing == pbx:
                self._handing = None

    def forget(self, pbx: str) -> None:
        """The lease for ``pbx`` stopped (clean shutdown)."""
        self.local(pbx, eligible=False, held=False)

    def see(self, peers: Iterable[Peer]) -> None:
        """The live instances, as the presence read them (this one is skipped)."""
        now = self._clock()
        self._peers = tuple(peer for peer in peers if peer.owner != self.owner)
        self._views += 1
        self._seen_at = now

    def me(self) -> Peer:
        """What this instance announces."""
        return Peer(self.owner, frozenset(self._reach), frozenset(self._holds))

    def handed_over(self, pbx: str) -> None:
        """The lease for ``pbx`` was released to spread the load: the next may go one
        TTL from now."""
        self._handed_at = self._clock()
        self.handovers += 1
        self.held(pbx, False)

    # -- the decision ----------------------------------------------------------------------
    def decide(self, pbx: str) -> Verdict:
        """What the lease for ``pbx`` should do on this turn."""
        now = self._clock()
        peers = self._view(now)
        if pbx in self._holds:
            return Verdict.HAND_OVER if self._to_hand_over(now, peers) == pbx else Verdict.KEEP
        if pbx not in self._reach:
            return Verdict.WAIT  # the lease does not try anyway (AMI down)
        if peers is None:
            return Verdict.TAKE
        if any(pbx in peer.holds for peer in peers):
            self._unled_since.pop(pbx, None)
            return Verdict.WAIT
        if self._views < self.settle_views:
            return Verdict.WAIT
        since = self._unled_since.setdefault(pbx, now)
        if now - since >= self.patience_s:
            return self._take(pbx)
        rivals = [peer for peer in peers if pbx in peer.reach]
        if not rivals:
            return self._take(pbx)
        mine = len(self._holds | self._taking)
        if any(len(peer.holds) < mine for peer in rivals):
            return Verdict.WAIT
        return self._take(pbx)

    def _take(self, pbx: str) -> Verdict:
        self._taking.add(pbx)
        return Verdict.TAKE

    def _view(self, now: float) -> tuple[Peer, ...] | None:
        """The others, or None when the last view is older than a TTL (blind)."""
        if self._seen_at is None or now - self._seen_at > self.ttl_s:
            return None
        return self._peers

    def _to_hand_over(self, now: float, peers: tuple[Peer, ...] | None) -> str | None:
        """The one PBX to give up now, if any: held, reachable by a peer with at least
        two leases fewer; the same one as last turn while it still qualifies (the
        outbox may take a few turns to drain)."""
        if peers is None:
            return None
        # A TTL after the last move of ours, in or out: the others' announcements
        # (a renewal old) have caught up with it by then.
        for moved_at in (self._handed_at, self._took_at):
            if moved_at is not None and now - moved_at < self.ttl_s:
                return None
        everyone = (self.me(), *peers)
        reached = set().union(*(peer.reach for peer in everyone))
        if reached - set().union(*(peer.holds for peer in everyone)):
            return None  # one move at a time: a lease is being taken somewhere
        mine = len(self._holds)
        lightest: dict[str, int] = {}
        for taker in peers:
            load = len(taker.holds)
            if load > mine - 2 or not self._first_to_give(taker, peers):
                continue
            for pbx in self._holds & self._reach & taker.reach:
                lightest[pbx] = min(load, lightest.get(pbx, load))
        if not lightest:
            self._handing = None
            return None
        if self._handing not in lightest:
            self._handing = min(lightest, key=lambda pbx: (lightest[pbx], pbx))
        return self._handing

    def _first_to_give(self, taker: Peer, peers: tuple[Peer, ...]) -> bool:
        """Whether this instance is the one to give ``taker`` a lease: of all that
        could (two leases more, a PBX it can reach), the most loaded, the first by name
        among equals. Two instances never both hand a lease to the same newcomer."""
        me = self.me()
        givers = [me] + [
            peer
            for peer in peers
            if peer.owner != taker.owner
            and len(peer.holds) >= len(taker.holds) + 2
            and peer.holds & peer.reach & taker.reach
        ]
        first = min(givers, key=lambda peer: (-len(peer.holds), peer.owner))
        return first.owner == self.owner
