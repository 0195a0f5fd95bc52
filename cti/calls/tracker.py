"""The daemon's AMI event sink: call model → call events → Redis and PostgreSQL.

Every instance runs one: it follows AMI and keeps the call model up to date whether or
not it holds the lease (:mod:`cti.calls.lease`). What it does with the events differs:

* **leader**: events go to the outbox (Redis Streams, :mod:`cti.calls.publisher`) and the
  timeline writer (PostgreSQL), and a call's end shortens its data's expiry;
* **standby**: events are kept in a window of the last ``standby_window_s`` seconds.
  When this instance becomes the leader it hands the whole window to the outbox first.
  Events the old leader already published are skipped by their fingerprints; events it
  never got to publish (it died first, or during the seconds before the lease expired)
  go out now. That is how a handover loses no event and doubles none.

After an AMI reconnect the model is rebuilt from Asterisk's snapshot, which says what
is up now but not what happened while we were away. The tracker compares the calls it
knew before with the rebuilt ones and makes the news up: a call that is gone has
``ended``; an agent leg that is no longer (or newly) talking to the caller has ``left``
(or ``connected``). These use the same fingerprints as the live events, so whatever was
already published is not published again.

AMI events are applied strictly in arrival order by the AMI client's single consumer;
``apply`` never waits on I/O, so a slow Redis never slows the AMI reader.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import structlog

from cti.ami.protocol import Message
from cti.calls.effects import AgentConnected, AgentLeft, CallEnded, Effect
from cti.calls.events import CallEvent, to_events
from cti.calls.model import Call, CallModel

log = structlog.get_logger(__name__)

#: The cause of the ``ended`` event of a call that vanished while AMI was away.
GONE = "gone while AMI was disconnected"


def _talking_legs(call: Call) -> dict[str, str]:
    """channel name -> agent, for every agent leg talking to the caller now."""
    return {ch.name: ch.agent for ch in call.channels.values() if ch.connected and ch.agent}


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
        publish: Callable[[Sequence[CallEvent]], None],
        record: Callable[[CallEvent], object] | None = None,
        call_ended: Callable[[str], object] | None = None,
        standby_window_s: float = 120.0,
        standby_max: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.model = model
        self._publish = publish
        self._record = record
        self._call_ended = call_ended
        self._window_s = standby_window_s
        self._clock = clock
        self._standby: deque[tuple[float, CallEvent]] = deque(maxlen=standby_max)
        self.leader = False
        self.ami_up = False
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

    def apply(self, msg: Message) -> None:
        effects = self.model.apply(msg)
        if effects:
            self._emit(effects)

    def connected(self, up: bool) -> None:
        self.ami_up = up
        if up and self._known_before_reset is not None:
            known, self._known_before_reset = self._known_before_reset, None
            self._emit(self._catch_up(known))

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
            ids = {"call_id": call.call_id or before.call_id, "linkedid": before.linkedid}
            for channel, agent in before.legs.items():
                if channel not in now:
                    effects.append(AgentLeft(**ids, at=None, agent=agent, channel=channel))
            for channel, agent in now.items():
                if channel not in before.legs:
                    effects.append(
                        AgentConnected(
                            **ids,
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
            for event in to_events(effect, now)
        ]
        if not events:
            return
        self.events += len(events)
        if self.leader:
            self._deliver(events)
        else:
            self._standby.extend((now, event) for event in events)

    # -- leadership -----------------------------------------------------------------------
    def set_leader(self, leader: bool) -> None:
        """Called by the lease on every change."""
        if leader == self.leader:
            return
        self.leader = leader
        if leader:
            cutoff = self._clock() - self._window_s
            events = [event for seen, event in self._standby if seen >= cutoff]
            self._standby.clear()
            log.info("taking over call events", replayed=len(events))
            self._deliver(events)

    def keep_unpublished(self, events: Sequence[CallEvent]) -> None:
        """Events the outbox could not publish because the lease was lost: keep them in
        the standby window, ahead of anything newer, for whoever leads next (this
        instance again, perhaps)."""
        if not events:
            return
        now = self._clock()
        self.leader = False
        newer = list(self._standby)
        self._standby.clear()
        self._standby.extend((now, event) for event in events)
        self._standby.extend(newer)

    def _to_everyone_on_the_call(self, event: CallEvent) -> CallEvent:
        """News for everyone on the call names them from the model too, not only from
        the publisher's per-call set in Redis, which a Redis restart empties."""
        if not event.to_call_agents:
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

    @property
    def standby_backlog(self) -> int:
        return len(self._standby)

    def _deliver(self, events: Sequence[CallEvent]) -> None:
        if not events:
            return
        self._publish(events)
        for event in events:
            if self._record is not None:
                self._record(event)
            if event.kind == "ended" and event.call_id and self._call_ended is not None:
                self._call_ended(event.call_id)
