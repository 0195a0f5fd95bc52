"""The customer lookup as the router awaits it: inside the deadline, behind the breaker.

Nothing on the caller's path waits past the deadline: the lookup runs in a task of its
own and the caller waits for that task only until the deadline. When it passes, the
task is cancelled and left to clean up (terminate its connection) by itself; this
object owns those tasks, reads their outcome, and cancels what is left at shutdown. The
breaker (:mod:`cti.breaker`, pure) spares the database, and the callers, lookups that
are known to fail; :class:`BreakerProbe` here is what closes it again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from cti.breaker import BreakerState, CircuitBreaker
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
        self,
        e164: str | None,
        account: str | None,
        call_id: str,
        budget_s: float | None = None,
    ) -> tuple[Customer | None, str | None]:
        """(customer, None), or (None, why the call fails open).

        ``budget_s``: a shorter budget than the usual one, for a caller whose route has
        already spent some of it (``attach``); none left: no lookup at all (and no
        failure for the breaker to count: the database did nothing wrong)."""
        budget_s = self.budget_s if budget_s is None else min(budget_s, self.budget_s)
        if budget_s <= 0:
            return None, TIMEOUT
        breaker = self.breaker
        if breaker is not None and not breaker.allow():
            return None, BREAKER_OPEN
        task = asyncio.ensure_future(self._find(e164, account))
        self._inflight.add(task)
        task.add_done_callback(self._finished)
        try:
            done, _ = await asyncio.wait({task}, timeout=budget_s)
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
                budget_ms=round(budget_s * 1000),
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


def log_transitions(breaker: CircuitBreaker) -> None:
    """One log line per transition (not per call, not per failed probe)."""

    def changed(old: BreakerState, new: BreakerState) -> None:
        if new is BreakerState.OPEN and old is BreakerState.CLOSED:
            log.warning(
                "customer lookup breaker open; calls fail open without a lookup",
                failures=breaker.failures,
            )
        elif new is BreakerState.CLOSED:
            log.info("customer lookup breaker closed; lookups resume")

    breaker.listen(changed)


class BreakerProbe:
    """While the breaker is open, run ``probe`` when due; its answer closes the breaker.

    ``probe`` is cut off at ``timeout_s`` by a task of its own that is left to finish
    (the probe's cleanup must not delay the next one either).
    """

    def __init__(
        self,
        breaker: CircuitBreaker,
        probe: Callable[[], Awaitable[object]],
        *,
        timeout_s: float = 0.5,
    ) -> None:
        self._breaker = breaker
        self._probe = probe
        self._timeout_s = timeout_s
        self._opened = asyncio.Event()
        self._inflight: set[asyncio.Task[object]] = set()
        self.probes = 0
        breaker.listen(self._changed)
        if breaker.state is BreakerState.OPEN:
            self._opened.set()

    def _changed(self, _old: BreakerState, new: BreakerState) -> None:
        if new is BreakerState.OPEN:
            self._opened.set()

    async def run(self, stop: asyncio.Event) -> None:
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                if self._breaker.state is not BreakerState.OPEN:
                    self._opened.clear()
                    opened = asyncio.ensure_future(self._opened.wait())
                    await asyncio.wait({opened, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    opened.cancel()
                    continue
                delay = self._breaker.seconds_to_probe()
                if delay > 0:
                    await asyncio.wait({stopping}, timeout=delay)
                    continue
                await self.probe_once()
        finally:
            stopping.cancel()
            for task in list(self._inflight):
                task.cancel()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1):
                    await asyncio.gather(*self._inflight, return_exceptions=True)

    async def probe_once(self) -> bool:
        self._breaker.begin_probe()
        self.probes += 1
        task: asyncio.Task[object] = asyncio.ensure_future(self._probe())
        self._inflight.add(task)
        task.add_done_callback(_retrieve(self._inflight))
        done, _ = await asyncio.wait({task}, timeout=self._timeout_s)
        if done and not task.cancelled() and task.exception() is None:
            self._breaker.probe_succeeded()
            return True
        task.cancel()  # its cleanup runs on in its own task
        self._breaker.probe_failed()
        return False


def _retrieve(owner: set[asyncio.Task[object]]) -> Callable[[asyncio.Task[object]], None]:
    """Done callback: forget the task and read its outcome (no 'never retrieved')."""

    def done(task: asyncio.Task[object]) -> None:
        owner.discard(task)
        if not task.cancelled():
            task.exception()

    return done
