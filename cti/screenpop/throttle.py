"""Login throttling: a few failures free, then exponential backoff, shared by every instance.

Two counters gate a login: one per **user name** (guessing one agent's password from
many addresses) and one per **client address** (one address trying many names). Each
counts *failures*; the ``free_failures``-th and every later failure locks its key for
``base_s × 2^k`` (capped), and a login to a locked key is answered 429 with
``Retry-After`` before the password is checked, so a flood costs no scrypt. A success
clears the user name's counter (not the address's: an attacker holding one valid
account must not be able to wash an address clean between guesses).

**Lockout as denial of service.** A per-name lock that applied to every address would
let anyone lock any agent out by guessing from anywhere. So the name's lock does not
apply to an address from which that agent has logged in successfully recently (a
"known address", remembered for :data:`KNOWN_ADDRESS_TTL_S`): an agent at their usual
desk logs in during a flood on their name; a first login from a new address waits out
the lock like the attacker. Guessing stays bounded: an unknown address gets one guess
per ``cap_s`` per name once the lock is at its cap, and every address its own address
counter (which a known address does not escape).

The policy (:class:`ThrottlePolicy`, :class:`Counter`) is plain Python with the clock
passed in; :class:`LoginThrottle` keeps the counters in Redis (a hash per key with a
TTL) and updates each with one Lua script, so concurrent instances cannot lose a count.
The script only applies the schedule the policy computed (its delays are arguments).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as redis
import structlog
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)

KEY_PREFIX = "cti:login"
#: How long a successful (user, address) pair exempts the address from the user's lock.
KNOWN_ADDRESS_TTL_S = 30 * 24 * 3600
MAX_KNOWN_ADDRESSES = 20
#: Throttle look-ups in flight at once; the rest wait their turn (each is one Redis
#: round trip). A login asks before it takes a place in the password-check queue, so a
#: flood of concurrent logins reaches here unbounded: without this it took every
#: connection of the Redis pool and the look-ups failed open ("not throttling").
CHECKS_AT_ONCE = 8


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    free_failures: int = 5
    base_s: float = 1.0
    cap_s: float = 300.0
    #: A counter with no failure for this long is forgotten (the Redis key's TTL).
    forget_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.free_failures < 0 or self.base_s <= 0 or not 0 < self.cap_s <= 7 * 86400:
            raise ValueError("throttle: free_failures >= 0, base_s > 0, 0 < cap_s <= 7 days")

    def delay_after(self, failures: int) -> float:
        """How long a key stays locked after its ``failures``-th failure: not at all
        before the ``free_failures``-th, then ``base_s``, doubling to ``cap_s``."""
        over = failures - self.free_failures
        if over < 0:
            return 0.0
        return min(self.cap_s, self.base_s * 2 ** min(over, 62))

    def schedule_ms(self) -> list[int]:
        """``delay_after(1..k)`` in milliseconds up to the first at the cap; the script
        uses the last entry for every later failure."""
        out: list[int] = []
        failures = 1
        while True:
            delay = self.delay_after(failures)
            out.append(math.ceil(delay * 1000))
            if delay >= self.cap_s or failures > self.free_failures + 62:
                return out
            failures += 1


USER_POLICY = ThrottlePolicy(free_failures=5, base_s=1.0, cap_s=300.0)
#: An office behind one NAT shares an address: more slack, the same ceiling.
ADDRESS_POLICY = ThrottlePolicy(free_failures=20, base_s=1.0, cap_s=300.0)


@dataclass(slots=True)
class Counter:
    """One key's state, as the Lua script keeps it (the reference the tests check it by)."""

    failures: int = 0
    locked_until: float = 0.0

    def retry_after(self, now: float) -> float:
        return max(0.0, self.locked_until - now)

    def fail(self, policy: ThrottlePolicy, now: float) -> None:
        self.failures += 1
        self.locked_until = now + policy.delay_after(self.failures)


class Throttled(Exception):
    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"retry after {retry_after_s:.1f} s")
        self.retry_after_s = retry_after_s


# KEYS[1] user counter, KEYS[2] address counter, KEYS[3] the user's known addresses;
# ARGV[1] now (ms), ARGV[2] address. Returns the longer wait in ms (0: go ahead).
_CHECK = """
local now = tonumber(ARGV[1])
local wait = 0
local addr_until = tonumber(redis.call('HGET', KEYS[2], 'until') or '0')
if addr_until > now then wait = addr_until - now end
if redis.call('SISMEMBER', KEYS[3], ARGV[2]) == 0 then
  local user_until = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
  if user_until - now > wait then wait = user_until - now end
end
return wait
"""

# KEYS[1] a counter; ARGV[1] now (ms), ARGV[2] forget (ms), ARGV[3..] the schedule (ms).
# Returns how long the key is now locked (ms).
_FAIL = """
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
local steps = #ARGV - 2
local delay = tonumber(ARGV[2 + math.min(n, steps)])
local locked_until = tonumber(ARGV[1]) + delay
redis.call('HSET', KEYS[1], 'until', locked_until)
redis.call('PEXPIRE', KEYS[1], math.max(tonumber(ARGV[2]), delay))
return delay
"""


class LoginThrottle:
    """The two counters and the known addresses in Redis, for every instance."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        user_policy: ThrottlePolicy = USER_POLICY,
        address_policy: ThrottlePolicy = ADDRESS_POLICY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = client
        self._user = user_policy
        self._address = address_policy
        self._clock = clock
        self._check = client.register_script(_CHECK)
        self._fail = client.register_script(_FAIL)
        self._checking = asyncio.Semaphore(CHECKS_AT_ONCE)

    @staticmethod
    def user_key(username: str) -> str:
        return f"{KEY_PREFIX}:user:{username}"

    @staticmethod
    def address_key(address: str) -> str:
        return f"{KEY_PREFIX}:addr:{address}"

    @staticmethod
    def known_key(username: str) -> str:
        return f"{KEY_PREFIX}:known:{username}"

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def check(self, username: str, address: str) -> None:
        """:class:`Throttled` if this login must wait; nothing is counted here.

        With Redis away the login goes ahead (logged): logging in must keep working
        through a Redis outage as it does through a PostgreSQL one, and the bounded
        password-check queue still caps guesses at a few dozen a second."""
        keys = [self.user_key(username), self.address_key(address), self.known_key(username)]
        try:
            async with self._checking:
                wait_ms = int(await self._check(keys=keys, args=[self._now_ms(), address]))
        except (RedisError, OSError) as exc:
            log.warning("login throttle unreadable; not throttling", error=repr(exc))
            return
        if wait_ms > 0:
            raise Throttled(wait_ms / 1000)

    async def failed(self, username: str, address: str) -> None:
        now = self._now_ms()
        try:
            for key, policy in (
                (self.user_key(username), self._user),
                (self.address_key(address), self._address),
            ):
                args = [now, int(policy.forget_s * 1000), *policy.schedule_ms()]
                await self._fail(keys=[key], args=args)
        except (RedisError, OSError) as exc:
            log.warning("login failure not counted: Redis unavailable", error=repr(exc))

    async def succeeded(self, username: str, address: str) -> None:
        try:
            await self._succeeded(username, address)
        except (RedisError, OSError) as exc:
            log.warning("login success not recorded: Redis unavailable", error=repr(exc))

    async def _succeeded(self, username: str, address: str) -> None:
        known = self.known_key(username)
        if await self._redis.scard(known) >= MAX_KNOWN_ADDRESSES:
            await self._redis.spop(known)  # bounded; an evicted address is merely unknown
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.user_key(username))
            pipe.sadd(known, address)
            pipe.expire(known, KNOWN_ADDRESS_TTL_S)
            await pipe.execute()
