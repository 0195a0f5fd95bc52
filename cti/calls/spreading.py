"""One instance's leases spread over the instances: the rule and the presence together.

One :class:`Spreading` per process, one :class:`Seat` per PBX lease (hand it to
``Leadership(..., spread=spreading.seat(pbx))``). On a lease's turn its seat tells the
rule what the lease sees (AMI up, held), brings the view of the others up to date
(one announcement per renewal interval for the whole instance, whichever lease comes
first) and asks the rule (:mod:`cti.calls.spread`) what to do. When the last lease of
the instance stops, the instance withdraws its announcement, so the others take its
PBXes without waiting for it to expire.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from redis.exceptions import RedisError

from cti.calls.presence import Presence
from cti.calls.spread import SpreadRule, Verdict

log = structlog.get_logger(__name__)


class Spreading:
    def __init__(
        self,
        presence: Presence,
        owner: str,
        *,
        ttl_s: float = 5.0,
        renew_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._presence = presence
        self.owner = owner
        self._ttl_s = ttl_s
        self._renew_s = renew_s
        self._clock = clock
        # Settling for three views (two renewal intervals): instances started together
        # announce all they can reach before any of them takes a lease.
        self.rule = SpreadRule(owner, ttl_s=ttl_s, clock=clock, settle_views=3)
        self._synced_at: float | None = None
        self._syncing = False
        self._again = False
        self._seats: set[str] = set()
        self.sync_failures = 0

    def seat(self, pbx: str) -> Seat:
        """The spreading as the lease for ``pbx`` sees it."""
        self._seats.add(pbx)
        return Seat(self, pbx)

    async def sync(self, *, now: bool = False) -> None:
        """Announce ourselves and read the others, at most about once a renewal
        interval (``now``: at once, or right after the announcement under way, which
        may say what is no longer so). A failure keeps the old view: the rule turns
        blind once it is a TTL old, and every lease then takes as if alone."""
        at = self._clock()
        if self._syncing:
            self._again = self._again or now
            return  # another lease is at it (a slow Redis must not hold up renewals)
        if not now and self._synced_at is not None and at - self._synced_at < self._renew_s / 2:
            return
        self._syncing = True
        try:
            while True:
                self._again = False
                try:
                    peers = await self._presence.announce(self.rule.me(), self._ttl_s)
                except (RedisError, OSError) as exc:
                    self.sync_failures += 1
                    log.warning("instance announcement failed", error=repr(exc))
                    return
                self._synced_at = at
                self.rule.see(peers)
                if not self._again:
                    return
                at = self._clock()
        finally:
            self._syncing = False

    async def leave(self, pbx: str) -> None:
        self.rule.forget(pbx)
        self._seats.discard(pbx)
        if self._seats:
            return
        try:
            await self._presence.withdraw(self.owner)
        except (RedisError, OSError) as exc:
            log.warning("instance announcement not withdrawn; it expires", error=repr(exc))


class Seat:
    """What a :class:`~cti.calls.lease.Lease` asks (``LeaseSpread``)."""

    def __init__(self, spreading: Spreading, pbx: str) -> None:
        self._spreading = spreading
        self.pbx = pbx

    async def verdict(self, *, eligible: bool, held: bool) -> Verdict:
        rule = self._spreading.rule
        rule.local(self.pbx, eligible=eligible, held=held)
        await self._spreading.sync()
        return rule.decide(self.pbx)

    def held(self, held: bool) -> None:
        self._spreading.rule.held(self.pbx, held)

    async def handed_over(self) -> None:
        """Released to spread the load: say so at once, so the instance it is meant
        for sees the PBX unled on its next turn rather than a renewal later."""
        self._spreading.rule.handed_over(self.pbx)
        await self._spreading.sync(now=True)

    async def leave(self) -> None:
        await self._spreading.leave(self.pbx)
