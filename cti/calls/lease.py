"""Which daemon instance follows AMI for everyone: a lease in Redis.

Every instance connects to AMI and keeps its own call model (so a standby knows every
call the moment it takes over); only the lease holder *publishes*. The lease is one key
``SET NX PX``; the holder renews it every ``renew_s``; when the holder dies the key
expires after ``ttl_s`` and the next instance to try gets it. Renewal and release are
compare-and-set scripts, so an instance never extends or deletes a lease it lost, and
the publisher's script checks the owner again on every write (a fencing check), so a
paused ex-leader that wakes up cannot publish after someone else took over.

If Redis cannot be reached the holder keeps the lease only until it would have expired
in Redis anyway (``ttl_s`` after the last successful renewal, less a margin), then gives
it up: two instances never both believe they hold it for longer than clock drift.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as redis
import structlog
from redis.exceptions import RedisError

from cti.calls.spread import Verdict
from cti.pbx import DEFAULT_PBX

log = structlog.get_logger(__name__)

LEASE_KEY = "cti:ami:leader"


def lease_key(pbx: str) -> str:
    """The lease of one PBX's events (:mod:`cti.pbx`): the single PBX of a deployment
    without ``CTI_PBXES`` keeps the key it always had."""
    return LEASE_KEY if pbx == DEFAULT_PBX else f"{LEASE_KEY}:{pbx}"


_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaseSpread(Protocol):
    """How the instances' leases spread (:mod:`cti.calls.spreading`'s ``Seat``): asked
    on every turn of a lease whether to take, wait, keep or hand over."""

    async def verdict(self, *, eligible: bool, held: bool) -> Verdict: ...

    def held(self, held: bool) -> None: ...

    async def handed_over(self) -> None: ...

    async def leave(self) -> None: ...


def instance_id() -> str:
    """Unique per process, readable in logs and in the lease key's value."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    def __init__(
        self,
        client: redis.Redis,
        owner: str,
        *,
        key: str = LEASE_KEY,
        ttl_s: float = 5.0,
        renew_s: float = 1.0,
        on_change: Callable[[bool], None] | None = None,
        eligible: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.monotonic,
        spread: LeaseSpread | None = None,
        drain: Callable[[bool], bool] = lambda _start: True,
    ) -> None:
        """``spread`` (None: this lease takes whenever it can, as with a single PBX)
        decides whether to take the lease or leave it to another instance, and when to
        hand it over; ``drain(True)`` asks the holder to stop adding to its outbox and
        says whether the outbox is empty (only then is the lease released),
        ``drain(False)`` resumes when the hand-over is called off."""
        if renew_s * 2 >= ttl_s:
            raise ValueError("renew_s must be well under half of ttl_s")
        self._redis = client
        self.owner = owner
        self.key = key
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        self._on_change = on_change
        self._eligible = eligible
        self._clock = clock
        self._ineligible_since: float | None = None
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self.held = False
        self._valid_until = 0.0  # monotonic: when the lease surely expired in Redis
        self.changes = 0
        self._spread = spread
        self._drain = drain
        self._draining = False

    def _set(self, held: bool) -> None:
        if held == self.held:
            return
        self.held = held
        self.changes += 1
        self._draining = False
        log.info(
            "ami leadership " + ("acquired" if held else "lost"), owner=self.owner, key=self.key
        )
        if self._spread is not None:
            self._spread.held(held)
        if self._on_change is not None:
            self._on_change(held)

    async def try_once(self) -> bool:
        """Acquire or renew; return whether we hold the lease now."""
        ttl_ms = int(self.ttl_s * 1000)
        started = self._clock()
        try:
            if self.held:
                ok = bool(await self._renew(keys=[self.key], args=[self.owner, ttl_ms]))
            else:
                ok = bool(await self._redis.set(self.key, self.owner, nx=True, px=ttl_ms))
        except (RedisError, OSError) as exc:
            if self.held and self._clock() >= self._valid_until:
                log.warning("ami lease not renewed in time; giving it up", error=repr(exc))
                self._set(False)
            return self.held
        if ok:
            # Counted from before the round trip: Redis set its expiry after we sent.
            self._valid_until = started + self.ttl_s * 0.8
        self._set(ok)
        return ok

    async def step(self) -> None:
        """One turn of :meth:`run`. Only an eligible instance (one whose AMI connection is
        up and resynced) takes the lease; a holder that stays ineligible for a whole TTL
        hands it over, so an instance that lost Asterisk does not keep everyone blind."""
        now = self._clock()
        eligible = self._eligible()
        if eligible:
            self._ineligible_since = None
        elif self._ineligible_since is None:
            self._ineligible_since = now
        ineligible_for = 0.0 if self._ineligible_since is None else now - self._ineligible_since
        verdict = Verdict.TAKE
        if self._spread is not None:  # told on every turn: the others see what we reach
            verdict = await self._spread.verdict(eligible=eligible, held=self.held)
        if self._ineligible_since is None or (self.held and ineligible_for < self.ttl_s):
            if self.held and verdict is Verdict.HAND_OVER:
                await self._hand_over()
            elif self.held or verdict is Verdict.TAKE:
                if self._draining:
                    self._draining = False
                    self._drain(False)
                await self.try_once()
                if self._spread is not None and not self.held:
                    self._spread.held(False)  # tried and failed: not ours
        elif self.held:
            log.warning("ami down on the leader; handing the lease over")
            await self.release()

    async def _hand_over(self) -> None:
        """Spread the load: once the outbox is empty, release (the next leader has
        nothing of ours to replay); until then keep renewing."""
        self._draining = True
        if not self._drain(True):
            await self.try_once()
            return
        log.info("handing the lease over to spread the PBXes", owner=self.owner, key=self.key)
        await self.release()
        assert self._spread is not None
        await self._spread.handed_over()

    async def run(self, stop: asyncio.Event) -> None:
        """Keep trying (standby) or renewing (leader) until ``stop``; then release."""
        try:
            while not stop.is_set():
                await self.step()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.renew_s)
        finally:
            await self.release()
            if self._spread is not None:
                await self._spread.leave()

    async def release(self) -> None:
        """Give the lease up at once (clean shutdown), so a standby need not wait out the
        TTL."""
        if not self.held:
            return
        self._set(False)
        with contextlib.suppress(RedisError, OSError):
            await self._release(keys=[self.key], args=[self.owner])
