"""The route service: from Asterisk's question to a decision, inside the time budget.

It joins the pure pieces (normalisation, the rule engine) to the I/O ones (the
customer lookup, the interaction record, the call data) and owns the one promise
callers care about: an answer within the budget. The customer lookup is the only
thing awaited on the caller's path and it is cut off at the lookup budget; whatever
goes wrong there (database down, slow, locked, a bug) routes the call to its number's
default queue instead. The wait ends at the deadline whatever the lookup's own cleanup
needs, and after repeated failures a circuit breaker skips the lookup altogether
(:mod:`cti.lookup`, :mod:`cti.breaker`). Records are handed to background writers,
never awaited.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from cti.breaker import CircuitBreaker
from cti.calldata.document import CallDocument, new_document
from cti.calldata.history import HistorySink, history_record
from cti.lookup import CustomerLookup, FindCustomer
from cti.routing.engine import decide, fail_open
from cti.routing.model import ACCOUNT_NUMBER, CallFacts, Customer, Decision
from cti.routing.phone import CallerNumber, normalize
from cti.routing.table import RoutingTable

log = structlog.get_logger(__name__)


class Sink(Protocol):
    def submit(self, item: Any) -> bool: ...


@dataclass(frozen=True, slots=True)
class RouteRequest:
    channel: str
    uniqueid: str
    ani: str
    dnis: str
    ivr: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RouteOutcome:
    call_id: str
    request: RouteRequest
    caller: CallerNumber
    customer: Customer | None
    decision: Decision
    routed_at: datetime
    decision_us: int
    fail_open_reason: str | None


class Router:
    def __init__(
        self,
        *,
        table: Callable[[], RoutingTable],
        find_customer: FindCustomer,
        default_queue: str,
        region: str,
        lookup_budget_s: float,
        interactions: Sink,
        call_data: Sink,
        history: HistorySink | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        new_call_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        on_routed: Callable[[RouteOutcome], None] | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._table = table
        self.lookup = CustomerLookup(find_customer, budget_s=lookup_budget_s, breaker=breaker)
        self._default_queue = default_queue
        self._region = region
        self._interactions = interactions
        self._call_data = call_data
        self._history = history
        self._clock = clock
        self._new_call_id = new_call_id
        self._on_routed = on_routed  # metrics: must be quick and must not raise
        self.routed = 0
        self.failed_open = 0

    async def route(
        self, request: RouteRequest, *, lookup_budget_s: float | None = None
    ) -> RouteOutcome:
        """Decide where the call goes; ``lookup_budget_s``: what is left of the customer
        lookup's budget when the caller has already waited (``attach``)."""
        started = time.perf_counter()
        call_id = self._new_call_id()
        now = self._clock()
        caller = normalize(request.ani, self._region)
        table = self._table()
        typed = request.ivr.get("account", "")
        account = typed if ACCOUNT_NUMBER.match(typed) else None
        customer, reason = await self._lookup(caller.e164, account, call_id, lookup_budget_s)
        if reason is None and not table.loaded:
            reason = "no-routing-plan"
        facts = CallFacts(
            caller, request.dnis, table.number(request.dnis), customer, now, request.ivr
        )
        if reason is None:
            decision = decide(facts, table.rules, self._default_queue)
        else:
            decision = fail_open(facts, self._default_queue)
            self.failed_open += 1
        elapsed_us = int((time.perf_counter() - started) * 1_000_000)
        outcome = RouteOutcome(
            call_id, request, caller, customer, decision, now, elapsed_us, reason
        )
        self.routed += 1
        if self._on_routed is not None:
            self._on_routed(outcome)
        self._interactions.submit(outcome)
        document = call_document(outcome)
        self._call_data.submit(document)
        if self._history is not None:  # version 1 in PostgreSQL too, off the call path
            self._history.submit(history_record(document, "route", now))
        log.info(
            "call routed",
            call_id=call_id,
            channel=request.channel,
            ani=caller.e164 or caller.raw,
            dnis=request.dnis,
            customer_id=decision.customer_id,
            tier=decision.tier,
            route=decision.route.value,
            queue=decision.queue,
            priority=decision.priority,
            rule=decision.rule,
            fail_open=reason,
            decision_us=elapsed_us,
        )
        return outcome

    async def _lookup(
        self, e164: str | None, account: str | None, call_id: str, budget_s: float | None
    ) -> tuple[Customer | None, str | None]:
        if e164 is None and account is None:
            return None, None
        return await self.lookup.find(e164, account, call_id, budget_s)


def call_document(outcome: RouteOutcome) -> CallDocument:
    """The call data the screen pop starts from (version 1)."""
    return new_document(
        call_id=outcome.call_id,
        created_at=outcome.routed_at,
        channel=outcome.request.channel,
        uniqueid=outcome.request.uniqueid,
        ani=outcome.caller.e164 or outcome.caller.raw,
        dnis=outcome.request.dnis,
        customer=outcome.customer,
        decision=outcome.decision,
        fail_open=outcome.fail_open_reason,
        ivr=outcome.request.ivr,
    )
