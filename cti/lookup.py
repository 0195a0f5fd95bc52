"""The customer lookup as the router awaits it: inside the deadline, behind the breaker.

Nothing on the caller's path waits past the deadline: the lookup runs in a task of its
own and the caller waits for that task only until the deadline. When it passes, the
task is cancelled and left to clean up (terminate its connection) by itself; this
object owns those tasks, reads their outcome, and cancels what is left at shutdown. The
breaker (:mod:`cti.breaker`) spares the database, and the callers, lookups that are
known to fail.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from cti.breaker import CircuitBreaker
from cti.routing.model import Customer

log = structlog.get_logger(__name__)

FindCustomer = Callable[[str | None, str | None], Awaitable[Customer | None]]

#: fail-open reasons (``RouteOutcome.fail_open_reason``); the rule is ``fail-open``.
TIMEOUT, ERROR, BREAKER_OPEN = "lookup-timeout", "lookup-error", "breaker-open"


class CustomerLookup:
    def __init__(
        self,
        find_customer: FindCustomer,
        *,
        budget_s: float,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._find = find_customer
        self.budget_s = budget_s
        self.breaker = breaker
        self._inflight: set[asyncio.Task[Customer | None]] = set()
        self._abandoned: set[asyncio.Task[Customer | None]] = set()
        self.abandoned = 0  # lookups cut off at the deadline, left to clean up

    async def find(
        self, e164: str | None, account: str | None, call_id: str
    ) -> tuple[Customer | None, str | None]:
        """(customer, None), or (None, why the call fails open)."""
        breaker = self.breaker
        if breaker is not None and not breaker.allow():
            return None, BREAKER_OPEN
        task = asyncio.ensure_future(self._find(e164, account))
        self._inflight.add(task)
        task.add_done_callback(self._finished)
        try:
            done, _ = await asyncio.wait({task}, timeout=self.budget_s)
        except asyncio.CancelledError:  # the caller went away: so does its lookup
            task.cancel()
            raise
        if not done:
            task.cancel()  # it terminates its connection in its own time, not the caller's
            self._abandoned.add(task)
            self.abandoned += 1
            if breaker is not None:
                breaker.record_failure()
            log.warning(
                "customer lookup timed out; failing open",
                call_id=call_id,
                budget_ms=self.budget_s * 1000,
            )
            return None, TIMEOUT
        try:
            customer = task.result()
        except Exception as exc:  # any failure of the lookup must still route the call
            if breaker is not None:
                breaker.record_failure()
            log.warning("customer lookup failed; failing open", call_id=call_id, error=repr(exc))
            return None, ERROR
        if breaker is not None:
            breaker.record_success()
        return customer, None

    def _finished(self, task: asyncio.Task[Customer | None]) -> None:
        self._inflight.discard(task)
        abandoned = task in self._abandoned
        self._abandoned.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # read it always; the caller has logged it unless abandoned
        if exc is not None and abandoned:
            log.debug("abandoned customer lookup ended", error=repr(exc))

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def aclose(self, grace_s: float = 1.0) -> None:
        """Cancel the lookups still running (cut off ones cleaning up) and wait a little."""
        for task in list(self._inflight):
            task.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                await asyncio.gather(*self._inflight, return_exceptions=True)
