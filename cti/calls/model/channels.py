"""Channels and calls: placing every event's channel in a call.

A channel joins the call of its Linkedid, creates one when none is live, moves when its
Linkedid changes (it met an older call in a bridge), and brings its call into another
when it shows that call's CTI_CALL_ID. The Newchannel / Rename / Hangup handlers live
here; so does the fallback for events that only refresh a channel's snapshot.
"""

from __future__ import annotations

from cti.ami.protocol import Message
from cti.calls.effects import (
    AgentLeft,
    AgentRingCancelled,
    CallIdentified,
    CallMerged,
    CallQueued,
    CallStarted,
)
from cti.calls.model.records import DEST, SNAP, Call, Channel, Snap, local_base
from cti.calls.model.state import ModelState


class Channels(ModelState):
    """Finds, creates, moves and merges channels and calls (see the module docstring)."""

    # -- provided by the parts built on this one -----------------------------------------
    def _topology(self, call: Call) -> None:
        """Recompute who the caller talks to (:mod:`.bridges`)."""
        raise NotImplementedError

    def _maybe_consult_leg(self, channel: Channel, msg: Message, snap: Snap) -> None:
        """A new leg may start a consultation (:mod:`.transfers`)."""
        raise NotImplementedError

    def _maybe_phone_consult(self, channel: Channel, msg: Message, snap: Snap) -> None:
        """A new call from an agent's phone may be a consultation (:mod:`.transfers`)."""
        raise NotImplementedError

    # -- channels and calls ------------------------------------------------------------
    def _queued(self, call: Call) -> None:
        """The caller waits in ``call.queue``: live (QueueCallerJoin) and at a resync
        (QueueEntry) alike, so both say it the same way."""
        call.in_queue = True
        self._emit(
            CallQueued,
            call,
            queue=call.queue or "",
            position=call.position,
            priority=call.priority,
            tier=call.tier,
            rule=call.rule,
        )
        self._mark(call)

    def _touch(
        self, msg: Message, snap: Snap, create: bool = False, relink: bool = True
    ) -> Channel | None:
        """The channel of one snapshot in ``msg``, created if new, updated otherwise.

        ``relink=False`` for snapshots that may be older than events already seen: a
        transfer event describes the parties as they were when the transfer started
        (observed, tests/fixtures/ami/attended_transfer_phone.txt: ``AttendedTransfer``
        comes after the target's ``BridgeEnter`` with the caller's Linkedid, yet shows
        the target's old Linkedid). Their Linkedid must not move a channel back."""
        fields = msg.fields
        uniqueid = fields.get(snap.uniqueid)
        if not uniqueid:
            return None
        channel = self._channels.get(uniqueid)
        if channel is None:
            if uniqueid in self._dead:
                self.stats.late_events += 1
                return None
            linkedid = fields.get(snap.linkedid) or uniqueid
            if not create and linkedid in self._ended and linkedid not in self._calls:
                self.stats.late_events += 1  # out of order, after its call was over
                return None
            if not create and not self._restoring:
                self.stats.late_channels += 1
            channel = self._new_channel(msg, snap, uniqueid, linkedid, create)
        elif relink:
            shown = fields.get(snap.linkedid)
            if shown and shown != channel.linkedid:
                self._relink(channel, shown)
        first = fields.get(snap.chanvariable)
        if first is not None:
            call_id: str | None
            if first.startswith(self._cid_head):
                call_id = first[self._cid_len :]
            else:
                call_id = msg.variable(self._cid_var, snap.prefix)
            if call_id and call_id != channel.call_id:
                channel.call_id = call_id
                self._identify(channel, call_id)
        return channel

    def _new_channel(
        self, msg: Message, snap: Snap, uniqueid: str, linkedid: str, live: bool
    ) -> Channel:
        fields = msg.fields
        name = fields.get(snap.channel) or uniqueid
        call = self._calls.get(linkedid)
        new_call = call is None
        if call is None:
            call = Call(linkedid=linkedid, origin=uniqueid, origin_name=name, started_at=self._at())
            call.linkedids.add(linkedid)
            call.restoring = self._restoring and not live
            self._calls[linkedid] = call
        elif call.restoring and uniqueid == linkedid:
            call.origin, call.origin_name = uniqueid, name  # the real originator, late
        channel = Channel(uniqueid, name, linkedid, call)
        self._channels[uniqueid] = channel
        call.channels[uniqueid] = channel
        if channel.is_local:
            base = local_base(name)
            if base is not None:
                other = self._local_halves.pop(base, None)
                if other is not None and other.uniqueid in self._channels:
                    channel.peer, other.peer = other, channel
                else:
                    self._local_halves[base] = channel
        else:
            channel.agent = self._agent_of(name)
        if new_call:
            self._emit(
                CallStarted,
                call,
                channel=name,
                caller=fields.get(snap.callerid),
                context=fields.get(snap.context),
                exten=fields.get(snap.exten),
            )
            self._mark(call)
            if live and channel.agent is not None:
                self._maybe_phone_consult(channel, msg, snap)
        elif live and not call.restoring:
            self._maybe_consult_leg(channel, msg, snap)
        return channel

    def _identify(self, channel: Channel, call_id: str) -> None:
        call = channel.call
        if call.call_id == call_id:
            return
        if call.call_id is not None:
            self.stats.call_id_conflicts += 1
            return
        owner = self._by_call_id.get(call_id)
        if owner is not None and owner is not call:
            self._merge(call, owner)
            return
        call.call_id = call_id
        self._by_call_id[call_id] = call
        self._emit(CallIdentified, call)

    def _relink(self, channel: Channel, linkedid: str) -> None:
        """The channel's Linkedid changed (it joined a bridge with an older call)."""
        channel.linkedid = linkedid
        old = channel.call
        target = self._calls.get(linkedid)
        if target is None:
            old.linkedids.add(linkedid)
            self._calls[linkedid] = old
            return
        if target is not old:
            self._move(channel, target)

    def _move(self, channel: Channel, target: Call) -> None:
        old = channel.call
        if channel.connected:
            self._emit(AgentLeft, old, agent=channel.agent or channel.name, channel=channel.name)
            channel.connected = False
        self._release_hold(channel)
        del old.channels[channel.uniqueid]
        old.consult_legs.discard(channel.uniqueid)
        channel.call = target
        target.channels[channel.uniqueid] = channel
        self._topology(target)
        self._mark(target)
        if not old.channels:
            self._emit(CallMerged, old, into_call_id=target.call_id, into_linkedid=target.linkedid)
            old.ended = True
            self._forget(old)
        else:
            if channel.uniqueid == old.origin and not old.ended:
                self._end(old, None, None)
            self._topology(old)
            self._mark(old)

    def _merge(self, call: Call, into: Call) -> None:
        """``call`` is part of ``into`` (same CTI_CALL_ID): move everything over."""
        for channel in list(call.channels.values()):
            if channel.connected:
                channel.connected = False
            channel.call = into
            into.channels[channel.uniqueid] = channel
        into.held |= call.held
        for linkedid in call.linkedids:
            self._calls[linkedid] = into
            into.linkedids.add(linkedid)
        self._emit(CallMerged, call, into_call_id=into.call_id, into_linkedid=into.linkedid)
        call.channels.clear()
        call.linkedids.clear()
        self._detach_consult(call)
        if call in self._dirty:
            self._dirty.remove(call)
        self._topology(into)
        self._mark(into)

    def _channel(self, msg: Message) -> Channel | None:
        """The channel an event is about; an unknown one is reported as unattributed."""
        channel = self._touch(msg, SNAP)
        if channel is None:
            self._unattributed(msg)
        return channel

    def _legs(self, msg: Message) -> tuple[Channel | None, Channel | None]:
        """The caller and the dialled leg of a dial or queue event; both are touched.

        An event without a known dialled leg is reported as unattributed.
        """
        caller = self._touch(msg, SNAP)
        dest = self._touch(msg, DEST)
        if dest is None:
            self._unattributed(msg)
        return caller, dest

    def _touch_only(self, msg: Message) -> None:
        """An event that only tells us a channel exists / what its snapshot says now."""
        if self._touch(msg, SNAP) is None:
            self._unattributed(msg)

    # -- handlers: channels ------------------------------------------------------------
    def _on_newchannel(self, msg: Message) -> None:
        self._touch(msg, SNAP, create=True)

    def _on_rename(self, msg: Message) -> None:
        channel = self._channels.get(msg.fields.get("uniqueid", ""))
        if channel is None:
            self._unattributed(msg)
            return
        channel.name = msg.fields.get("newname") or channel.name

    def _on_hangup(self, msg: Message) -> None:
        channel = self._channel(msg)
        if channel is None:
            return
        call = channel.call
        uniqueid = channel.uniqueid
        del self._channels[uniqueid]
        self._remember(self._dead, uniqueid)
        if channel.bridge is not None:
            self._leave_bridge(channel)
        if channel.peer is not None:
            channel.peer.peer = None
            channel.peer = None
        if channel.is_local:
            base = local_base(channel.name)
            if base is not None and self._local_halves.get(base) is channel:
                del self._local_halves[base]
        if call.held:
            self._release_hold(channel)
        del call.channels[uniqueid]
        if (
            channel.ringing
            and not channel.answered
            and not channel.ring_silent
            and channel.agent is not None
        ):
            self._emit(
                AgentRingCancelled, call, agent=channel.agent, channel=channel.name, reason="HANGUP"
            )
        if channel.connected:
            self._emit(AgentLeft, call, agent=channel.agent or channel.name, channel=channel.name)
        if call.consult_legs:
            call.consult_legs.discard(uniqueid)
            if call.consult and not call.consult_legs and not call.consult_calls:
                call.consult = False  # the consultation was abandoned
        fields = msg.fields
        if uniqueid == call.origin and not call.ended:
            self._end(call, fields.get("cause"), fields.get("cause-txt"))
        if not call.channels:
            if not call.ended:
                self._end(call, fields.get("cause"), fields.get("cause-txt"))
            self._forget(call)
        else:
            self._topology(call)
        self._mark(call)
