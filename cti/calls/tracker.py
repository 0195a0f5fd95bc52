"""The daemon's AMI event sink: call model → call events, handed over in order.

Every instance runs one and keeps its call model up to date whether or not it holds
the lease. The tracker only turns what the model says into :class:`CallEvent`\\ s and
hands them over (``handover``); whether they are published now or kept for a takeover
is :mod:`cti.calls.leadership`'s decision. It also says when the AMI feed is up and
resynced (``on_connected``): only then may an instance lead.

After an AMI reconnect the model is rebuilt from Asterisk's snapshot, which says what
is up now but not what happened while we were away. The tracker compares the calls it
knew before with the rebuilt ones and makes the news up: a call that is gone has
``ended``; an agent leg that is no longer (or newly) talking to the caller has ``left``
(or ``connected``). These use the same fingerprints as the live events, so whatever was
already published is not published again.

AMI events are applied strictly in arrival order by the AMI client's single consumer;
``apply`` never waits on I/O, so a slow Redis never slows the AMI reader.

``followers`` see the same feed after the model: each message with the effects it
made (and the catch-up's effects, with no message), the resync's start and its end.
The agent states (cti.agents) follow calls this way, without a second call model.

Several PBXes (:mod:`cti.pbx`): one model and one tracker per PBX, each fed by that
PBX's AMI connection. :func:`model_for` builds a PBX's model (its devices named as cti
names them: ``PJSIP/2001@b``); the tracker's ``pbx`` stamps every event it makes, the
catch-up's included, so fingerprints and Linkedid call keys never collide across PBXes
(:func:`cti.calls.events.to_events`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from cti.ami.protocol import Message
from cti.calls.effects import AgentConnected, AgentLeft, CallEnded, Effect
from cti.calls.events import CallEvent, to_events
from cti.calls.model import Call, CallModel
from cti.pbx import Pbx, agent_of

#: The cause of the ``ended`` event of a call that vanished while AMI was away.
GONE = "gone while AMI was disconnected"


def _talking_legs(call: Call) -> dict[str, str]:
    """channel name -> agent, for every agent leg talking to the caller now."""
    return {ch.name: ch.agent for ch in call.channels.values() if ch.connected and ch.agent}


def model_for(pbx: Pbx | None = None) -> CallModel:
    """The call model of one PBX: its channels' and queue members' devices named as cti
    names them (:func:`cti.pbx.agent_of`, :meth:`cti.pbx.Pbx.device`: ``PJSIP/2001`` on
    the home PBX, ``PJSIP/2001@b`` on ``b``; an inter-PBX trunk is never an agent).
    None: the one PBX of an unnamed deployment."""
    if pbx is None:
        return CallModel()
    return CallModel(agent_of=agent_of(pbx), device_of=None if pbx.home else pbx.device)


class Follower(Protocol):
    """What else the tracker feeds (see the module docstring)."""

    def reset(self) -> None: ...

    def follow(self, msg: Message | None, effects: Sequence[Effect]) -> None: ...

    def connected(self, up: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class _Known:
    call_id: str | None
    linkedid: str
    legs: dict[str, str]
    agents: tuple[str, ...]


class CallTracker:
    def __init__(
        self,
        model: CallModel,
        *,
        handover: Callable[[Sequence[CallEvent]], None],
        on_connected: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.time,
        followers: Sequence[Follower] = (),
        pbx: Pbx | None = None,
    ) -> None:
        self.model = model
        #: The PBX this tracker follows: stamps (and namespaces) every event it makes.
        self.pbx = pbx
        self._followers = tuple(followers)
        self._handover = handover
        self._on_connected = on_connected
        self._clock = clock
        self.events = 0
        self._known_before_reset: list[_Known] | None = None

    # -- EventSink ------------------------------------------------------------------------
    def reset(self) -> None:
        if self._known_before_reset is None:  # not already waiting for a snapshot
            self._known_before_reset = [
                _Known(call.call_id, call.linkedid, _talking_legs(call), tuple(call.agents))
                for call in self.model.calls()
                if not call.ended
            ]
        self.model.reset()
        for follower in self._followers:
            follower.reset()

    def apply(self, msg: Message) -> None:
        effects = self.model.apply(msg)
        if effects:
            self._emit(effects)
        for follower in self._followers:
            follower.follow(msg, effects)

    def connected(self, up: bool) -> None:
        if self._on_connected is not None:
            self._on_connected(up)
        if up and self._known_before_reset is not None:
            known, self._known_before_reset = self._known_before_reset, None
            effects = self._catch_up(known)
            self._emit(effects)
            for follower in self._followers:
                follower.follow(None, effects)
        for follower in self._followers:
            follower.connected(up)

    def _catch_up(self, known: Sequence[_Known]) -> list[Effect]:
        """What must have happened while AMI was away (see the module docstring)."""
        effects: list[Effect] = []
        for before in known:
            call = self.model.call(before.call_id or before.linkedid)
            if call is None or call.ended:
                effects.append(
                    CallEnded(
                        call_id=before.call_id,
                        linkedid=before.linkedid,
                        at=None,
                        cause=None,
                        cause_txt=GONE,
                        abandoned=False,
                        agents=before.agents,
                    )
                )
                continue
            now = _talking_legs(call)
            call_id, linkedid = call.call_id or before.call_id, before.linkedid
            for channel, agent in before.legs.items():
                if channel not in now:
                    effects.append(
                        AgentLeft(
                            call_id=call_id,
                            linkedid=linkedid,
                            at=None,
                            agent=agent,
                            channel=channel,
                        )
                    )
            for channel, agent in now.items():
                if channel not in before.legs:
                    effects.append(
                        AgentConnected(
                            call_id=call_id,
                            linkedid=linkedid,
                            at=None,
                            agent=agent,
                            member_name=None,
                            channel=channel,
                            queue=call.queue,
                        )
                    )
        return effects

    def _emit(self, effects: Sequence[Effect]) -> None:
        now = self._clock()
        events = [
            self._to_everyone_on_the_call(event)
            for effect in effects
            for event in to_events(effect, now, self.pbx)
        ]
        if not events:
            return
        self.events += len(events)
        self._handover(events)

    def _to_everyone_on_the_call(self, event: CallEvent) -> CallEvent:
        """News for everyone on the call names them from the model too, not only from
        the publisher's per-call set in Redis, which a Redis restart empties. A named
        PBX's ``ended`` (not for everyone: cti.calls.events) goes to the agents of this
        PBX's part of the call, named the same way."""
        if not event.to_call_agents and event.kind != "ended":
            return event
        agents = list(event.recipients)
        call = self.model.call(event.call_id or event.linkedid)
        if call is not None:
            agents += call.agents
            agents += [ch.agent for ch in call.channels.values() if ch.agent]
        if event.kind == "ended":
            agents += event.data.get("agents", ())
        recipients = tuple(dict.fromkeys(agents))
        return replace(event, recipients=recipients) if recipients != event.recipients else event
