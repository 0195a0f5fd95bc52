"""The attach service: a call that crossed from another of our PBXes keeps its identity.

The FastAGI ``attach`` script (:mod:`cti.agi.attach`) asks :meth:`Attacher.attach`
with what the receiving PBX knows: the channel the call came in on, and the call id and
queue its ``from-pbx`` context read from ``X-CTI-Call-ID`` and ``${EXTEN}``. The claim is
judged first (:func:`cti.routing.attach.judge_claim`: only an inter-PBX trunk of a PBX
we follow is believed, only a UUID), then the call is looked up: its document in Redis
(one GET, never a write), or, when Redis is away or has lost it (a failover's
replication window), its latest version in PostgreSQL. A known call keeps its id, its
document, versions and notes (nothing is created or written to them) and gets this
PBX's queue and priority (:func:`cti.routing.attach.redecide`); the crossing goes on the
call's timeline as an ``attached`` event. Anything else is routed as a new call by the
router, as ``route`` would, with a new id.

The budget is the route's (``CTI_ROUTE_BUDGET_MS``), whatever happens: Redis gets up to
:data:`REDIS_SHARE` of it, PostgreSQL up to :data:`VERIFY_SHARE` from the start, and a
new route's customer lookup what is left of the router's own share (75 %). A store that does not
answer in its time counts as no answer: the call is routed as new (fail open), never
held. Each wait ends at its deadline whatever the store's own cleanup needs (the read
runs in a task of its own, left to finish, as :mod:`cti.lookup` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog

from cti.calldata.document import CallDocument
from cti.calls.events import CallEvent, fingerprint_prefix
from cti.pbx import Pbx
from cti.router import Router, RouteRequest, Sink
from cti.routing.attach import (
    AttachArgs,
    AttachOutcome,
    Claim,
    judge_claim,
    number_of_queue,
    redecide,
)
from cti.routing.model import Decision
from cti.routing.table import RoutingTable

log = structlog.get_logger(__name__)

#: Shares of the route budget: Redis's read, then PostgreSQL's (counted from the start).
REDIS_SHARE = 0.25
VERIFY_SHARE = 0.5

ReadDocument = Callable[[str], Awaitable[CallDocument | None]]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AttachRequest:
    channel: str
    uniqueid: str
    ani: str
    dnis: str  # what ``route`` would read as the DNIS: agi_dnid, else agi_extension
    args: AttachArgs
    receiving: str | None = None  # the PBX that asks, when known


@dataclass(frozen=True, slots=True)
class AttachResult:
    call_id: str
    decision: Decision
    outcome: AttachOutcome
    reason: str

    @property
    def attached(self) -> bool:
        return self.outcome is AttachOutcome.ATTACHED


class _Unanswered(Exception):
    """A store did not answer within its share of the budget (or failed)."""


class Attacher:
    def __init__(
        self,
        *,
        router: Router,
        table: Callable[[], RoutingTable],
        read_document: ReadDocument,
        read_history: ReadDocument | None,
        pbxes: Sequence[Pbx],
        default_queue: str,
        region: str,
        budget_s: float,
        timeline: Sink | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_attach: Callable[[AttachOutcome], None] | None = None,
    ) -> None:
        self._router = router
        self._table = table
        self._read_document = read_document
        self._read_history = read_history
        self._pbxes = {pbx.name: pbx for pbx in pbxes}
        self._default_queue = default_queue
        self._region = region
        self._budget_s = budget_s
        self._timeline = timeline
        self._clock = clock
        self._on_attach = on_attach  # metrics: must be quick and must not raise
        self._reads: set[asyncio.Task[Any]] = set()
        self.by_outcome: dict[AttachOutcome, int] = dict.fromkeys(AttachOutcome, 0)

    async def attach(self, request: AttachRequest) -> AttachResult:
        started = time.perf_counter()
        claim = judge_claim(request.channel, request.args, self._pbxes, request.receiving)
        if claim.outcome is not None:
            return await self._new_call(request, claim.outcome, claim.reason, started, claim)
        assert claim.call_id is not None
        document, outcome, reason = await self._known(claim.call_id, started)
        if document is None:
            return await self._new_call(request, outcome, reason, started, claim)
        now = self._clock()
        try:
            decision = redecide(
                document,
                request.args.queue,
                self._table(),
                default_queue=self._default_queue,
                region=self._region,
                now=now,
            )
        except (KeyError, TypeError, ValueError) as exc:  # a document not of our making
            reason = f"its document is unreadable: {exc!r}"[:200]
            return await self._new_call(request, AttachOutcome.UNVERIFIED, reason, started, claim)
        result = AttachResult(claim.call_id, decision, AttachOutcome.ATTACHED, reason)
        self._count(result.outcome)
        if self._timeline is not None:
            receiving = self._pbxes.get(request.receiving or "")
            self._timeline.submit(attached_event(request, claim, decision, now, receiving))
        log.info(
            "call attached",
            call_id=claim.call_id,
            channel=request.channel,
            from_pbx=claim.from_pbx,
            pbx=request.receiving,
            found_in=reason,
            customer_id=decision.customer_id,
            route=decision.route.value,
            queue=decision.queue,
            priority=decision.priority,
            rule=decision.rule,
            attach_us=int((time.perf_counter() - started) * 1_000_000),
        )
        return result

    async def _known(
        self, call_id: str, started: float
    ) -> tuple[CallDocument | None, AttachOutcome, str]:
        """(document, ATTACHED, where found), or (None, UNKNOWN | UNVERIFIED, why)."""
        redis_failed: str | None = None
        try:
            document = await self._within(self._read_document(call_id), started, REDIS_SHARE)
        except _Unanswered as exc:
            redis_failed, document = str(exc), None
        if document is not None:
            return document, AttachOutcome.ATTACHED, "redis"
        if self._read_history is None:
            if redis_failed is not None:
                return None, AttachOutcome.UNVERIFIED, f"redis: {redis_failed}"
            return None, AttachOutcome.UNKNOWN, "no such call in redis"
        try:
            document = await self._within(self._read_history(call_id), started, VERIFY_SHARE)
        except _Unanswered as exc:
            redis = f"redis: {redis_failed}" if redis_failed else "not in redis"
            return None, AttachOutcome.UNVERIFIED, f"{redis}; postgresql: {exc}"
        if document is not None:
            return document, AttachOutcome.ATTACHED, "postgresql"
        if redis_failed is not None:
            # PostgreSQL answered "no such call": that is an answer, Redis or not.
            return None, AttachOutcome.UNKNOWN, f"no such call (redis: {redis_failed})"
        return None, AttachOutcome.UNKNOWN, "no such call"

    async def _within(self, read: Awaitable[T], started: float, share: float) -> T:
        """``read``'s answer if it comes before ``share`` of the budget (from ``started``)
        has passed; else :class:`_Unanswered`, and the read is left to end by itself."""
        left = self._budget_s * share - (time.perf_counter() - started)
        task = asyncio.ensure_future(read)
        self._reads.add(task)
        task.add_done_callback(_forget(self._reads))
        if left <= 0:
            task.cancel()
            raise _Unanswered("no time left")
        try:
            done, _ = await asyncio.wait({task}, timeout=left)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            task.cancel()
            raise _Unanswered(f"no answer within {left * 1000:.0f} ms")
        try:
            return task.result()
        except Exception as exc:  # any failure of a store must still route the call
            raise _Unanswered(repr(exc)[:200]) from exc

    async def _new_call(
        self,
        request: AttachRequest,
        outcome: AttachOutcome,
        reason: str,
        started: float,
        claim: Claim,
    ) -> AttachResult:
        """Route the call as ``route`` would (a new id, its own document), as if dialled
        on the requested queue's number when ``queue=`` names a queue that has one (a
        queue name is no DNIS: ``route`` would send it to the default queue)."""
        left = self._router.lookup.budget_s - (time.perf_counter() - started)
        number = number_of_queue(self._table(), request.args.queue) if request.args.queue else None
        routed = await self._router.route(
            RouteRequest(
                channel=request.channel,
                uniqueid=request.uniqueid,
                ani=request.ani,
                dnis=number.dnis if number is not None else request.dnis,
            ),
            lookup_budget_s=max(left, 0.0),
        )
        self._count(outcome)
        # No id at all is how a call between PBXes that cti never routed arrives (a
        # direct call between sites): news, not a warning. Every other reason is.
        report = log.info if outcome is AttachOutcome.NO_ID else log.warning
        report(
            "call not attached; routed as a new call",
            outcome=outcome.value,
            reason=reason,
            call_id=routed.call_id,
            claimed_call_id=claim.call_id,
            channel=request.channel,
            from_pbx=claim.from_pbx,
            pbx=request.receiving,
        )
        return AttachResult(routed.call_id, routed.decision, outcome, reason)

    def _count(self, outcome: AttachOutcome) -> None:
        self.by_outcome[outcome] += 1
        if self._on_attach is not None:
            self._on_attach(outcome)

    async def aclose(self, grace_s: float = 1.0) -> None:
        """Cancel the reads still running (those cut off at their deadline) and wait a little."""
        for task in list(self._reads):
            task.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                await asyncio.gather(*self._reads, return_exceptions=True)


def attached_event(
    request: AttachRequest,
    claim: Claim,
    decision: Decision,
    now: datetime,
    receiving: Pbx | None = None,
) -> CallEvent:
    """The timeline's record of the crossing: under the call's key (its id), so the
    journey reads A's events, ``attached``, then B's. Its fingerprint is the receiving
    channel's (unique on its PBX; in that PBX's namespace when cti knows which PBX
    asked), so a retried write stores it once. It is no PBX's part of the call
    (:data:`cti.timeline.summary.NOT_A_PART`): the PBX that asked may be unknown."""
    assert claim.call_id is not None
    return CallEvent(
        kind="attached",
        call_key=claim.call_id,
        call_id=claim.call_id,
        linkedid=request.uniqueid,
        fingerprint=(
            f"{fingerprint_prefix(receiving)}attached|{request.channel}|{request.uniqueid}"
        ),
        at=now.timestamp(),
        pbx=receiving.name if receiving is not None else None,
        data={
            "from_pbx": claim.from_pbx,
            "pbx": request.receiving,
            "channel": request.channel,
            "route": decision.route.value,
            "queue": decision.queue,
            "priority": decision.priority,
            "rule": decision.rule,
        },
    )


def _forget(owner: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    """Done callback: forget the task and read its outcome (no 'never retrieved')."""

    def done(task: asyncio.Task[Any]) -> None:
        owner.discard(task)
        if not task.cancelled():
            task.exception()

    return done
