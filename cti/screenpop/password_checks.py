"""The password-check queue: at most ``concurrency`` scrypt checks at once, and at most
``max_waiting`` logins waiting for one; the next is refused at once (503, ``busy``).

Why bounded: each check takes ~50 ms and 16 MiB of a thread, so an unbounded queue
turns a burst of 200 logins into a 7 s wait for everyone, the legitimate agent
included. Refusing the excess at once keeps the wait of an admitted login to about
``(concurrency + max_waiting) / concurrency`` checks, and tells the rest when to retry.

**One address, or one name, holds at most ``max_share`` places.** The throttle is asked
before a place is taken (a throttled login costs none), but a burst of concurrent
guesses all pass it before the first of them has failed: 200 wrong-password logins at
once from one address took every place and the agent at another desk was answered
``busy``. So each client address, and each user name, holds at most ``max_share`` of the
places (half of them by default); the rest stay for everyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from cti.screenpop.auth import verify_password

#: Password hashes computed at once (scrypt takes 16 MiB and ~50 ms of a thread each).
CONCURRENCY = 4
#: Logins waiting for a check beyond those running; the next gets 503 ``busy``.
MAX_WAITING = 16
#: Places one client address (or one user name) may hold at once; None: half of them.
MAX_SHARE: int | None = None
#: What a refused login is told to wait (a queue this short drains well within it).
RETRY_AFTER_S = 1


class Busy(Exception):
    """The queue is full: try again in :data:`RETRY_AFTER_S` seconds."""


class PasswordChecks:
    def __init__(
        self,
        concurrency: int = CONCURRENCY,
        max_waiting: int = MAX_WAITING,
        max_share: int | None = MAX_SHARE,
    ) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self.capacity = concurrency + max_waiting
        self.max_share = max_share if max_share is not None else max(1, self.capacity // 2)
        self._held: dict[tuple[str, str], int] = {}  # ("address"|"user", value) → places
        self.admitted = 0  # logins holding a place now (waiting or checking)
        self.peak = 0
        self.checks_run = 0
        self.refused = 0

    @contextlib.asynccontextmanager
    async def place(self, address: str, username: str) -> AsyncIterator[None]:
        """A place in the queue for one login from ``address`` for ``username``, held
        while it is handled (its database look-up and its throttle update too, so a
        burst cannot pile up there either); :class:`Busy` at once if there is none, or
        if the address or the name already holds its share."""
        keys = (("address", address), ("user", username))
        # No await between the check and the count: two logins cannot take the last place.
        if self.admitted >= self.capacity or any(
            self._held.get(key, 0) >= self.max_share for key in keys
        ):
            self.refused += 1
            raise Busy
        self.admitted += 1
        self.peak = max(self.peak, self.admitted)
        for key in keys:
            self._held[key] = self._held.get(key, 0) + 1
        try:
            yield
        finally:
            self.admitted -= 1
            for key in keys:
                left = self._held[key] - 1
                if left:
                    self._held[key] = left
                else:
                    del self._held[key]

    async def verify(self, password: str, stored: str) -> bool:
        """Check ``password`` (holding a :meth:`place`) once one of the slots is free."""
        async with self._slots:
            self.checks_run += 1
            return await asyncio.to_thread(verify_password, password, stored)
