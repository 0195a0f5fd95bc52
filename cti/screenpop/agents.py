"""The ``agents`` table (cti/db/migrations/003_agents.sql): who may use the sidebar.

An agent is known by a ``username`` (what they type at login) and reached at an
``endpoint``, the device their calls ring (``PJSIP/2001``), which is the name the call
events use; hence one endpoint per agent. With several PBXes (:mod:`cti.pbx`) the
endpoint names its PBX as cti names devices: ``PJSIP/2001`` on the home PBX,
``PJSIP/2001@b`` on PBX ``b`` (the table's CHECK has always allowed ``@``), so two agents
may each have a ``PJSIP/2001``, on different PBXes. Checks here repeat the table's CHECK
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

_COLUMNS = "username, display_name, endpoint, role, token_version"


class AgentError(ValueError):
    """An agent that cannot be stored as given; the message says why."""


@dataclass(frozen=True, slots=True)
class Agent:
    username: str
    display_name: str
    endpoint: str
    role: str
    #: Bumped by every change that must end the agent's sessions (005_token_version.sql).
    token_version: int = 1

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
    return Agent(
        record["username"],
        record["display_name"],
        record["endpoint"],
        record["role"],
        record["token_version"],
    )


def check_agent(username: str, endpoint: str, display_name: str, role: str) -> None:
    """Raise :class:`AgentError` naming the first field the table would refuse."""
    if not USERNAME.fullmatch(username):
        raise AgentError(f"username {username[:80]!r}: 1 to 64 of a-z 0-9 . _ -")
    if not ENDPOINT.fullmatch(endpoint):
        raise AgentError(
            f"endpoint {endpoint[:80]!r}: a device name such as PJSIP/2001 (PJSIP/2001@b: on PBX b)"
        )
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
        " password_hash = EXCLUDED.password_hash,"
        " token_version = agents.token_version + 1"
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


# -- changes that end the agent's sessions (each bumps token_version) ------------------
async def token_version(db: asyncpg.Pool | asyncpg.Connection, username: str) -> int | None:
    """The agent's current token version; None if there is no such agent (removed)."""
    if not USERNAME.fullmatch(username):
        return None
    value = await db.fetchval(
        "SELECT token_version FROM agents WHERE username = $1", username, timeout=QUERY_TIMEOUT_S
    )
    return None if value is None else int(value)


async def end_sessions(db: asyncpg.Pool | asyncpg.Connection, username: str) -> bool:
    """Revoke every token of the agent (logout); False if there is no such agent."""
    result = await db.execute(
        "UPDATE agents SET token_version = token_version + 1 WHERE username = $1",
        username,
        timeout=QUERY_TIMEOUT_S,
    )
    return result != "UPDATE 0"


async def set_password(db: asyncpg.Pool | asyncpg.Connection, username: str, password: str) -> None:
    """A new password, and the agent's sessions ended; :class:`AgentError` if unknown."""
    try:
        password_hash = await asyncio.to_thread(hash_password, password)
    except ValueError as exc:
        raise AgentError(str(exc)) from None
    result = await db.execute(
        "UPDATE agents SET password_hash = $2, token_version = token_version + 1"
        " WHERE username = $1",
        username,
        password_hash,
        timeout=QUERY_TIMEOUT_S,
    )
    if result == "UPDATE 0":
        raise AgentError(f"no agent {username[:80]!r}")


async def remove_agent(db: asyncpg.Pool | asyncpg.Connection, username: str) -> None:
    """Delete the agent: no row, no valid token. :class:`AgentError` if unknown."""
    result = await db.execute(
        "DELETE FROM agents WHERE username = $1", username, timeout=QUERY_TIMEOUT_S
    )
    if result == "DELETE 0":
        raise AgentError(f"no agent {username[:80]!r}")


async def update_agent(
    db: asyncpg.Pool | asyncpg.Connection,
    username: str,
    *,
    endpoint: str | None = None,
    role: str | None = None,
    display_name: str | None = None,
) -> Agent:
    """Change what was given and end the agent's sessions (a token names the endpoint
    and role it was issued with). :class:`AgentError` for a bad field or unknown agent."""
    found = await find_agent(db, username)
    if found is None:
        raise AgentError(f"no agent {username[:80]!r}")
    old = found[0]
    new = Agent(
        username,
        display_name if display_name is not None else old.display_name,
        endpoint if endpoint is not None else old.endpoint,
        role if role is not None else old.role,
    )
    check_agent(new.username, new.endpoint, new.display_name, new.role)
    try:
        record = await db.fetchrow(
            f"""UPDATE agents SET display_name = $2, endpoint = $3, role = $4,
                    token_version = token_version + 1
                WHERE username = $1 RETURNING {_COLUMNS}""",
            username,
            new.display_name,
            new.endpoint,
            new.role,
            timeout=QUERY_TIMEOUT_S,
        )
    except asyncpg.UniqueViolationError:
        owner = await db.fetchval(
            "SELECT username FROM agents WHERE endpoint = $1", new.endpoint, timeout=QUERY_TIMEOUT_S
        )
        raise AgentError(f"endpoint {new.endpoint} belongs to agent {owner}") from None
    if record is None:
        raise AgentError(f"no agent {username[:80]!r}")
    return _agent(record)
