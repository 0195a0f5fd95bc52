"""Dialling and queues: who rings, who gave up, where the caller waits.

``DialBegin`` / ``DialEnd`` and the queue's ``AgentCalled`` / ``AgentRingNoAnswer`` /
``AgentConnect`` mark legs as ringing or answered (the topology, not these events, says
who talks); ``QueueCallerJoin`` / ``Leave`` / ``Abandon`` place the caller. Queue
members are remembered by interface (``QueueMemberStatus``, ``QueueMember``) to name a
member by its state interface: until that is known, a Local member
(``Local/2006@agents/n``) is the phone its ;2 dials, and its ``AgentRinging`` waits for
that dial (tests/fixtures/ami/local_member.txt).
"""

from __future__ import annotations

from cti.ami.protocol import Message
from cti.calls.effects import (
    AgentRingCancelled,
    AgentRinging,
    AgentRingNoAnswer,
    CallAbandoned,
    CallLeftQueue,
)
from cti.calls.model.channels import Channels
from cti.calls.model.records import int_or_none


class Queues(Channels):
    """Dial and queue handlers, and the queue members' names."""

    # -- handlers: dialling and queues -------------------------------------------------
    def _on_dial_begin(self, msg: Message) -> None:
        caller, dest = self._legs(msg)
        if dest is None:
            return
        if dest.ringing or dest.answered or dest.connected or dest.agent is None:
            return
        call = dest.call
        if caller is not None and caller.is_local and caller.peer is not None:
            half = caller.peer
            if half.ringing and half.queue is not None:
                # A Local queue member's ;2 dials the real phone: the ring is the member's.
                dest.ringing = dest.ring_silent = True
                dest.queue, dest.member_name = half.queue, half.member_name
                if half.agent is None:  # the member's agent was not known: now it is
                    half.agent = dest.agent
                    self._emit(
                        AgentRinging,
                        call,
                        agent=dest.agent,
                        member_name=half.member_name,
                        channel=half.name,
                        queue=half.queue,
                    )
                    self._mark(call)
                return
        dest.ringing = True
        call.blind_pending = False
        self._emit(
            AgentRinging, call, agent=dest.agent, member_name=None, channel=dest.name, queue=None
        )
        self._mark(call)

    def _on_dial_end(self, msg: Message) -> None:
        _caller, dest = self._legs(msg)
        if dest is None:
            return
        status = msg.fields.get("dialstatus", "")
        if status == "ANSWER":
            dest.answered = True
            return
        if status in ("RINGING", "PROCEEDING", "PROGRESS", ""):
            return
        if not dest.ringing:
            return
        dest.ringing = False
        call = dest.call
        self._mark(call)
        if dest.ring_silent or dest.agent is None:
            return
        if status == "NOANSWER":
            self._emit(
                AgentRingNoAnswer,
                call,
                agent=dest.agent,
                member_name=dest.member_name,
                channel=dest.name,
                queue=dest.queue,
                ring_time_ms=None,
            )
        else:
            self._emit(AgentRingCancelled, call, agent=dest.agent, channel=dest.name, reason=status)

    def _member(self, msg: Message) -> tuple[str, str | None]:
        fields = msg.fields
        interface = fields.get("interface", "")
        member_name = fields.get("membername")
        known_name, state_interface = self._members.get(interface, (None, None))
        device = state_interface or interface
        if self._device_of is not None and not device.startswith("Local/"):
            device = self._device_of(device)  # the PBX's device name (cti.pbx)
        return device, member_name or known_name

    def _on_agent_called(self, msg: Message) -> None:
        _caller, dest = self._legs(msg)
        if dest is None:
            return
        agent: str | None
        agent, member_name = self._member(msg)
        queue = msg.fields.get("queue")
        if dest.is_local and agent and self._agent_of(agent) is None:
            # A Local member (Local/2006@agents/n) whose state interface is not known yet
            # (no QueueMemberStatus / QueueMember seen for it since start-up): the agent
            # is the phone its ;2 dials; AgentRinging waits for that (_on_dial_begin).
            agent = None
        dest.agent = agent or dest.agent
        dest.member_name = member_name
        dest.queue = queue
        dest.ringing = True
        dest.ring_silent = False
        call = dest.call
        self._mark(call)
        if dest.agent is None:
            return
        self._emit(
            AgentRinging,
            call,
            agent=dest.agent or "",
            member_name=member_name,
            channel=dest.name,
            queue=queue,
        )

    def _on_agent_ring_no_answer(self, msg: Message) -> None:
        _caller, dest = self._legs(msg)
        if dest is None:
            return
        if not dest.ringing:
            return
        dest.ringing = False
        call = dest.call
        agent, member_name = self._member(msg)
        self._emit(
            AgentRingNoAnswer,
            call,
            agent=dest.agent or agent,
            member_name=member_name,
            channel=dest.name,
            queue=msg.fields.get("queue"),
            ring_time_ms=int_or_none(msg.fields.get("ringtime")),
        )
        self._mark(call)

    def _on_agent_connect(self, msg: Message) -> None:
        caller, dest = self._legs(msg)
        if dest is None:
            return
        dest.answered = True
        dest.queue = msg.fields.get("queue") or dest.queue
        if caller is not None:
            caller.call.in_queue = False

    def _on_queue_caller_join(self, msg: Message) -> None:
        channel = self._channel(msg)
        if channel is None:
            return
        call = channel.call
        fields = msg.fields
        call.queue = fields.get("queue")
        call.position = int_or_none(fields.get("position"))
        call.in_queue = True
        call.blind_pending = False
        call.leaving = None
        priority = int_or_none(msg.variable(self._prio_var)) if self._prio_var else None
        if priority is not None:
            call.priority = priority
        call.tier = msg.variable(self._tier_var) or call.tier
        call.rule = msg.variable(self._rule_var) or call.rule
        self._queued(call)

    def _on_queue_caller_leave(self, msg: Message) -> None:
        channel = self._channel(msg)
        if channel is None:
            return
        call = channel.call
        queue = msg.fields.get("queue", "")
        if call.queue == queue:
            call.in_queue = False
            self._mark(call)
        if any(
            leg.answered and leg.queue == queue and leg is not channel
            for leg in call.channels.values()
        ):
            reason = "answered"  # its DialEnd ANSWER came first; AgentConnect follows
        else:
            reason = call.leaving or "exited"
        call.leaving = None
        self._emit(CallLeftQueue, call, queue=queue, reason=reason)

    def _on_queue_caller_abandon(self, msg: Message) -> None:
        """A caller who hung up while queued, or one whom the queue let go: Asterisk
        reports its timeout with QueueCallerAbandon too (app_queue's record_abandoned).
        Only a caller whose channel was asked to hang up first (HangupRequest, the
        caller's BYE; SoftHangupRequest) abandoned; the other timed out and the dialplan
        goes on (tests/fixtures/ami/queue_timeout.txt)."""
        channel = self._channel(msg)
        if channel is None:
            return
        call = channel.call
        if not channel.hangup_requested:
            call.leaving = "timeout"
            return
        fields = msg.fields
        call.abandoned = True
        call.leaving = "abandoned"
        self._emit(
            CallAbandoned,
            call,
            queue=fields.get("queue", ""),
            position=int_or_none(fields.get("position")),
            original_position=int_or_none(fields.get("originalposition")),
            hold_time_s=int_or_none(fields.get("holdtime")),
        )

    def _on_hangup_request(self, msg: Message) -> None:
        channel = self._channel(msg)
        if channel is not None:
            channel.hangup_requested = True

    # -- queue members -----------------------------------------------------------------
    def _remember_member(self, interface: str, name: str | None, state: str | None) -> None:
        if not interface:
            return
        members = self._members
        if interface not in members and len(members) >= self._max_members:
            del members[next(iter(members))]
        members[interface] = (name or None, state or None)

    def _on_queue_member(self, msg: Message) -> None:
        self.stats.non_call += 1
        fields = msg.fields
        self._remember_member(
            fields.get("location", ""), fields.get("name"), fields.get("stateinterface")
        )

    def _on_queue_member_status(self, msg: Message) -> None:
        self.stats.non_call += 1
        fields = msg.fields
        self._remember_member(
            fields.get("interface", ""), fields.get("membername"), fields.get("stateinterface")
        )
