"""The ``supervisor_audit`` table (cti/db/migrations/007_supervisor_audit.sql, and
012_audit_device.sql): what supervisors did to agents, who, to whom (the user name, and
the device as cti names it: ``PJSIP/2001@b`` says which PBX the action went to), when
and how it ended.

Only this module reads or writes the table. An action is recorded before it is sent
(:meth:`SupervisorAudit.begin`, result ``pending``) and given its result after
(:meth:`SupervisorAudit.finish`): an action that could not be recorded is not sent, so
there is no unrecorded action; a row left ``pending`` is one whose outcome was never
learnt (the process stopped, or PostgreSQL went away in between). A refusal before
anything was sent (an unknown reason, an agent on no call) is one row with its code
(:meth:`SupervisorAudit.refused`).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

QUERY_TIMEOUT_S = 5
MAX_READ = 500

Action = Literal["pause", "unpause", "queue_login", "queue_logout", "listen", "whisper", "barge"]
ACTIONS: tuple[Action, ...] = (
    "pause",
    "unpause",
    "queue_login",
    "queue_logout",
    "listen",
    "whisper",
    "barge",
)
PENDING = "pending"
OK = "ok"

_COLUMNS = "id, at, supervisor, action, target_agent, queue, reason, call_id, result, device"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One supervisor action as recorded: ``supervisor`` and ``target_agent`` are user
    names; ``queue``, ``reason`` and ``call_id`` where the action has one; ``device``:
    the agent's device (as cti names it, with its PBX) the action was for."""

    supervisor: str
    action: Action
    target_agent: str
    queue: str | None = None
    reason: str | None = None
    call_id: str | None = None
    device: str | None = None


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: int
    at: float
    entry: AuditEntry
    result: str

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": dt.datetime.fromtimestamp(self.at, dt.UTC).isoformat(),
            "supervisor": self.entry.supervisor,
            "action": self.entry.action,
            "target_agent": self.entry.target_agent,
            "queue": self.entry.queue,
            "reason": self.entry.reason,
            "call_id": self.entry.call_id,
            "device": self.entry.device,
            "result": self.result,
        }


class SupervisorAudit:
    def __init__(
        self, db: asyncpg.Pool | asyncpg.Connection, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = db
        self._clock = clock

    async def _insert(self, entry: AuditEntry, result: str) -> int:
        value = await self._db.fetchval(
            """INSERT INTO supervisor_audit
                   (at, supervisor, action, target_agent, queue, reason, call_id, result, device)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id""",
            dt.datetime.fromtimestamp(self._clock(), dt.UTC),
            entry.supervisor,
            entry.action,
            entry.target_agent,
            entry.queue,
            entry.reason,
            entry.call_id,
            result,
            entry.device,
            timeout=QUERY_TIMEOUT_S,
        )
        return int(value)

    async def begin(self, entry: AuditEntry) -> int:
        """Record an action about to be sent; its row id for :meth:`finish`."""
        return await self._insert(entry, PENDING)

    async def finish(self, row_id: int, result: str) -> None:
        """``ok`` or the refusal's error code."""
        await self._db.execute(
            "UPDATE supervisor_audit SET result = $2 WHERE id = $1 AND result = $3",
            row_id,
            result,
            PENDING,
            timeout=QUERY_TIMEOUT_S,
        )

    async def refused(self, entry: AuditEntry, code: str) -> int:
        """An action refused before anything was sent."""
        return await self._insert(entry, code)

    async def recent(self, limit: int = 100, target_agent: str | None = None) -> list[AuditRow]:
        """The newest rows first (of one agent, if given)."""
        limit = max(1, min(limit, MAX_READ))
        records = await self._db.fetch(
            f"""SELECT {_COLUMNS} FROM supervisor_audit
                WHERE $2::text IS NULL OR target_agent = $2
                ORDER BY at DESC, id DESC LIMIT $1""",
            limit,
            target_agent,
            timeout=QUERY_TIMEOUT_S,
        )
        return [_row(r) for r in records]


def _row(record: Any) -> AuditRow:
    entry = AuditEntry(
        record["supervisor"],
        record["action"],
        record["target_agent"],
        record["queue"],
        record["reason"],
        record["call_id"],
        record["device"],
    )
    return AuditRow(record["id"], record["at"].timestamp(), entry, record["result"])
