"""One agent as the wallboard counts it, read from its ``agent_state`` event.

Apart from :mod:`cti.wallboard.figures` because it is the one part the wallboard reads
of another feature's events (:mod:`cti.agents.news` writes them), with the lenient
field readers both use: an event from an older or newer instance must never break the
counts. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: At most this many groups (tiers, rules, an agent's memberships) per figure.
MAX_GROUPS = 200


def text(value: Any, default: str = "") -> str:
    return value[:128] if isinstance(value, str) and value else default


def number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class AgentView:
    """One agent as the wallboard counts it, from its latest ``agent_state`` event
    (:func:`cti.agents.news.agent_event`): its overall state's name, pause reason and
    since when, the queues it is a member of with its state (and reason) in each, and
    its pause reason's maximum in minutes (from the plan, filled in when viewed), and
    the name of its PBX (None from an event without one)."""

    agent: str
    state: str
    reason: str | None
    since: float
    queues: tuple[str, ...]
    max_minutes: float | None = None
    #: (queue, state, reason) per membership; a queue missing here counts ``state``.
    members: tuple[tuple[str, str, str | None], ...] = ()
    pbx: str | None = None

    def in_queue(self, queue: str) -> tuple[str, str | None]:
        for name, state, reason in self.members:
            if name == queue:
                return state, reason
        return self.state, self.reason


def agent_view(event: Mapping[str, Any]) -> AgentView | None:
    """The agent's view from an ``agent_state`` event's wire form (None if malformed)."""
    agent, state, since = event.get("agent"), event.get("state"), number(event.get("since"))
    if not isinstance(agent, str) or not isinstance(state, str) or since is None:
        return None
    members = []
    for raw in event.get("memberships") or ():
        if isinstance(raw, Mapping) and isinstance(raw.get("queue"), str):
            reason = raw.get("reason")
            members.append(
                (
                    text(raw["queue"]),
                    text(raw.get("state"), state),
                    reason if isinstance(reason, str) else None,
                )
            )
    reason, pbx = event.get("reason"), event.get("pbx")
    return AgentView(
        agent[:128],
        state[:32],
        reason[:128] if isinstance(reason, str) else None,
        since,
        tuple(m[0] for m in members),
        members=tuple(members[:MAX_GROUPS]),
        pbx=pbx[:16] if isinstance(pbx, str) else None,
    )
