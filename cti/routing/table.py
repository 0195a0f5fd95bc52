"""The routing plan as the router holds it in memory: rules in order, numbers by DNIS."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from cti.routing.model import DialledNumber, Rule
from cti.routing.phone import normalize_dnis
from cti.routing.plan import PauseReason, QueueSpec, RoutingPlan


@dataclass(frozen=True, slots=True)
class RoutingTable:
    rules: tuple[Rule, ...] = ()
    numbers: Mapping[str, DialledNumber] = field(default_factory=lambda: MappingProxyType({}))
    loaded: bool = False  # False until a plan has been read from the database
    #: The plan's queues by name (their wrap-up and service-level timers).
    queues: Mapping[str, QueueSpec] = field(default_factory=lambda: MappingProxyType({}))
    #: The pause reasons an agent may choose, in the plan's order.
    pause_reasons: tuple[PauseReason, ...] = ()

    @classmethod
    def from_plan(cls, plan: RoutingPlan) -> RoutingTable:
        return cls(
            plan.rules,
            MappingProxyType({n.dnis: n for n in plan.numbers}),
            True,
            MappingProxyType({q.name: q for q in plan.queues}),
            plan.pause_reasons,
        )

    def queue(self, name: str) -> QueueSpec | None:
        return self.queues.get(name)

    def wrapup_s(self, queue: str | None) -> int:
        """Seconds of wrap-up after a call of ``queue`` (0: none, or an unknown queue)."""
        spec = self.queues.get(queue) if queue else None
        return spec.wrapup_s if spec is not None else 0

    def number(self, dnis: str) -> DialledNumber | None:
        """The dialled number, matched on digits, with or without a leading ``+``."""
        key = normalize_dnis(dnis)
        found = self.numbers.get(key)
        if found is None and key.startswith("+"):
            found = self.numbers.get(key[1:])
        elif found is None and key:
            found = self.numbers.get("+" + key)
        return found
