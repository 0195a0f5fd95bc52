"""The model's state and registries, and how a call's state is derived from them.

:class:`ModelState` owns every field the parts share: the registries of live channels,
calls (by each Linkedid and by CTI_CALL_ID), bridges, Local halves, holds and queue
members, the bounded memories of what ended, and the effects of the message being
applied. The parts (:mod:`.channels`, :mod:`.bridges`, :mod:`.queues`,
:mod:`.transfers`, :mod:`.snapshot`) subclass it and add the handlers; the dispatcher
(:mod:`.dispatch`) combines them into :class:`~cti.calls.model.CallModel`.

Why mixins over one state rather than helper objects each holding a piece: the parts
read and change one graph (a hangup touches channels, bridges, holds and consults in
one step), and an event goes through several of them; one ``self`` keeps every access
a plain attribute on the hot path (tens of thousands of events per second) and keeps
the state in one declared place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from cti.ami.protocol import Message
from cti.calls.effects import CallEnded, CallState, CallStateChanged, Effect
from cti.calls.model.records import AgentOf, Call, Channel, ModelStats, default_agent_of


class ModelState:
    """The state every part of the call model shares (see the module docstring)."""

    def __init__(
        self,
        *,
        call_id_variable: str = "CTI_CALL_ID",
        priority_variable: str = "CTI_PRIORITY",
        tier_variable: str = "CTI_TIER",
        rule_variable: str = "CTI_RULE",
        agent_of: AgentOf = default_agent_of,
        device_of: Callable[[str], str] | None = None,
        max_remembered: int = 4096,
        max_members: int = 4096,
    ) -> None:
        self._cid_var = call_id_variable
        self._cid_head = call_id_variable + "="
        self._cid_len = len(self._cid_head)
        self._prio_var = priority_variable
        self._tier_var = tier_variable
        self._rule_var = rule_variable
        self._agent_of = agent_of
        self._device_of = device_of
        self._max_remembered = max_remembered
        self._max_members = max_members
        self.stats = ModelStats()
        self._init_state()

    def _init_state(self) -> None:
        self._channels: dict[str, Channel] = {}
        self._calls: dict[str, Call] = {}  # every Linkedid of a live call → the call
        self._by_call_id: dict[str, Call] = {}
        self._bridges: dict[str, set[Channel]] = {}
        self._local_halves: dict[str, Channel] = {}  # Local base name → a half
        # agent → its legs holding a call, oldest hold first (a dict as an ordered set)
        self._holding: dict[str, dict[Channel, None]] = {}
        self._members: dict[str, tuple[str | None, str | None]] = {}
        self._dead: dict[str, None] = {}  # recently hung-up Uniqueids (FIFO)
        self._ended: dict[str, None] = {}  # recently forgotten Linkedids (FIFO)
        self._restoring = False
        self._seq = 0
        self._out: list[Effect] = []
        self._dirty: list[Call] = []
        self._msg: Message | None = None
        self._at_cache: float | None = None
        self._at_done = False

    # -- public API ------------------------------------------------------------------
    @property
    def restoring(self) -> bool:
        return self._restoring

    def calls(self) -> Iterator[Call]:
        seen: set[int] = set()
        for call in self._calls.values():
            if id(call) not in seen:
                seen.add(id(call))
                yield call

    def call(self, key: str) -> Call | None:
        """A live call by CTI_CALL_ID, by any of its Linkedids, or by a channel's Uniqueid."""
        call = self._by_call_id.get(key) or self._calls.get(key)
        if call is None:
            channel = self._channels.get(key)
            call = channel.call if channel is not None else None
        return call

    def channel(self, uniqueid: str) -> Channel | None:
        return self._channels.get(uniqueid)

    @property
    def size(self) -> tuple[int, int, int]:
        """(calls, channels, bridges) held now: for memory-bound tests and metrics."""
        return len({id(c) for c in self._calls.values()}), len(self._channels), len(self._bridges)

    # -- effects -----------------------------------------------------------------------
    def _at(self) -> float | None:
        if not self._at_done:
            self._at_done = True
            raw = self._msg.fields.get("timestamp") if self._msg is not None else None
            try:
                self._at_cache = float(raw) if raw else None
            except ValueError:
                self._at_cache = None
        return self._at_cache

    def _emit(self, cls: type[Effect], call: Call, **kw: Any) -> None:
        if call.restoring:
            return
        self._out.append(cls(call_id=call.call_id, linkedid=call.linkedid, at=self._at(), **kw))

    def _mark(self, call: Call) -> None:
        if call not in self._dirty:
            self._dirty.append(call)

    def _flush_states(self) -> None:
        dirty, self._dirty = self._dirty, []
        for call in dirty:
            state, agent = self._state_of(call)
            if state is call.state and agent == call.state_agent:
                continue
            call.state = state
            call.state_agent = agent
            if state is not CallState.ROUTING:
                call.progressed = True
            self._emit(CallStateChanged, call, state=state, agent=agent)

    def _state_of(self, call: Call) -> tuple[CallState, str | None]:
        if call.ended:
            return CallState.ENDED, None
        if call.blind_pending or call.consult:
            return CallState.TRANSFERRING, None
        talking = call.talking
        if call.held:
            for channel in talking:
                if channel.uniqueid in call.held:
                    return CallState.ON_HOLD, channel.agent
            if call.origin in call.held:
                return CallState.ON_HOLD, talking[-1].agent if talking else None
        if talking:
            return CallState.TALKING, talking[-1].agent
        ringing = None
        for channel in call.channels.values():
            if channel.ringing and not channel.ring_silent and channel.agent is not None:
                ringing = channel
        if ringing is not None:
            return CallState.RINGING, ringing.agent
        if call.in_queue:
            return CallState.QUEUED, None
        if call.progressed:
            return call.state, call.state_agent  # idle between two steps: keep the last
        return CallState.ROUTING, None

    def _unattributed(self, msg: Message) -> None:
        # A call event whose channel we could not place. Events for channels that already
        # hung up are counted as late_events by _touch; this is anything else.
        if "uniqueid" in msg.fields and msg.fields["uniqueid"] not in self._dead:
            self.stats.unattributed += 1

    def _not_call(self, msg: Message) -> None:
        """An event about the system, queue members or devices: counted, nothing else."""
        self.stats.non_call += 1

    # -- registries --------------------------------------------------------------------
    def _release_hold(self, channel: Channel) -> None:
        channel.call.held.discard(channel.uniqueid)
        legs = self._holding.get(channel.agent or "")
        if legs is not None:
            legs.pop(channel, None)
            if not legs:
                del self._holding[channel.agent or ""]

    def _held_agent(self, call: Call) -> str | None:
        for uniqueid in call.held:
            channel = call.channels.get(uniqueid)
            if channel is not None and channel.agent is not None:
                return channel.agent
        return None

    def _leave_bridge(self, channel: Channel) -> None:
        members = self._bridges.get(channel.bridge or "")
        if members is not None:
            members.discard(channel)
            if not members:
                del self._bridges[channel.bridge or ""]
        channel.bridge = None

    def _end(self, call: Call, cause: str | None, cause_txt: str | None) -> None:
        call.ended = True
        call.ended_at = self._at()
        call.consult = False
        call.blind_pending = False
        self._emit(
            CallEnded,
            call,
            cause=cause,
            cause_txt=cause_txt,
            abandoned=call.abandoned,
            agents=tuple(call.agents),
        )
        self._detach_consult(call)
        self._mark(call)

    def _detach_consult(self, call: Call) -> None:
        parent = call.consult_for
        if parent is not None:
            call.consult_for = None
            parent.consult_calls.discard(call.linkedid)
            if parent.consult and not parent.consult_calls and not parent.consult_legs:
                parent.consult = False
            self._mark(parent)

    def _forget(self, call: Call) -> None:
        for linkedid in call.linkedids:
            if self._calls.get(linkedid) is call:
                del self._calls[linkedid]
                self._remember(self._ended, linkedid)
        if call.call_id is not None and self._by_call_id.get(call.call_id) is call:
            del self._by_call_id[call.call_id]
        self._detach_consult(call)

    def _remember(self, fifo: dict[str, None], key: str) -> None:
        fifo[key] = None
        if len(fifo) > self._max_remembered:
            del fifo[next(iter(fifo))]
