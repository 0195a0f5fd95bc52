"""The password-check queue: at most ``concurrency`` scrypt checks at once, and at most
``max_waiting`` logins waiting for one; the next is refused at once (503, ``busy``).

Why bounded: each check takes ~50 ms and 16 MiB of a thread, so an unbounded queue
turns a burst of 200 logins into a 7 s wait for everyone, the legitimate agent
included. Refusing the excess at once keeps the wait of an admitted login to about
``(concurrency + max_waiting) / concurrency`` checks, and tells the rest when to retry.
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
#: What a refused login is told to wait (a queue this short drains well within it).
RETRY_AFTER_S = 1


class Busy(Exception):
    """The queue is full: try again in :data:`RETRY_AFTER_S` seconds."""


class PasswordChecks:
    def __init__(self, concurrency: int = CONCURRENCY, max_waiting: int = MAX_WAITING) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self.capacity = concurrency + max_waiting
        self.admitted = 0  # logins holding a place now (waiting or checking)
        self.peak = 0
        self.checks_run = 0
        self.refused = 0

    @contextlib.asynccontextmanager
    async def place(self) -> AsyncIterator[None]:
        """A place in the queue for one login, held while it is handled (its throttle
        and database look-ups too, so a burst cannot pile up there either); :class:`Busy`
        at once if there is none."""
        # No await between the check and the count: two logins cannot take the last place.
        if self.admitted >= self.capacity:
            self.refused += 1
            raise Busy
        self.admitted += 1
        self.peak = max(self.peak, self.admitted)
        try:
            yield
        finally:
            self.admitted -= 1

    async def verify(self, password: str, stored: str) -> bool:
        """Check ``password`` (holding a :meth:`place`) once one of the slots is free."""
        async with self._slots:
            self.checks_run += 1
            return await asyncio.to_thread(verify_password, password, stored)
