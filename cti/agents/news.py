"""What an agent's state change tells the rest of the system: the ``agent_state`` event
for the supervisors' and the agent's own stream, and the state intervals it closed
(one row each in PostgreSQL's ``agent_state_log``, for the reports).

Pure: the event is a :class:`~cti.calls.events.CallEvent` so that it travels the call
events' road (the leader's fenced outbox, the standby window on a takeover, each
fingerprint published once). Its ``call_key`` is ``agent:<device>``, which no call key
can equal (call keys are a call id or ``L:<linkedid>``). The device is the agent's as
cti names it (``PJSIP/2001@b`` on PBX ``b``), and the event carries its PBX's name
(``pbx``), so agents of two PBXes never share a key, a fingerprint or a stream.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from cti.agents.state import AgentChanged, AgentStatus, status_to_json
from cti.calls.events import CallEvent
from cti.pbx import DEFAULT_PBX, split_device

AGENT_EVENT = "agent_state"
AGENT_KEY_PREFIX = "agent:"


@dataclass(frozen=True, slots=True)
class StateInterval:
    """An agent spent ``[started_at, ended_at)`` in ``state``: overall (``queue`` None)
    or in one queue membership."""

    agent: str
    queue: str | None
    state: str
    reason: str | None
    started_at: float
    ended_at: float
    call_id: str | None


def ended_intervals(change: AgentChanged) -> list[StateInterval]:
    """The intervals this change closed: the agent's overall state and each membership
    whose state (or reason) changed or that went away."""
    before, now = change.before, change.status
    if before is None:
        return []
    out: list[StateInterval] = []
    if now.since != before.since:
        out.append(_interval(before, None, before.state, before.reason, before.since, now.since))
    for old in before.memberships:
        new = now.membership(old.queue)
        if new is not None and new.since == old.since:
            continue
        ended = new.since if new is not None else change.at
        out.append(_interval(before, old.queue, old.state, old.reason, old.since, ended))
    return out


def _interval(
    status: AgentStatus, queue: str | None, state: str, reason: str | None, start: float, end: float
) -> StateInterval:
    return StateInterval(
        status.agent, queue, str(state), reason, start, max(start, end), status.call_id
    )


def agent_event(change: AgentChanged) -> CallEvent:
    """The ``agent_state`` event of one change (module docstring). Its fingerprint is
    the new status without the moment it was computed, so every instance that saw the
    same AMI traffic names it alike. The one PBX of a deployment without ``CTI_PBXES``
    keeps the fingerprints it had; an agent of a PBX other than the home one has its
    event's fingerprint prefixed ``@<pbx>|``, as every event of that PBX has."""
    status = status_to_json(change.status)
    hashed = {k: v for k, v in status.items() if k != "pbx" or v != DEFAULT_PBX}
    digest = hashlib.sha1(
        json.dumps(hashed, sort_keys=True, separators=(",", ":")).encode(), usedforsecurity=False
    ).hexdigest()
    away = split_device(change.status.agent)[1]
    data: dict[str, Any] = {k: v for k, v in status.items() if k not in ("agent", "call_id", "pbx")}
    data["previous"] = change.previous.value if change.previous is not None else None
    data["ended"] = [asdict(i) for i in ended_intervals(change)]
    return CallEvent(
        kind=AGENT_EVENT,
        call_key=AGENT_KEY_PREFIX + change.status.agent,
        call_id=change.status.call_id,
        linkedid="",
        fingerprint=f"@{away}|state|{digest}" if away else f"state|{digest}",
        at=change.at,
        agent=change.status.agent,
        pbx=change.status.pbx,
        data=data,
        recipients=(change.status.agent,),
    )


def intervals_of(event: CallEvent) -> list[StateInterval]:
    """The intervals an ``agent_state`` event closed (what the state log writes)."""
    if event.kind != AGENT_EVENT:
        return []
    out = []
    for raw in event.data.get("ended", ()):
        out.append(StateInterval(**raw))
    return out
