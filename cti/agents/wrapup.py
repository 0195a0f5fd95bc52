"""The wrap-up cti owns: pause the agent in Asterisk after a queue call, end it on the
disposition or at the deadline, on time across a leader failover and an Asterisk restart.

Every instance's board (:class:`~cti.agents.state.AgentBoard`) starts a wrap-up when an
agent's leg of a queue call with ``wrapup_s`` > 0 ends. What happens then is this
service's, and only the AMI leader's (``is_leader``) to do:

1. **start**: write the wrap-up to Redis (:class:`~cti.agents.store.AgentStore`), then
   pause each of the agent's memberships that is not paused already, with the reason
   ``wrap-up`` (``QueuePause`` per queue, so a membership the agent paused by choice
   keeps its reason);
2. **hold**: every tick, a membership of an agent in wrap-up that Asterisk shows
   unpaused is paused again (at most every ``repause_s``): after an Asterisk restart
   (members come back unpaused), a membership added meanwhile, a takeover;
3. **end**, when the disposition was saved (the record is ``done``) or ``until`` passed:
   unpause the memberships paused for ``wrap-up`` (never one the agent paused by
   choice before or during the wrap-up: its reason is theirs), then remove the record,
   then end the board's wrap-up. Unpausing first means a leader dying half-way leaves
   the record for the next one, which unpauses again (harmless) and removes it.

Redis is the truth: every tick every instance brings its board in line with the
records (a standby too, so its view is right the moment it takes over). A wrap-up the
board has but Redis has not is ended, unless this instance saw it start moments ago
(``grace_s``) and its leader may have died before writing it: then the new leader
writes it itself.

Several PBXes (:mod:`cti.pbx`): one service per PBX, with that PBX's board and that
PBX's lease as ``is_leader``, so a wrap-up of an agent on PBX ``b`` is led by ``b``'s
leader, whichever PBX the instance leads too. It reads only its PBX's records from the
shared hash, and every ``QueuePause`` names the PBX it is for (``pause``'s first
argument) with the member's interface as that PBX knows it (``PJSIP/2001``, never
``PJSIP/2001@b``): the composition sends it on that PBX's AMI connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

import structlog
from redis.exceptions import RedisError

from cti.agents.state import WRAPUP_REASON, AgentBoard, AgentChanged, WrapUp
from cti.agents.store import AgentStore, WrapUpRecord
from cti.errors import DomainError
from cti.pbx import split_device

log = structlog.get_logger(__name__)

#: ``pause(pbx, interface, paused, reason, queue)``: one QueuePause
#: (:meth:`cti.calls.control.CallControl.pause`) on the AMI connection of the PBX of that
#: name, ``interface`` unqualified (as that PBX names the member).
Pause = Callable[[str, str, bool, str | None, str | None], Awaitable[None]]


class WrapUpService:
    def __init__(
        self,
        board: AgentBoard,
        store: AgentStore,
        pause: Pause,
        *,
        is_leader: Callable[[], bool],
        emit: Callable[[list[AgentChanged]], None],
        clock: Callable[[], float] = time.time,
        tick_s: float = 0.25,
        repause_s: float = 2.0,
        grace_s: float = 3.0,
    ) -> None:
        self._board = board
        self._store = store
        self._pause = pause
        self._is_leader = is_leader
        self._emit = emit
        self._clock = clock
        self._tick_s = tick_s
        self._repause_s = repause_s
        self._grace_s = grace_s
        self._wake = asyncio.Event()
        self._noticed: dict[str, float] = {}  # agent -> when this instance saw its wrap-up start
        self._to_write: dict[str, WrapUp] = {}  # started while leading, not yet in Redis
        self._requested: dict[tuple[str, str, bool], float] = {}  # (agent, queue, paused)
        self.started = 0
        self.ended = 0
        self.failures = 0

    # -- from the board (every instance) ------------------------------------------------------
    def changed(self, changes: Sequence[AgentChanged]) -> None:
        leading = self._is_leader()
        for change in changes:
            until = change.status.wrapup_until
            before = change.before.wrapup_until if change.before is not None else None
            agent = change.status.agent
            if until is None or until == before:
                continue
            wrap = self._board.wrap_up(agent)
            if wrap is None:
                continue
            self._noticed[agent] = self._clock()
            if leading:
                self._to_write[agent] = wrap
                self._wake.set()

    # -- running --------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.tick()
            except (RedisError, OSError) as exc:
                self.failures += 1
                log.warning("wrap-up tick failed; retrying", error=repr(exc))
            self._wake.clear()
            waiters = [asyncio.ensure_future(e.wait()) for e in (self._wake, stop)]
            try:
                await asyncio.wait(waiters, timeout=self._tick_s, return_when="FIRST_COMPLETED")
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def tick(self) -> None:
        leading = self._is_leader()
        now = self._clock()
        if leading:
            await self._write_started()
        records = await self._store.wrap_ups(self._board.owns)
        self._sync(records, now, leading)
        if not leading:
            self._to_write.clear()
            return
        for agent, (record, raw) in records.items():
            if record.done or record.until <= now:
                await self._finish(agent, raw)
            else:
                await self._hold(agent, now)
        for agent in self._board.due(now):  # a wrap-up Redis never heard of
            if agent not in records and agent not in self._to_write:
                await self._unpause(agent)
                self._emit(self._board.end_wrap_up(agent, now))

    async def _write_started(self) -> None:
        while self._to_write:
            agent, wrap = next(iter(self._to_write.items()))
            if self._board.wrap_up(agent) == wrap:
                await self._store.put_wrap_up(agent, wrap)
                self.started += 1
                log.info("wrap-up started", agent=agent, until=wrap.until, queue=wrap.queue)
            del self._to_write[agent]

    def _sync(
        self, records: dict[str, tuple[WrapUpRecord, str]], now: float, leading: bool
    ) -> None:
        """Bring the board in line with Redis (the module docstring's last paragraph)."""
        changes: list[AgentChanged] = []
        for agent, (record, _raw) in records.items():
            if not record.done:
                changes += self._board.restore_wrap_up(agent, record.wrap)
        for agent, status in self._board.snapshot().items():
            if status.wrapup_until is None or agent in records or agent in self._to_write:
                continue
            if now - self._noticed.get(agent, float("-inf")) < self._grace_s:
                wrap = self._board.wrap_up(agent)
                if leading and wrap is not None:
                    self._to_write[agent] = wrap  # its leader may have died before writing it
                continue
            changes += self._board.end_wrap_up(agent, now)
        if changes:
            self._emit(changes)

    async def _hold(self, agent: str, now: float) -> None:
        status = self._board.status(agent)
        if status is None:
            return
        interfaces = self._board.interfaces(agent)
        device = split_device(agent)[0]  # a member's interface, if the board knows none
        for membership in status.memberships:
            if membership.paused:
                continue
            key = (agent, membership.queue, True)
            if now - self._requested.get(key, float("-inf")) < self._repause_s:
                continue
            self._requested[key] = now
            await self._send(interfaces.get(membership.queue) or device, True, membership.queue)

    async def _unpause(self, agent: str) -> None:
        status = self._board.status(agent)
        if status is None:
            return
        interfaces = self._board.interfaces(agent)
        device = split_device(agent)[0]
        for membership in status.memberships:
            ours = membership.paused and membership.reason == WRAPUP_REASON
            # A pause we asked for that Asterisk has not confirmed yet is ours too.
            asked = (agent, membership.queue, True) in self._requested
            if ours or (asked and not membership.paused):
                interface = interfaces.get(membership.queue) or device
                await self._send(interface, False, membership.queue)
            self._requested.pop((agent, membership.queue, True), None)

    async def _finish(self, agent: str, raw: str) -> None:
        await self._unpause(agent)
        if not await self._store.drop_wrap_up(agent, raw):
            return  # changed meanwhile (a new wrap-up): the next tick looks again
        self.ended += 1
        self._noticed.pop(agent, None)
        log.info("wrap-up ended", agent=agent)
        self._emit(self._board.end_wrap_up(agent, self._clock()))

    async def _send(self, interface: str, paused: bool, queue: str) -> None:
        """One QueuePause to the board's PBX, ``interface`` as that PBX names it."""
        pbx = self._board.pbx_name
        try:
            await self._pause(pbx, interface, paused, WRAPUP_REASON if paused else None, queue)
        except DomainError as exc:
            self.failures += 1
            log.warning(
                "wrap-up pause not applied",
                pbx=pbx,
                interface=interface,
                queue=queue,
                paused=paused,
                error=exc.message,
            )
