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
    parse_pause_reason,
    parse_queue,
    parse_rule,
)


async def read_plan(conn: asyncpg.Connection) -> RoutingPlan:
    """The stored plan, rules in order. Raises PlanError on a bad row."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        queue_rows = await conn.fetch(
            "SELECT name, description, wrapup_s, sl_threshold_s, short_abandon_s FROM queues"
            " ORDER BY name"
        )
        reason_rows = await conn.fetch(
            "SELECT name, productive, max_minutes FROM pause_reasons ORDER BY position"
        )
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
    reasons = tuple(
        parse_pause_reason(_row(r, json_keys=()), f"pause_reasons row {r['name']!r}")
        for r in reason_rows
    )
    return RoutingPlan(queues, numbers, rules, reasons)


def _row(record: asyncpg.Record, json_keys: tuple[str, ...]) -> dict[str, Any]:
    row = {k: v for k, v in record.items() if v is not None}
    for key in json_keys:
        if key in row:
            row[key] = json.loads(row[key])
    return row


async def write_plan(conn: asyncpg.Connection, plan: RoutingPlan) -> None:
    """Store ``plan``: upsert its queues and numbers, replace every rule and pause
    reason, in one transaction.

    Queues and numbers not in the plan are kept (calls may still be using them);
    the rules and pause reasons are the plan's exactly, in its order.
    """
    async with conn.transaction():
        stored = {r["name"] for r in await conn.fetch("SELECT name FROM queues")}
        check_queues_exist(plan, stored)
        await conn.executemany(
            "INSERT INTO queues (name, description, wrapup_s, sl_threshold_s, short_abandon_s)"
            " VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description,"
            " wrapup_s = EXCLUDED.wrapup_s, sl_threshold_s = EXCLUDED.sl_threshold_s,"
            " short_abandon_s = EXCLUDED.short_abandon_s",
            [
                (q.name, q.description, q.wrapup_s, q.sl_threshold_s, q.short_abandon_s)
                for q in plan.queues
            ],
        )
        await conn.execute("DELETE FROM pause_reasons")
        await conn.executemany(
            "INSERT INTO pause_reasons (position, name, productive, max_minutes)"
            " VALUES ($1, $2, $3, $4)",
            [
                (position, r.name, r.productive, r.max_minutes)
                for position, r in enumerate(plan.pause_reasons, 1)
            ],
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
