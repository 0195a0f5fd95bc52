"""What a supervisor can do to an agent, as AMI actions sent on their behalf, each one
recorded in the audit table (:mod:`cti.agents.audit`).

* **pause / unpause** (``QueuePause`` with the agent's device as ``Interface``): in every
  queue, or in one queue of the plan; a pause needs a reason, one of the plan's
  ``[[pause_reasons]]`` (the agent's own pause takes the same reasons:
  :func:`check_plan_reason`).
* **queue log-in / log-out** (``QueueAdd`` / ``QueueRemove``) of a queue of the plan.
* **listen / whisper / barge** (``Originate``): the supervisor's own phone (the endpoint
  of their agent record) rings and, once answered, runs ``ChanSpy`` on the leg the agent
  is talking on now: ``listen`` hears both sides; ``whisper`` (option ``w``) also talks
  to the agent alone; ``barge`` (``B``) talks to both. Always with ``q`` (no beep and no
  channel name spoken: the customer must not hear it), ``E`` (stop when the agent's leg
  hangs up) and ``S`` (stop at once if it is already gone when the phone is answered).
  ChanSpy takes a channel-name prefix; the full name of the agent's leg
  (``PJSIP/2001-0000001a``) is a prefix of that one channel only.

Validation and refusals are call control's (:mod:`cti.calls.control`): the same checks
(a device name, a reason without control characters) and the same
:class:`~cti.errors.DomainError` codes (``invalid``, ``not_on_call``, ``refused``,
``ami_unavailable``); a well-formed reason or queue that the plan does not have is
``not_in_plan`` (it may be tomorrow: the request is not malformed). The audit row is
written before the action is sent, so an action that cannot be recorded is not sent; a
refusal before sending is recorded with its code.

Several PBXes (:mod:`cti.pbx`): an agent's device names its PBX (``PJSIP/2001@b``).
Every action goes to that PBX's AMI connection (call control's ``send(..., pbx=)``,
named explicitly) with the device unqualified (``Interface: PJSIP/2001``), and the
audit row names the device as cti does (``PJSIP/2001@b``). Listening needs the
supervisor's phone and the agent's leg on the **same** PBX: ChanSpy is a dialplan
application that spies on channels of the Asterisk it runs on, and no Asterisk sees
another's channels (spying across a trunk would need a second call bridged into the
agent's, which barges the customer). A supervisor on another PBX is refused with
``other_pbx`` and told so; they can listen from a phone on the agent's PBX.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NoReturn

import asyncpg
import structlog

from cti.agents.audit import OK, Action, AuditEntry, SupervisorAudit
from cti.calls.control import AGENT, CallControl, check_agent, check_pause_reason
from cti.calls.events import LINKEDID_PREFIX
from cti.errors import DomainError
from cti.pbx import split_device
from cti.routing.table import RoutingTable

log = structlog.get_logger(__name__)

SpyMode = Literal["listen", "whisper", "barge"]
SPY_MODES: tuple[SpyMode, ...] = ("listen", "whisper", "barge")
#: ChanSpy's options per mode (see the module docstring).
SPY_OPTIONS: dict[SpyMode, str] = {"listen": "qES", "whisper": "qESw", "barge": "qESB"}
#: How long the supervisor's phone rings before the Originate gives up (ms, AMI's unit).
RING_TIMEOUT_MS = 30_000
#: The agent's leg as it goes into ChanSpy's argument list: no comma, no space.
SPY_CHANNEL = re.compile(r"[A-Za-z0-9]+/[A-Za-z0-9_.@-]{1,100}")


@dataclass(frozen=True, slots=True)
class Person:
    """A supervisor or an agent: the user name (for the audit) and the device."""

    username: str
    endpoint: str


def _device(agent: Person) -> str | None:
    """The agent's device for the audit row, if it is one (a malformed one is refused)."""
    return agent.endpoint if AGENT.fullmatch(agent.endpoint) else None


def check_plan_reason(table: RoutingTable, reason: str | None) -> str | None:
    """``reason`` if it is one of the plan's pause reasons (None stays None)."""
    reason = check_pause_reason(reason)
    if reason is None:
        return None
    names = [r.name for r in table.pause_reasons]
    if reason not in names:
        offered = ", ".join(names) if names else "none are defined"
        raise DomainError(
            "not_in_plan",
            f"reason: {reason[:64]!r} is not a pause reason of the routing plan ({offered})",
            "reason",
        )
    return reason


def check_plan_queue(table: RoutingTable, queue: str) -> str:
    if table.queue(queue) is None:
        raise DomainError(
            "not_in_plan", f"queue: no queue {queue[:64]!r} in the routing plan", "queue"
        )
    return queue


class Supervision:
    """The supervisor's actions through call control (``control``: every PBX
    followed, each action to the agent's), on the routing plan of the moment
    (``table``), recorded in ``audit``."""

    def __init__(
        self,
        control: CallControl,
        audit: SupervisorAudit,
        table: Callable[[], RoutingTable],
        *,
        ring_timeout_ms: int = RING_TIMEOUT_MS,
    ) -> None:
        self._control = control
        self._audit = audit
        self._table = table
        self._ring_timeout_ms = ring_timeout_ms

    def _where(self, device: str) -> tuple[str, str]:
        """A device (as cti names it, checked) → (as its PBX names it, that PBX's
        name); ``invalid`` for a PBX not followed here."""
        endpoint, pbx = split_device(check_agent(device))
        return endpoint, self._control.line(pbx).name

    async def pause(
        self,
        by: Person,
        agent: Person,
        paused: bool,
        reason: str | None = None,
        queue: str | None = None,
    ) -> None:
        """Pause (``reason`` required) or unpause the agent, in ``queue`` or in all."""
        entry = AuditEntry(
            by.username,
            "pause" if paused else "unpause",
            agent.username,
            queue,
            reason,
            device=_device(agent),
        )
        fields = {"Paused": "true" if paused else "false"}
        try:
            fields["Interface"], pbx = self._where(agent.endpoint)
            table = self._table()
            if queue is not None:
                fields["Queue"] = check_plan_queue(table, queue)
            if paused and not reason:
                raise DomainError("invalid", "reason: required to pause an agent", "reason")
            if reason is not None:
                fields["Reason"] = check_plan_reason(table, reason) or ""
        except DomainError as exc:
            await self._refuse(entry, exc)
        await self._audited(entry, pbx, "QueuePause", fields)

    async def queue_member(self, by: Person, agent: Person, queue: str, logged_in: bool) -> None:
        """Log the agent in to (``QueueAdd``) or out of (``QueueRemove``) a plan queue."""
        action: Action = "queue_login" if logged_in else "queue_logout"
        entry = AuditEntry(by.username, action, agent.username, queue, device=_device(agent))
        try:
            interface, pbx = self._where(agent.endpoint)
            fields = {"Queue": check_plan_queue(self._table(), queue), "Interface": interface}
        except DomainError as exc:
            await self._refuse(entry, exc)
        await self._audited(entry, pbx, "QueueAdd" if logged_in else "QueueRemove", fields)

    async def spy(self, by: Person, agent: Person, mode: SpyMode) -> str | None:
        """Ring the supervisor's phone into ChanSpy on the agent's call; the call's id
        (or key) the agent is on."""
        device = _device(agent)
        entry = AuditEntry(by.username, mode, agent.username, device=device)
        try:
            if mode not in SPY_OPTIONS:
                raise DomainError("invalid", "mode: 'listen', 'whisper' or 'barge'", "mode")
            if not by.endpoint:
                raise DomainError("invalid", "your agent record has no phone to ring")
            phone, phone_pbx = self._where(by.endpoint)
            _endpoint, pbx = self._where(agent.endpoint)
            if phone_pbx != pbx:
                raise DomainError(
                    "other_pbx",
                    f"your phone is on PBX {phone_pbx!r} and {agent.username}'s on {pbx!r}: "
                    "listening works from a phone on the agent's own PBX (ChanSpy cannot "
                    "reach a call on another Asterisk server)",
                )
            leg = self._control.talking_leg(agent.endpoint)
            if not SPY_CHANNEL.fullmatch(leg.name):
                raise DomainError("refused", f"cannot spy on channel {leg.name[:100]!r}")
        except DomainError as exc:
            await self._refuse(entry, exc)
        # The key the events name the call by (cti.calls.events.call_key): its id, else
        # its Linkedid, namespaced by its PBX when that is not the home one.
        away = split_device(agent.endpoint)[1]
        linked = f"{LINKEDID_PREFIX}{leg.call.linkedid}" + (f"@{away}" if away else "")
        call = leg.call.call_id or linked
        entry = AuditEntry(
            by.username, mode, agent.username, leg.queue, None, call[:128], device=device
        )
        await self._audited(
            entry,
            pbx,
            "Originate",
            {
                "Channel": phone,
                "Application": "ChanSpy",
                "Data": f"{leg.name},{SPY_OPTIONS[mode]}",
                "CallerID": f'"{mode.title()}: {agent.username}"',
                "Timeout": str(self._ring_timeout_ms),
                "Async": "true",
            },
        )
        return call

    async def _refuse(self, entry: AuditEntry, exc: DomainError) -> NoReturn:
        await self._audit.refused(entry, exc.code)
        log.info(
            "supervisor action refused",
            supervisor=entry.supervisor,
            action=entry.action,
            agent=entry.target_agent,
            device=entry.device,
            error=exc.code,
        )
        raise exc

    async def _audited(
        self, entry: AuditEntry, pbx: str, action: str, fields: dict[str, str]
    ) -> None:
        """Record, send to ``pbx``, record the result (``fields`` name its devices as
        ``pbx`` does)."""
        row = await self._audit.begin(entry)  # not recorded: not sent
        try:
            await self._control.send(action, pbx=pbx, **fields)
        except DomainError as exc:
            await self._finish(row, exc.code)
            raise
        await self._finish(row, OK)
        log.info(
            "supervisor action",
            supervisor=entry.supervisor,
            action=entry.action,
            agent=entry.target_agent,
            device=entry.device,
            queue=entry.queue,
            reason=entry.reason,
            call_id=entry.call_id,
        )

    async def _finish(self, row: int, result: str) -> None:
        """The action was sent: a lost result leaves the row ``pending``, not the
        supervisor told that an action they did failed."""
        try:
            await self._audit.finish(row, result)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            log.warning("supervisor action's result not recorded", row=row, error=repr(exc))
