"""The demo data set: the demo routing plan, six named customers, and many generated ones.

Generated customers follow a fixed pattern (account ``A`` + 7 digits, phone ``+1212`` +
the same digits; tier, status and language derived from the number) so that SIPp
injection files and benchmarks can hit known customers without querying first.
Running it again updates rather than duplicates.

The demo agents (``agent2001`` … ``agent2006`` on ``PJSIP/2001`` … ``PJSIP/2006``, the
test bed's phones) and the demo supervisor (``supervisor``, role supervisor: the team
view, every call readable) get a password from the caller: no password is in the
repository.
"""

from __future__ import annotations

from importlib import resources

import asyncpg

from cti.routing import plan as routing_plan
from cti.routing.plan_store import write_plan

NAMED_CUSTOMERS = (
    ("A0000001", "Grace Hopper", "platinum", "active", "en"),
    ("A0000002", "Alan Turing", "gold", "active", "en"),
    ("A0000003", "Ada Lovelace", "silver", "active", "en"),
    ("A0000004", "Edsger Dijkstra", "bronze", "active", "en"),
    ("A0000005", "Barbara Liskov", "gold", "delinquent", "en"),
    ("A0000006", "Carmen Herrera", "gold", "active", "es"),
)
MAX_GENERATED = 9_999_999
DEMO_AGENTS = tuple((f"agent200{n}", f"PJSIP/200{n}", f"Agent 200{n}") for n in range(1, 7))
#: The supervisor takes no queue calls; the endpoint column is required and unique, so
#: it names a device of its own that no queue rings.
DEMO_SUPERVISOR = ("supervisor", "PJSIP/supervisor", "Demo supervisor")


def demo_plan() -> routing_plan.RoutingPlan:
    text = resources.files("cti.demo").joinpath("routing.toml").read_text()
    return routing_plan.loads(text)


def phone_of(index: int) -> str:
    return f"+1212{index:07d}"


def account_of(index: int) -> str:
    return f"A{index:07d}"


async def seed_demo(conn: asyncpg.Connection, customers: int = 100_000) -> int:
    """Load the demo plan and ``customers`` customers; return how many customers exist."""
    if not len(NAMED_CUSTOMERS) <= customers <= MAX_GENERATED:
        raise ValueError(f"customers must be between {len(NAMED_CUSTOMERS)} and {MAX_GENERATED}")
    await write_plan(conn, demo_plan())
    async with conn.transaction():
        await conn.executemany(
            """INSERT INTO customers (account_number, name, tier, status, language)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (account_number) DO UPDATE SET name = EXCLUDED.name,
                   tier = EXCLUDED.tier, status = EXCLUDED.status, language = EXCLUDED.language""",
            NAMED_CUSTOMERS,
        )
        await conn.execute(
            """INSERT INTO customers (account_number, name, tier, status, language)
               SELECT 'A' || lpad(i::text, 7, '0'),
                      'Demo Customer ' || i,
                      CASE WHEN i % 100 < 2 THEN 'platinum' WHEN i % 100 < 15 THEN 'gold'
                           WHEN i % 100 < 45 THEN 'silver' ELSE 'bronze' END,
                      CASE WHEN i % 50 = 7 THEN 'delinquent' ELSE 'active' END,
                      CASE WHEN i % 20 = 3 THEN 'es' ELSE 'en' END
               FROM generate_series($1::int, $2::int) AS i
               ON CONFLICT (account_number) DO NOTHING""",
            len(NAMED_CUSTOMERS) + 1,
            customers,
        )
        await conn.execute(
            """INSERT INTO customer_phones (e164, customer_id)
               SELECT '+1212' || substr(account_number, 2), id FROM customers
               WHERE account_number ~ '^A[0-9]{7}$'
               ON CONFLICT (e164) DO NOTHING"""
        )
        return await conn.fetchval("SELECT count(*) FROM customers")


async def seed_demo_agents(
    conn: asyncpg.Connection, password: str, *, reset: bool
) -> tuple[list[str], list[str]]:
    """Create the demo agents and the demo supervisor with ``password``: (user names
    written, why others were not).

    ``reset``: also give existing demo agents this password (and their demo endpoint
    and name); otherwise existing ones are left as they are, so that running the seed
    again with a generated password does not lock anyone out. A demo agent whose phone
    is already another agent's is skipped (and said so), not forced."""
    from cti.screenpop.agents import AgentError, add_agent

    existing = set(
        await conn.fetchval(
            "SELECT coalesce(array_agg(username), '{}') FROM agents WHERE username = ANY($1)",
            [username for username, _endpoint, _name in (*DEMO_AGENTS, DEMO_SUPERVISOR)],
        )
    )
    written: list[str] = []
    skipped: list[str] = []
    people = [(*agent, "agent") for agent in DEMO_AGENTS] + [(*DEMO_SUPERVISOR, "supervisor")]
    for username, endpoint, name, role in people:
        if username in existing and not reset:
            continue
        try:
            await add_agent(
                conn, username, endpoint, password, display_name=name, role=role, replace=True
            )
        except AgentError as exc:
            if "password" in str(exc):
                raise  # the same for every agent: say it once, as an error
            skipped.append(f"{username}: {exc}")
            continue
        written.append(username)
    return written, skipped
