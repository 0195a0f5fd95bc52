"""Resync after a reconnect: forget, then rebuild the calls from Asterisk's lists.

AMI does not replay missed events. The AMI adapter calls :meth:`Snapshot.reset` and asks
Asterisk for ``CoreShowChannels`` and ``QueueStatus``; their list events
(``CoreShowChannel``, ``QueueEntry``, ``QueueMember``) come through ``apply`` with any
live events, in arrival order, and rebuild the calls. ``CoreShowChannelsComplete``
emits one :class:`~cti.calls.effects.CallRestored` per rebuilt call.
"""

from __future__ import annotations

from cti.ami.protocol import Message
from cti.calls.effects import CallRestored, CallState
from cti.calls.model.bridges import Bridges
from cti.calls.model.records import SNAP, int_or_none


class Snapshot(Bridges):
    """``reset`` and the handlers of the resync's list events."""

    def reset(self) -> None:
        """Forget every call (the AMI connection was lost; queue members are kept).

        Until the next ``CoreShowChannelsComplete`` the model is *restoring*: a call it
        learns from ``CoreShowChannel``, or from a live event about a channel it has not
        seen created, emits nothing until then, when it is reported once as
        :class:`CallRestored`. A call whose ``Newchannel`` arrives meanwhile is new and
        reported as usual. ``QueueEntry`` / ``QueueMember`` (QueueStatus) fill in queue,
        position, priority and member names whenever they arrive."""
        members = self._members  # queue members outlive a reconnect; QueueStatus refreshes
        self._init_state()
        self._members = members
        self._restoring = True

    # -- handlers: snapshot (after reset) ----------------------------------------------
    def _on_core_show_channel(self, msg: Message) -> None:
        channel = self._touch(msg, SNAP)
        if channel is None:
            return
        fields = msg.fields
        call = channel.call
        bridge = fields.get("bridgeid")
        if bridge and channel.bridge != bridge:
            if channel.bridge is not None:
                self._leave_bridge(channel)
            self._bridges.setdefault(bridge, set()).add(channel)
            channel.bridge = bridge
        state = fields.get("channelstate")
        if channel.uniqueid != call.origin and not channel.is_local:
            if state == "6":
                channel.answered = True
            elif state == "5":
                channel.ringing = True
        elif channel.uniqueid == call.origin and fields.get("application") == "Queue":
            call.in_queue = True
            call.queue = (fields.get("applicationdata") or "").split(",", 1)[0] or call.queue

    def _on_core_show_channels_complete(self, msg: Message) -> None:
        self._restoring = False
        restored = [call for call in self.calls() if call.restoring]
        for call in restored:
            self._topology(call)
            call.state, call.state_agent = self._state_of(call)
            call.progressed = call.state is not CallState.ROUTING
        for call in restored:
            call.restoring = False
            if call in self._dirty:
                self._dirty.remove(call)
            origin = call.channels.get(call.origin)
            self._emit(
                CallRestored,
                call,
                channel=origin.name if origin is not None else call.origin_name,
                state=call.state,
                agent=call.state_agent,
                agents=tuple(channel.agent or "" for channel in call.talking),
                queue=call.queue if call.in_queue else None,
            )

    def _on_queue_entry(self, msg: Message) -> None:
        fields = msg.fields
        channel = self._channels.get(fields.get("uniqueid", ""))
        if channel is None:
            self.stats.snapshot_misses += 1
            return
        call = channel.call
        call.queue = fields.get("queue")
        call.position = int_or_none(fields.get("position"))
        priority = int_or_none(fields.get("priority"))
        if priority is not None:
            call.priority = priority
        call.in_queue = True
        self._queued(call)
