"""The routing plan in PostgreSQL: read it for the router, replace it from a file.

Rows go through the same parser as the file (:mod:`cti.routing.plan`), so a rule
edited by hand in the database is validated exactly like one loaded by
``cti rules load``.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from cti.routing.plan import (
    RoutingPlan,
    check_queues_exist,
    match_to_mapping,
    parse_number,
    parse_queue,
    parse_rule,
)


async def read_plan(conn: asyncpg.Connection) -> RoutingPlan:
    """The stored plan, rules in order. Raises PlanError on a bad row."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        queue_rows = await conn.fetch("SELECT name, description FROM queues ORDER BY name")
        number_rows = await conn.fetch(
            "SELECT dnis, service, default_queue, timezone, hours FROM dialled_numbers"
            " ORDER BY dnis"
        )
        rule_rows = await conn.fetch(
            "SELECT name, enabled, match, route, queue, priority FROM routing_rules"
            " ORDER BY position"
        )
    queues = tuple(parse_queue(dict(r), f"queues row {r['name']!r}") for r in queue_rows)
    numbers = tuple(
        parse_number(_row(r, json_keys=("hours",)), f"dialled_numbers row {r['dnis']!r}")
        for r in number_rows
    )
    rules = tuple(
        parse_rule(_row(r, json_keys=("match",)), f"routing_rules row {r['name']!r}")
        for r in rule_rows
    )
    return RoutingPlan(queues, numbers, rules)


def _row(record: asyncpg.Record, json_keys: tuple[str, ...]) -> dict[str, Any]:
    row = {k: v for k, v in record.items() if v is not None}
    for key in json_keys:
        if key in row:
            row[key] = json.loads(row[key])
    return row


async def write_plan(conn: asyncpg.Connection, plan: RoutingPlan) -> None:
    """Store ``plan``: upsert its queues and numbers, replace every rule, in one transaction.

    Queues and numbers not in the plan are kept (calls may still be using them);
    the rules are the plan's rules exactly, in its order.
    """
    async with conn.transaction():
        stored = {r["name"] for r in await conn.fetch("SELECT name FROM queues")}
        check_queues_exist(plan, stored)
        await conn.executemany(
            "INSERT INTO queues (name, description) VALUES ($1, $2)"
            " ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description",
            [(q.name, q.description) for q in plan.queues],
        )
        await conn.executemany(
            "INSERT INTO dialled_numbers (dnis, service, default_queue, timezone, hours)"
            " VALUES ($1, $2, $3, $4, $5::jsonb)"
            " ON CONFLICT (dnis) DO UPDATE SET service = EXCLUDED.service,"
            " default_queue = EXCLUDED.default_queue, timezone = EXCLUDED.timezone,"
            " hours = EXCLUDED.hours",
            [
                (
                    n.dnis,
                    n.service,
                    n.default_queue,
                    n.timezone.key,
                    json.dumps(n.hours.to_spec()) if n.hours else None,
                )
                for n in plan.numbers
            ],
        )
        await conn.execute("DELETE FROM routing_rules")
        await conn.executemany(
            "INSERT INTO routing_rules (position, name, enabled, match, route, queue, priority)"
            " VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7)",
            [
                (
                    position,
                    r.name,
                    r.enabled,
                    json.dumps(match_to_mapping(r.match)),
                    r.route.value,
                    r.queue,
                    r.priority,
                )
                for position, r in enumerate(plan.rules, 1)
            ],
        )
