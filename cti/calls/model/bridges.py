"""Bridges and Local pairs: who the caller is connected to.

The caller talks to every non-Local leg reachable from the call's origin through
bridges (``BridgeEnter`` / ``BridgeLeave`` / ``BridgeMerge`` / ``BridgeDestroy``) and
Local channel pairs (``;1`` <-> ``;2``, by name and by ``LocalBridge``). Queue events
only name the queue and the member; the topology says who answered, including an agent
reached through ``Local/2003@agents-...;1/;2`` after an attended transfer.
"""

from __future__ import annotations

from cti.ami.protocol import Message
from cti.calls.effects import AgentConnected
from cti.calls.model.channels import Channels
from cti.calls.model.records import LOCAL_ONE, LOCAL_TWO, Call, Channel, by_connection, local_base


class Bridges(Channels):
    """The topology walk and the bridge / Local pair handlers."""

    # -- topology ----------------------------------------------------------------------
    def _topology(self, call: Call) -> None:
        """Recompute which agent legs the caller is connected to; emit AgentConnected for
        the new ones."""
        origin = call.channels.get(call.origin)
        if origin is None or call.ended:
            call.talking = []
            return
        bridges = self._bridges
        seen = {origin}
        stack: list[tuple[Channel, tuple[Channel, ...]]] = [(origin, ())]
        talking: list[Channel] = []
        while stack:
            channel, via = stack.pop()
            neighbours: list[Channel] = []
            if channel.bridge is not None:
                neighbours.extend(bridges.get(channel.bridge, ()))
            if channel.peer is not None:
                neighbours.append(channel.peer)
            for other in neighbours:
                if other in seen or other.call is not call:
                    continue  # a leg of another call in the bridge: it is relinked soon
                seen.add(other)
                if other.is_local:
                    stack.append((other, (*via, other)))
                elif other.agent is not None:
                    talking.append(other)
                    if not other.connected:
                        self._connected(call, other, via)
        talking.sort(key=by_connection)
        call.talking = talking

    def _connected(self, call: Call, channel: Channel, via: tuple[Channel, ...]) -> None:
        channel.connected = True
        channel.ringing = False
        channel.ring_silent = False
        self._seq += 1
        channel.connected_seq = self._seq
        queue, member, agent = channel.queue, channel.member_name, channel.agent
        for local in via:
            local.ringing = False
            if queue is None and local.queue is not None:
                queue, member = local.queue, local.member_name
                agent = local.agent or agent
        if agent is None:
            return
        if not call.agents or call.agents[-1] != agent:
            call.agents.append(agent)
        call.blind_pending = False
        call.in_queue = False
        self._emit(
            AgentConnected,
            call,
            agent=agent,
            member_name=member,
            channel=channel.name,
            queue=queue,
            via=tuple(local.name for local in via),
        )
        self._mark(call)

    def _party_behind(self, channel: Channel) -> Channel | None:
        """The agent leg a transfer target stands for: itself, or for a Local ;1 the
        first agent leg on the far side of its ;2 (bridges and further Local pairs)."""
        if not channel.is_local:
            return channel
        bridges = self._bridges
        seen = {channel}
        stack = [channel.peer] if channel.peer is not None else []
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            if not current.is_local:
                if current.agent is not None:
                    return current
                continue
            if current.peer is not None:
                stack.append(current.peer)
            if current.bridge is not None:
                stack.extend(bridges.get(current.bridge, ()))
        return None

    # -- handlers: bridges and Local pairs ---------------------------------------------
    def _on_bridge_enter(self, msg: Message) -> None:
        channel = self._channel(msg)
        if channel is None:
            return
        bridge = msg.fields.get("bridgeuniqueid")
        if not bridge or channel.bridge == bridge:
            return
        if channel.bridge is not None:
            self._leave_bridge(channel)
        members = self._bridges.get(bridge)
        if members is None:
            members = self._bridges[bridge] = set()
        members.add(channel)
        channel.bridge = bridge
        self._topology(channel.call)
        for other in members:
            if other.call is not channel.call:
                self._topology(other.call)
        self._mark(channel.call)

    def _on_bridge_leave(self, msg: Message) -> None:
        channel = self._channel(msg)
        if channel is None:
            return
        if channel.bridge != msg.fields.get("bridgeuniqueid"):
            return
        self._leave_bridge(channel)
        self._topology(channel.call)
        self._mark(channel.call)

    def _on_bridge_merge(self, msg: Message) -> None:
        fields = msg.fields
        source = self._bridges.pop(fields.get("frombridgeuniqueid", ""), None)
        target_id = fields.get("tobridgeuniqueid", "")
        if not source or not target_id:
            return
        target = self._bridges.setdefault(target_id, set())
        calls = []
        for channel in source:
            channel.bridge = target_id
            target.add(channel)
            if channel.call not in calls:
                calls.append(channel.call)
        for call in calls:
            self._topology(call)
            self._mark(call)

    def _on_bridge_destroy(self, msg: Message) -> None:
        members = self._bridges.pop(msg.fields.get("bridgeuniqueid", ""), None)
        if members:
            for channel in members:
                channel.bridge = None
                self._topology(channel.call)
                self._mark(channel.call)

    def _on_local_bridge(self, msg: Message) -> None:
        one = self._touch(msg, LOCAL_ONE)
        two = self._touch(msg, LOCAL_TWO)
        if one is None or two is None:
            self._unattributed(msg)
            return
        if one.peer is not two:
            one.peer, two.peer = two, one
            base = local_base(one.name)
            if base is not None and self._local_halves.get(base) in (one, two):
                del self._local_halves[base]
            self._topology(one.call)
            self._mark(one.call)
