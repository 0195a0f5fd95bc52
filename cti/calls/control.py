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

TARGET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
AGENT = re.compile(r"[A-Za-z0-9]+/[A-Za-z0-9_.@-]{1,64}")


class CallControlError(Exception):
    """``code`` is one of ``invalid``, ``unknown_call``, ``not_on_call``,
    ``ami_unavailable``, ``refused``; the message says what to do about it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class CallControl:
    def __init__(self, ami: AmiClient, model: CallModel, transfer_context: str = "agents") -> None:
        self._ami = ami
        self._model = model
        self._context = transfer_context

    def agent_leg(self, call_key: str, agent: str) -> Channel:
        """The agent's live leg on the call; the newest if it has several."""
        if not AGENT.fullmatch(agent):
            raise CallControlError("invalid", f"agent {agent[:80]!r} is not a device name")
        call = self._model.call(call_key)
        if call is None or call.ended:
            raise CallControlError("unknown_call", f"no live call {call_key[:80]!r}")
        legs = [ch for ch in call.channels.values() if ch.agent == agent and not ch.is_local]
        if not legs:
            raise CallControlError("not_on_call", f"{agent} is not on call {call.key}")
        connected = [ch for ch in legs if ch.connected or ch.answered]
        return max(connected or legs, key=lambda ch: ch.connected_seq)

    def _target(self, target: str) -> str:
        if not TARGET.fullmatch(target):
            raise CallControlError(
                "invalid",
                f"transfer target {target[:80]!r}: 1 to 32 letters, digits, '_' or '-'",
            )
        return target

    async def _send(self, action: str, **fields: str) -> None:
        try:
            await self._ami.action(action, **fields)
        except AmiNotConnected:
            raise CallControlError(
                "ami_unavailable", f"{action}: not connected to Asterisk; try again"
            ) from None
        except AmiTimeout:
            raise CallControlError(
                "ami_unavailable", f"{action}: Asterisk did not answer in time"
            ) from None
        except AmiActionError as exc:
            raise CallControlError(
                "refused", f"{action} refused by Asterisk: {exc.message.get('Message', '?')}"
            ) from None

    async def blind_transfer(self, call_key: str, agent: str, target: str) -> None:
        exten = self._target(target)
        leg = self.agent_leg(call_key, agent)
        if not leg.connected:
            raise CallControlError("not_on_call", f"{agent} is not talking on {call_key}")
        await self._send("BlindTransfer", Channel=leg.name, Context=self._context, Exten=exten)

    async def attended_transfer(self, call_key: str, agent: str, target: str) -> None:
        exten = self._target(target)
        leg = self.agent_leg(call_key, agent)
        if not leg.connected:
            raise CallControlError("not_on_call", f"{agent} is not talking on {call_key}")
        await self._send("Atxfer", Channel=leg.name, Context=self._context, Exten=exten)

    async def complete_transfer(self, call_key: str, agent: str) -> None:
        await self._send("Hangup", Channel=self.agent_leg(call_key, agent).name)

    async def cancel_transfer(self, call_key: str, agent: str) -> None:
        await self._send("CancelAtxfer", Channel=self.agent_leg(call_key, agent).name)

    async def hangup(self, call_key: str, agent: str) -> None:
        await self._send("Hangup", Channel=self.agent_leg(call_key, agent).name)
