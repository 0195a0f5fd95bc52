"""Route outcomes made by the real router over the real customers table, for the tests
of the writers that store them (interactions, dead letters)."""

from __future__ import annotations

from typing import Any

import asyncpg

from cti.customers import find_customer
from cti.router import RouteOutcome, Router, RouteRequest
from cti.routing.table import RoutingTable


class Keep:
    """A writer stand-in that keeps what it is given."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def submit(self, item: Any) -> bool:
        self.items.append(item)
        return True


async def route_outcomes(pool: asyncpg.Pool, n: int) -> list[RouteOutcome]:
    """``n`` route outcomes as the router makes them (callers 2120000000, …0001, …)."""
    kept = Keep()
    router = Router(
        table=lambda: RoutingTable(loaded=True),
        find_customer=lambda e164, account: find_customer(pool, e164, account),
        default_queue="default",
        region="US",
        lookup_budget_s=5,
        interactions=kept,
        call_data=Keep(),
    )
    for i in range(n):
        await router.route(RouteRequest(f"PJSIP/t-{i}", f"1.{i}", f"{2120000000 + i}", "5550100"))
    return kept.items
