"""Agent states on every instance; their news and their Redis copy from the leader.

:class:`AgentService` follows the call tracker (:class:`cti.calls.tracker.Follower`): each
AMI message, with the effects the call model made of it, goes to the
:class:`~cti.agents.state.AgentBoard`; each change it reports

* becomes an ``agent_state`` event handed to the call events' leadership
  (``handover``): the leader publishes it to the supervisors' stream and the agent's
  own, a standby keeps it for a takeover (cti.calls.leadership), and the leader's
  record hook writes the intervals it closed to PostgreSQL (:mod:`cti.agents.store`);
* goes to the wrap-up service (:mod:`cti.agents.wrapup`);
* goes to every ``on_change`` listener, on every instance (the wallboard: a listener
  that must act only on the leader asks ``leading()``);
* is copied, by the leader only, into the ``cti:agents:state`` hash
  (:meth:`run`: batched, off the AMI path; a new leader writes the whole board).

One service per PBX (:mod:`cti.pbx`): its board is fed that PBX's tracker and names the
agents as cti does (``PJSIP/2001@b``); ``leading`` is that PBX's lease, so the leader
of PBX ``b`` publishes and writes ``b``'s agents only (and replaces only those in the
shared hash when it takes over).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import structlog
from redis.exceptions import RedisError

from cti.agents.news import agent_event
from cti.agents.state import AgentBoard, AgentChanged
from cti.agents.store import AgentStore
from cti.ami.protocol import Message
from cti.backoff import Backoff
from cti.calls.effects import Effect
from cti.calls.events import CallEvent

log = structlog.get_logger(__name__)

Listener = Callable[[Sequence[AgentChanged]], None]


class AgentService:
    def __init__(
        self,
        board: AgentBoard,
        store: AgentStore,
        *,
        handover: Callable[[Sequence[CallEvent]], None],
        leading: Callable[[], bool],
        on_change: Sequence[Listener] = (),
        backoff: Backoff | None = None,
    ) -> None:
        self.board = board
        self._store = store
        self._handover = handover
        self.leading = leading
        self._listeners: list[Listener] = list(on_change)
        self._backoff = backoff or Backoff(initial=0.1, cap=5.0)
        self._dirty: set[str] = set()
        self._wrote_all = False
        self._wake = asyncio.Event()
        self.changes = 0

    def listen(self, listener: Listener) -> None:
        """Add an ``on_change`` listener (called in order, on the AMI consumer: quick)."""
        self._listeners.append(listener)

    # -- Follower (from the tracker) ----------------------------------------------------------
    def reset(self) -> None:
        self.board.reset()

    def follow(self, msg: Message | None, effects: Sequence[Effect]) -> None:
        changes = self.board.apply_effects(effects) if effects else []
        if msg is not None:
            changes += self.board.apply(msg)
        self.emit(changes)

    def connected(self, up: bool) -> None:
        if up:
            self.emit(self.board.resynced())

    # -- news ----------------------------------------------------------------------------------
    def emit(self, changes: Sequence[AgentChanged]) -> None:
        """Hand the board's changes on (the module docstring's list)."""
        if not changes:
            return
        self.changes += len(changes)
        self._handover([agent_event(change) for change in changes])
        for listener in self._listeners:
            try:
                listener(changes)
            except Exception:  # one listener's bug must not stop the AMI feed
                log.exception("agent state listener failed")
        self._dirty.update(change.status.agent for change in changes)
        self._wake.set()

    # -- the Redis copy (leader) ------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.flush()
                self._backoff.reset()
            except (RedisError, OSError) as exc:
                log.warning("agent states not written to Redis; retrying", error=repr(exc))
                await self._backoff.wait(stop)
                continue
            self._wake.clear()
            waiters = [asyncio.ensure_future(e.wait()) for e in (self._wake, stop)]
            try:
                # The lease can change without a board change: look again now and then.
                await asyncio.wait(waiters, timeout=1.0, return_when="FIRST_COMPLETED")
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def flush(self) -> None:
        if not self.leading():
            self._wrote_all = False
            self._dirty.clear()
            return
        snapshot = self.board.snapshot()
        if not self._wrote_all:
            self._dirty.clear()
            await self._store.write_states(snapshot.values(), replace=self.board.owns)
            self._wrote_all = True
            return
        dirty, self._dirty = self._dirty, set()
        try:
            await self._store.write_states(snapshot[a] for a in dirty if a in snapshot)
        except BaseException:
            self._dirty |= dirty
            raise
