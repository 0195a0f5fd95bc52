"""What an agent's sidebar can do to its call, as AMI actions with clear errors.

The agent names the call (``CTI_CALL_ID``) and itself (its device, ``PJSIP/2001``); we
find the agent's own leg in the call model and act on that leg, so an agent can only
ever move a call it is on. Targets are checked against a strict pattern before any
action is sent (they end up as dialplan extensions).

* **blind transfer** (``BlindTransfer``): the other side of the agent's bridge (the
  caller) goes to ``target@transfer_context``; the agent's leg hangs up.
* **attended transfer** (``Atxfer``): the caller is held and the agent's leg dials
  ``target@transfer_context``; :meth:`complete_transfer` hangs up the agent's leg,
  which joins the caller and the target (Asterisk's atxfer: the transferer hanging up
  completes it); :meth:`cancel_transfer` (``CancelAtxfer``) returns to the caller.
* **hang up** (``Hangup``) the agent's leg.
* **pause** (``QueuePause`` without a queue): Asterisk pauses, or resumes, the agent's
  device in every queue it is a member of, with an optional reason.

Refusals are :class:`cti.errors.DomainError` with code ``invalid``, ``unknown_call``,
``not_on_call``, ``ami_unavailable`` or ``refused``; the message says what to do about
it.

The dialplan's transfer context (asterisk/etc/extensions.conf ``[agents]``) resolves
agent extensions (``2003``) and queues (by name or number), so one target pattern
serves both.

**Several PBXes** (:mod:`cti.pbx`): one :class:`CallControl` serves them all. An agent
is named as cti names devices (``PJSIP/2001@b`` for an agent on PBX ``b``); the action
goes to the AMI connection of the PBX where that agent's leg is, which is the PBX of
the agent's device (only that PBX's model names the device so), and every field that
names a device (``Interface``, ``Channel``) goes to Asterisk unqualified
(``PJSIP/2001``): Asterisk knows nothing of our PBX names. A call that crossed PBXes
keeps one call id and is live in two models; the agent's leg says which one to act on.

Hold is not here: AMI has no hold action (hold is a SIP re-INVITE from the phone, which
we follow as Hold/Unhold events). Asking a phone to hold needs a vendor-specific NOTIFY.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from cti.ami.client import AmiActionError, AmiClient, AmiNotConnected, AmiTimeout
from cti.calls.events import LINKEDID_PREFIX
from cti.calls.model import CallModel, Channel
from cti.errors import DomainError
from cti.pbx import DEFAULT_PBX, split_device
from cti.text import ControlCharacterError, refuse_control_characters

TARGET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
AGENT = re.compile(r"[A-Za-z0-9]+/[A-Za-z0-9_.@-]{1,64}")
MAX_PAUSE_REASON_CHARS = 64


def check_agent(agent: str) -> str:
    """``agent`` if it is a device name (``PJSIP/2001``)."""
    if not AGENT.fullmatch(agent):
        raise DomainError("invalid", f"agent {agent[:80]!r} is not a device name")
    return agent


QUEUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")


def check_queue(queue: str) -> str:
    """``queue`` if it is a queue name (as the routing plan allows)."""
    if not QUEUE.fullmatch(queue):
        raise DomainError("invalid", f"queue {queue[:80]!r} is not a queue name", "queue")
    return queue


def check_pause_reason(reason: str | None) -> str | None:
    """The reason a pause is given, as QueuePause takes it: None (or empty) for none.

    It goes into an AMI action line and the queue log, so it must hold no control
    character (a CR or LF would start another header), by the project's one rule
    (cti.text: C0, DEL, C1), be valid Unicode, and be short. Anything else a person may
    type is theirs, which the API's OpenAPI document states exactly; ``str.isprintable``
    also refused private-use and unassigned characters, no-break spaces and format
    marks, a rule no JSON Schema pattern can carry. An API may call this early, to refuse
    a malformed request before it looks for Asterisk; :meth:`CallControl.pause` calls it
    anyway."""
    if reason is None:
        return None
    if len(reason) > MAX_PAUSE_REASON_CHARS:
        raise DomainError(
            "invalid", f"reason: at most {MAX_PAUSE_REASON_CHARS} characters", "reason"
        )
    try:
        refuse_control_characters(reason)
        reason.encode("utf-8")
    except ControlCharacterError as exc:
        raise DomainError("invalid", f"reason: {exc}", "reason") from None
    except UnicodeEncodeError:
        raise DomainError(
            "invalid", "reason: not valid Unicode (a lone surrogate)", "reason"
        ) from None
    return reason or None


#: The AMI fields that name a device (or a channel): unqualified before they are sent.
DEVICE_FIELDS = ("Interface", "Channel")


@dataclass(frozen=True, slots=True)
class PbxLine:
    """One PBX as call control sees it: its name, its AMI connection and its call model
    (whose ``agent_of`` names devices as cti does, :func:`cti.pbx.agent_of`)."""

    name: str
    ami: AmiClient
    model: CallModel


def model_key(call_key: str, pbx: str, home: bool) -> str | None:
    """What ``pbx``'s model knows the call by: a call id as it is; ``L:<linkedid>`` (a
    home PBX's call without an id) or ``L:<linkedid>@<pbx>`` (another PBX's) as the bare
    Linkedid, on its own PBX only (None elsewhere)."""
    if not call_key.startswith(LINKEDID_PREFIX):
        return call_key
    linkedid, at, where = call_key[len(LINKEDID_PREFIX) :].rpartition("@")
    if at:
        return linkedid if where == pbx else None
    return call_key[len(LINKEDID_PREFIX) :] if home else None


class CallControl:
    """Call control over one PBX (``CallControl(ami, model)``: the single PBX of a
    deployment without ``CTI_PBXES``) or several (``others``; the first, ``home``, is
    the home PBX): see the module docstring."""

    def __init__(
        self,
        ami: AmiClient,
        model: CallModel,
        transfer_context: str = "agents",
        *,
        home: str = DEFAULT_PBX,
        others: Sequence[PbxLine] = (),
    ) -> None:
        self._home = home
        self._lines = {home: PbxLine(home, ami, model)}
        self._lines.update((line.name, line) for line in others)
        self._context = transfer_context

    @classmethod
    def over(cls, lines: Sequence[PbxLine], transfer_context: str = "agents") -> CallControl:
        """Call control over these PBXes, the home PBX first."""
        home, *others = lines
        return cls(home.ami, home.model, transfer_context, home=home.name, others=others)

    @property
    def pbxes(self) -> tuple[str, ...]:
        return tuple(self._lines)

    def line(self, pbx: str | None) -> PbxLine:
        """The PBX of that name (None: the home PBX); ``invalid`` if there is none."""
        line = self._lines.get(pbx or self._home)
        if line is None:
            raise DomainError("invalid", f"no PBX named {pbx!r} is followed here")
        return line

    def _lines_for(self, agent: str) -> Iterator[PbxLine]:
        """The agent's own PBX first (where its legs are), then the others."""
        own = self.line(split_device(check_agent(agent))[1])
        yield own
        yield from (line for line in self._lines.values() if line is not own)

    def agent_leg(self, call_key: str, agent: str) -> Channel:
        """The agent's live leg on the call; the newest if it has several."""
        return self._agent_leg(call_key, agent)[1]

    def _agent_leg(self, call_key: str, agent: str) -> tuple[PbxLine, Channel]:
        found = None
        for line in self._lines_for(agent):
            key = model_key(call_key, line.name, line.name == self._home)
            call = line.model.call(key) if key is not None else None
            if call is None or call.ended:
                continue
            found = found or call
            legs = [ch for ch in call.channels.values() if ch.agent == agent and not ch.is_local]
            if legs:
                connected = [ch for ch in legs if ch.connected or ch.answered]
                return line, max(connected or legs, key=lambda ch: ch.connected_seq)
        if found is None:
            raise DomainError("unknown_call", f"no live call {call_key[:80]!r}")
        raise DomainError("not_on_call", f"{agent} is not on call {found.key}")

    def talking_leg(self, agent: str) -> Channel:
        """The leg the agent is talking on now (any call), or ``not_on_call``: for a
        supervisor, who names the agent, not the call."""
        return self._talking_leg(agent)[1]

    def where(self, agent: str) -> str:
        """The name of the PBX the agent is talking on now (see :meth:`talking_leg`)."""
        return self._talking_leg(agent)[0].name

    def _talking_leg(self, agent: str) -> tuple[PbxLine, Channel]:
        for line in self._lines_for(agent):
            legs = [
                ch
                for call in line.model.calls()
                if not call.ended
                for ch in call.channels.values()
                if ch.agent == agent and not ch.is_local and ch.connected
            ]
            if legs:
                return line, max(legs, key=lambda ch: ch.connected_seq)
        raise DomainError("not_on_call", f"{agent} is on no call")

    def _target(self, target: str) -> str:
        if not TARGET.fullmatch(target):
            raise DomainError(
                "invalid",
                f"transfer target {target[:80]!r}: 1 to 32 letters, digits, '_' or '-'",
            )
        return target

    async def send(self, action: str, *, pbx: str | None = None, **fields: str) -> None:
        """Send one AMI action for another service (the supervisor's actions,
        cti.agents.supervision), with call control's refusals: ``refused``,
        ``ami_unavailable``. It goes to ``pbx`` if given, else to the PBX of the device
        its ``Interface`` or ``Channel`` names (the home PBX if neither does); those
        fields go unqualified (``PJSIP/2001@b`` → ``PJSIP/2001``), and an unqualified
        one is taken as ``pbx`` names it (a channel name of that PBX). Devices of two
        PBXes in one action are ``invalid``."""
        named: set[str | None] = set()
        for name in DEVICE_FIELDS:
            if name in fields:
                fields[name], where = split_device(fields[name])
                named.add(where)
        # Unqualified: as ``pbx`` names it when given, else a home PBX device.
        targets = {where or pbx or self._home for where in named} | ({pbx} if pbx else set())
        if len(targets) > 1:
            raise DomainError("invalid", f"{action}: devices on different PBXes")
        await self._send(self.line(targets.pop() if targets else None), action, **fields)

    async def _send(self, line: PbxLine, action: str, **fields: str) -> None:
        where = "" if len(self._lines) == 1 else f" {line.name}"
        try:
            await line.ami.action(action, None, **fields)  # None: the client's own timeout
        except AmiNotConnected:
            raise DomainError(
                "ami_unavailable", f"{action}: not connected to Asterisk{where}; try again"
            ) from None
        except AmiTimeout:
            raise DomainError(
                "ami_unavailable", f"{action}: Asterisk{where} did not answer in time"
            ) from None
        except AmiActionError as exc:
            raise DomainError(
                "refused",
                f"{action} refused by Asterisk{where}: {exc.message.get('Message', '?')}",
            ) from None

    async def blind_transfer(self, call_key: str, agent: str, target: str) -> None:
        exten = self._target(target)
        line, leg = self._agent_leg(call_key, agent)
        if not leg.connected:
            raise DomainError("not_on_call", f"{agent} is not talking on {call_key}")
        await self._send(
            line, "BlindTransfer", Channel=leg.name, Context=self._context, Exten=exten
        )

    async def attended_transfer(self, call_key: str, agent: str, target: str) -> None:
        exten = self._target(target)
        line, leg = self._agent_leg(call_key, agent)
        if not leg.connected:
            raise DomainError("not_on_call", f"{agent} is not talking on {call_key}")
        await self._send(line, "Atxfer", Channel=leg.name, Context=self._context, Exten=exten)

    async def complete_transfer(self, call_key: str, agent: str) -> None:
        line, leg = self._agent_leg(call_key, agent)
        await self._send(line, "Hangup", Channel=leg.name)

    async def cancel_transfer(self, call_key: str, agent: str) -> None:
        line, leg = self._agent_leg(call_key, agent)
        await self._send(line, "CancelAtxfer", Channel=leg.name)

    async def hangup(self, call_key: str, agent: str) -> None:
        line, leg = self._agent_leg(call_key, agent)
        await self._send(line, "Hangup", Channel=leg.name)

    async def pause(
        self, agent: str, paused: bool, reason: str | None = None, queue: str | None = None
    ) -> None:
        """Pause (or resume) the agent's device in every queue, or in ``queue`` only, on
        its PBX; ``reason`` is shown to supervisors and written to the queue log. Needs
        no call."""
        endpoint, pbx = split_device(check_agent(agent))
        line = self.line(pbx)
        fields = {"Interface": endpoint, "Paused": "true" if paused else "false"}
        reason = check_pause_reason(reason)
        if reason is not None:
            fields["Reason"] = reason
        if queue is not None:
            fields["Queue"] = check_queue(queue)
        await self._send(line, "QueuePause", **fields)
