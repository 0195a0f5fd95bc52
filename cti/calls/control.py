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

Hold is not here: AMI has no hold action (hold is a SIP re-INVITE from the phone, which
we follow as Hold/Unhold events). Asking a phone to hold needs a vendor-specific NOTIFY.
"""

from __future__ import annotations

import re

from cti.ami.client import AmiActionError, AmiClient, AmiNotConnected, AmiTimeout
from cti.calls.model import CallModel, Channel
from cti.errors import DomainError
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


class CallControl:
    def __init__(self, ami: AmiClient, model: CallModel, transfer_context: str = "agents") -> None:
        self._ami = ami
        self._model = model
        self._context = transfer_context

    def agent_leg(self, call_key: str, agent: str) -> Channel:
        """The agent's live leg on the call; the newest if it has several."""
        check_agent(agent)
        call = self._model.call(call_key)
        if call is None or call.ended:
            raise DomainError("unknown_call", f"no live call {call_key[:80]!r}")
        legs = [ch for ch in call.channels.values() if ch.agent == agent and not ch.is_local]
        if not legs:
            raise DomainError("not_on_call", f"{agent} is not on call {call.key}")
        connected = [ch for ch in legs if ch.connected or ch.answered]
        return max(connected or legs, key=lambda ch: ch.connected_seq)

    def talking_leg(self, agent: str) -> Channel:
        """The leg the agent is talking on now (any call), or ``not_on_call``: for a
        supervisor, who names the agent, not the call."""
        check_agent(agent)
        legs = [
            ch
            for call in self._model.calls()
            if not call.ended
            for ch in call.channels.values()
            if ch.agent == agent and not ch.is_local and ch.connected
        ]
        if not legs:
            raise DomainError("not_on_call", f"{agent} is on no call")
        return max(legs, key=lambda ch: ch.connected_seq)

    def _target(self, target: str) -> str:
        if not TARGET.fullmatch(target):
            raise DomainError(
                "invalid",
                f"transfer target {target[:80]!r}: 1 to 32 letters, digits, '_' or '-'",
            )
        return target

    async def send(self, action: str, **fields: str) -> None:
        """Send one AMI action for another service on this connection (the supervisor's
        actions, cti.agents.supervision), with call control's refusals: ``refused``,
        ``ami_unavailable``."""
        await self._send(action, **fields)

    async def _send(self, action: str, **fields: str) -> None:
        try:
            await self._ami.action(action, None, **fields)  # None: the client's own timeout
        except AmiNotConnected:
            raise DomainError(
                "ami_unavailable", f"{action}: not connected to Asterisk; try again"
            ) from None
        except AmiTimeout:
            raise DomainError(
                "ami_unavailable", f"{action}: Asterisk did not answer in time"
            ) from None
        except AmiActionError as exc:
            raise DomainError(
                "refused", f"{action} refused by Asterisk: {exc.message.get('Message', '?')}"
            ) from None

    async def blind_transfer(self, call_key: str, agent: str, target: str) -> None:
        exten = self._target(target)
        leg = self.agent_leg(call_key, agent)
        if not leg.connected:
            raise DomainError("not_on_call", f"{agent} is not talking on {call_key}")
        await self._send("BlindTransfer", Channel=leg.name, Context=self._context, Exten=exten)

    async def attended_transfer(self, call_key: str, agent: str, target: str) -> None:
        exten = self._target(target)
        leg = self.agent_leg(call_key, agent)
        if not leg.connected:
            raise DomainError("not_on_call", f"{agent} is not talking on {call_key}")
        await self._send("Atxfer", Channel=leg.name, Context=self._context, Exten=exten)

    async def complete_transfer(self, call_key: str, agent: str) -> None:
        await self._send("Hangup", Channel=self.agent_leg(call_key, agent).name)

    async def cancel_transfer(self, call_key: str, agent: str) -> None:
        await self._send("CancelAtxfer", Channel=self.agent_leg(call_key, agent).name)

    async def hangup(self, call_key: str, agent: str) -> None:
        await self._send("Hangup", Channel=self.agent_leg(call_key, agent).name)

    async def pause(
        self, agent: str, paused: bool, reason: str | None = None, queue: str | None = None
    ) -> None:
        """Pause (or resume) the agent's device in every queue, or in ``queue`` only;
        ``reason`` is shown to supervisors and written to the queue log. Needs no call."""
        fields = {"Interface": check_agent(agent), "Paused": "true" if paused else "false"}
        reason = check_pause_reason(reason)
        if reason is not None:
            fields["Reason"] = reason
        if queue is not None:
            fields["Queue"] = check_queue(queue)
        await self._send("QueuePause", **fields)
