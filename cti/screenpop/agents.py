"""The ``agents`` table (cti/db/migrations/003_agents.sql): who may use the sidebar.

An agent is known by a ``username`` (what they type at login) and reached at an
``endpoint``, the device their calls ring (``PJSIP/2001``), which is the name the call
events use; hence one endpoint per agent. Checks here repeat the table's CHECK
constraints so that the CLI can say what is wrong in words before PostgreSQL refuses.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

import asyncpg

from cti.calls.control import AGENT as ENDPOINT
from cti.screenpop.auth import hash_password

USERNAME = re.compile(r"[a-z0-9._-]{1,64}")
ROLES = ("agent", "supervisor")
MAX_DISPLAY_NAME_CHARS = 128
QUERY_TIMEOUT_S = 5

_COLUMNS = "username, display_name, endpoint, role"


class AgentError(ValueError):
    """An agent that cannot be stored as given; the message says why."""


@dataclass(frozen=True, slots=True)
class Agent:
    username: str
    display_name: str
    endpoint: str
    role: str

    @property
    def is_supervisor(self) -> bool:
        return self.role == "supervisor"

    def as_json(self) -> dict[str, str]:
        return {
            "username": self.username,
            "display_name": self.display_name,
            "endpoint": self.endpoint,
            "role": self.role,
        }


def _agent(record: Any) -> Agent:
    return Agent(record["username"], record["display_name"], record["endpoint"], record["role"])


def check_agent(username: str, endpoint: str, display_name: str, role: str) -> None:
    """Raise :class:`AgentError` naming the first field the table would refuse."""
    if not USERNAME.fullmatch(username):
        raise AgentError(f"username {username[:80]!r}: 1 to 64 of a-z 0-9 . _ -")
    if not ENDPOINT.fullmatch(endpoint):
        raise AgentError(f"endpoint {endpoint[:80]!r}: a device name such as PJSIP/2001")
    if not 1 <= len(display_name) <= MAX_DISPLAY_NAME_CHARS or not display_name.isprintable():
        raise AgentError(
            f"name: 1 to {MAX_DISPLAY_NAME_CHARS} printable characters, not {display_name[:80]!r}"
        )
    if role not in ROLES:
        raise AgentError(f"role {role[:80]!r}: one of {', '.join(ROLES)}")


async def find_agent(
    db: asyncpg.Pool | asyncpg.Connection, username: str
) -> tuple[Agent, str] | None:
    """The agent and its password hash, or None."""
    if not USERNAME.fullmatch(username):
        return None
    record = await db.fetchrow(
        f"SELECT {_COLUMNS}, password_hash FROM agents WHERE username = $1",
        username,
        timeout=QUERY_TIMEOUT_S,
    )
    return None if record is None else (_agent(record), record["password_hash"])


async def list_agents(db: asyncpg.Pool | asyncpg.Connection) -> list[Agent]:
    records = await db.fetch(
        f"SELECT {_COLUMNS} FROM agents ORDER BY username", timeout=QUERY_TIMEOUT_S
    )
    return [_agent(r) for r in records]


async def add_agent(
    db: asyncpg.Pool | asyncpg.Connection,
    username: str,
    endpoint: str,
    password: str,
    *,
    display_name: str | None = None,
    role: str = "agent",
    replace: bool = False,
) -> Agent:
    """Store a new agent (``replace``: or update the one of that username).

    :class:`AgentError` for a bad field, a taken username (unless ``replace``) or an
    endpoint that is another agent's."""
    display_name = display_name if display_name is not None else username
    check_agent(username, endpoint, display_name, role)
    try:
        password_hash = await asyncio.to_thread(hash_password, password)
    except ValueError as exc:
        raise AgentError(str(exc)) from None
    conflict = (
        "ON CONFLICT (username) DO UPDATE SET display_name = EXCLUDED.display_name,"
        " endpoint = EXCLUDED.endpoint, role = EXCLUDED.role,"
        " password_hash = EXCLUDED.password_hash"
        if replace
        else ""
    )
    try:
        await db.execute(
            f"""INSERT INTO agents (username, display_name, endpoint, role, password_hash)
                VALUES ($1, $2, $3, $4, $5) {conflict}""",
            username,
            display_name,
            endpoint,
            role,
            password_hash,
            timeout=QUERY_TIMEOUT_S,
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "agents_pkey":
            raise AgentError(f"username {username!r} is taken") from None
        owner = await db.fetchval(
            "SELECT username FROM agents WHERE endpoint = $1", endpoint, timeout=QUERY_TIMEOUT_S
        )
        raise AgentError(f"endpoint {endpoint} belongs to agent {owner}") from None
    return Agent(username, display_name, endpoint, role)
