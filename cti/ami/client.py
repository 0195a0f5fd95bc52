"""The long-lived AMI connection: the thin asyncio adapter around :mod:`cti.ami.protocol`.

Why our own client and not panoramisk: its Ping never checks for the Pong (a half-open
connection goes unnoticed), it loses UTF-8 characters split across reads, coroutine
callbacks interleave (so events are not handled in order), and unanswered actions are
only re-sent on FullyBooted.

What one connection does (shared/asterisk-brief.md §2):

1. open TCP, read the greeting, ``Login`` (plain, ``Events: on``). A rejected login is
   logged as a configuration error and retried with backoff, never in a tight loop;
2. add the session's event filters (``Action: Filter``, :mod:`cti.ami.filters`; they
   last for the session only). A filter Asterisk refuses is skipped with a warning:
   filters save bandwidth, they are not needed for correctness;
3. resync: ``CoreShowChannels`` and ``QueueStatus``. AMI does not replay missed events, so
   the sink is told ``reset()``, then gets the snapshot, then the live events that arrived
   while the snapshot was being taken (held back until then), then everything else;
4. stream live events, with a Ping every ``ping_interval`` whose Pong must come within
   ``ping_timeout``, else the connection is taken as half-open and dropped. Bytes that
   are not AMI (the parser skips them) may have swallowed an event: the same connection
   resyncs (step 3 again) so the state matches Asterisk's.

Any loss goes back to 1 after a capped, jittered backoff (:class:`cti.backoff.Backoff`,
reset after a successful Login).

Ordering and back-pressure: exactly one reader task per connection feeds the parser and
never waits for the sink; events go to one queue drained by one consumer task that calls
the sink strictly in arrival order. Asterisk drops a client whose socket stops draining
(``writetimeout``), so a slow sink must not stall the reader. The queue is bounded by
``max_backlog``: dropping events would silently corrupt the call state, so an overflow
throws the backlog away and forces a reconnect, whose resync rebuilds the state.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from cti.ami.connection import Connection
from cti.ami.errors import (
    AmiActionError,
    AmiAuthError,
    AmiConnectionLost,
    AmiError,
    AmiNotConnected,
    AmiTimeout,
)
from cti.ami.filters import AmiFilter, event_filter
from cti.ami.protocol import ActionIdGenerator, FieldValue, Message
from cti.backoff import Backoff

log = structlog.get_logger(__name__)


class _Overflow(AmiConnectionLost):
    pass


# -- the sink ----------------------------------------------------------------------------
class EventSink(Protocol):
    """Where events go, always from one task and in arrival order.

    ``reset()`` starts every resync (the state built so far can no longer be trusted);
    ``apply(msg)`` takes each snapshot and live event; ``connected(True)`` comes after the
    snapshot was applied, ``connected(False)`` when the connection is lost. ``apply`` may
    be a coroutine function: it is awaited, and the reader keeps reading meanwhile."""

    def reset(self) -> None: ...

    def apply(self, msg: Message) -> object: ...

    def connected(self, up: bool) -> None: ...


@dataclass(slots=True)
class _Reset:
    """Queue item: a completed resync (snapshot events in order)."""

    snapshot: list[Message]


@dataclass(slots=True)
class _Connected:
    up: bool


_QueueItem = Message | _Reset | _Connected


@dataclass(slots=True)
class AmiClientStats:
    connects: int = 0  # TCP connections opened
    logins: int = 0
    login_failures: int = 0
    resyncs: int = 0
    ping_timeouts: int = 0
    overflows: int = 0
    events: int = 0  # live events read
    sink_errors: int = 0
    damaged_resyncs: int = 0  # resyncs because the parser dropped non-AMI bytes
    last_error: str | None = None


# -- the client --------------------------------------------------------------------------
class AmiClient:
    """A long-lived, self-healing AMI connection feeding one :class:`EventSink`.

    ``run(stop)`` owns every task it starts and returns once ``stop`` is set (after a
    Logoff); it only raises for programming errors. ``action()`` / ``list_action()`` may
    be called by anyone once a connection is logged in and resynced
    (:attr:`is_connected`); otherwise they raise :class:`AmiNotConnected`.

    ``filters`` are sent after each Login; none by default, i.e. Asterisk sends every
    event. Which events to ask for is the consumer's choice: the composition root
    (cti/daemon.py) passes ``event_filter(CALL_CENTRE_EVENTS)`` from the call model's
    table, so this adapter never imports the core.
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str,
        *,
        events_sink: EventSink,
        ping_interval: float = 10.0,
        ping_timeout: float = 5.0,
        backoff: Backoff | None = None,
        filters: Sequence[AmiFilter] = (),
        connect_timeout: float = 5.0,
        action_timeout: float = 10.0,
        resync_timeout: float = 30.0,
        max_backlog: int = 100_000,
        id_prefix: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self._secret = secret
        self._sink = events_sink
        self._sink_is_async = inspect.iscoroutinefunction(events_sink.apply)
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self._backoff = backoff if backoff is not None else Backoff()
        self.filters = tuple(filters)
        self.connect_timeout = connect_timeout
        self.action_timeout = action_timeout
        self.resync_timeout = resync_timeout
        self.max_backlog = max_backlog
        self._id_prefix = id_prefix if id_prefix is not None else f"cti.{os.getpid()}"
        self._conn_numbers = itertools.count(1)
        self._conn: Connection | None = None  # set once logged in
        self._queue: asyncio.Queue[_QueueItem] = asyncio.Queue()
        self._held: list[Message] | None = None  # live events held during a resync
        self._overflowed: asyncio.Event = asyncio.Event()
        self.stats = AmiClientStats()

    @property
    def is_connected(self) -> bool:
        """Logged in and the connection not known to be lost."""
        return self._conn is not None and not self._conn.closed

    @property
    def backlog(self) -> int:
        """Events read but not yet applied by the sink."""
        return self._queue.qsize()

    # -- public actions ------------------------------------------------------------------
    async def action(
        self, name: str, timeout_s: float | None = None, **fields: FieldValue
    ) -> Message:
        """Send one action, return its ``Response: Success`` message.

        Raises :class:`AmiActionError` on ``Response: Error``, :class:`AmiTimeout` and
        :class:`AmiNotConnected` (never sent, or the connection was lost meanwhile)."""
        result = await self._live_conn(name).action(
            name, dict(fields), timeout_s if timeout_s is not None else self.action_timeout
        )
        assert isinstance(result, Message)
        return result

    async def list_action(
        self, name: str, timeout_s: float | None = None, **fields: FieldValue
    ) -> list[Message]:
        """Send a list action (``EventList: start`` ... ``...Complete``), return its events
        including the ``...Complete`` one. Errors as for :meth:`action`."""
        result = await self._live_conn(name).action(
            name, dict(fields), timeout_s if timeout_s is not None else self.action_timeout, True
        )
        assert isinstance(result, list)
        return result

    def _live_conn(self, name: str) -> Connection:
        conn = self._conn
        if conn is None or conn.closed:
            raise AmiNotConnected(f"{name}: not connected to AMI")
        return conn

    # -- the connect loop ----------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Connect, resync, stream, reconnect with backoff; until ``stop`` is set."""
        consumer = asyncio.create_task(self._task_consume(), name="ami-consume")
        try:
            while not stop.is_set():
                number = next(self._conn_numbers)
                conn_log = log.bind(ami_conn=number, ami=f"{self.host}:{self.port}")
                try:
                    await self._session(stop, number, conn_log)
                except AmiAuthError as exc:
                    self.stats.login_failures += 1
                    self.stats.last_error = (
                        f"AMI rejected user {self.username}: check CTI_AMI_SECRET ({exc})"
                    )
                    conn_log.error(
                        f"AMI rejected user {self.username}: check CTI_AMI_SECRET",
                        response=exc.message.get("Message"),
                    )
                except (OSError, AmiError, TimeoutError, EOFError) as exc:
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                    conn_log.warning("ami connection lost", error=self.stats.last_error)
                if stop.is_set() or not await self._backoff.wait(stop):
                    break
        finally:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
            self._call(self._sink.connected, False)  # events still queued are not applied

    async def _session(
        self, stop: asyncio.Event, number: int, conn_log: structlog.typing.FilteringBoundLogger
    ) -> None:
        """One connection, from TCP connect to its loss (raised) or ``stop`` (returned)."""
        self.stats.connects += 1
        async with asyncio.timeout(self.connect_timeout):
            reader, writer = await asyncio.open_connection(self.host, self.port)
        ids = ActionIdGenerator(f"{self._id_prefix}.{number}")
        conn = Connection(reader, writer, ids, self._on_live_event, conn_log)
        self._overflowed.clear()
        self._held = []  # live events wait for the snapshot, from the first one on
        read_task = asyncio.create_task(conn._task_read(), name="ami-read")
        session = asyncio.create_task(self._task_session(conn, conn_log), name="ami-session")
        waiters = {
            session,
            asyncio.create_task(self._overflowed.wait(), name="ami-overflow"),
            asyncio.create_task(stop.wait(), name="ami-stop"),
        }
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set() and self._conn is conn:
                with contextlib.suppress(AmiError):
                    await conn.action("Logoff", {}, timeout_s=1.0)
        finally:
            for task in (*waiters, read_task):
                task.cancel()
            await asyncio.gather(*waiters, read_task, return_exceptions=True)
            conn.close("closed by us")
            if self._conn is conn:
                self._conn = None
            self._held = None
            if conn.resynced:
                self._queue.put_nowait(_Connected(False))
        if stop.is_set():
            return
        if self._overflowed.is_set():
            raise _Overflow(f"sink backlog exceeded {self.max_backlog} events; resyncing")
        if not session.cancelled() and (error := session.exception()) is not None:
            raise error
        raise AmiConnectionLost(conn.reason or "connection ended")

    async def _task_session(
        self, conn: Connection, conn_log: structlog.typing.FilteringBoundLogger
    ) -> None:
        """Greeting, Login, filters, resync, then Ping forever (raises when it fails)."""
        async with asyncio.timeout(self.connect_timeout):
            version = await conn.greeting
        try:
            await conn.action(
                "Login",
                {"Username": self.username, "Secret": self._secret, "Events": "on"},
                self.action_timeout,
            )
        except AmiActionError as exc:
            reason = str(exc.message.get("Message", ""))
            if "shutting down" in reason.lower():  # not our secret: Asterisk is stopping
                raise AmiConnectionLost(f"Login refused: {reason}") from None
            raise AmiAuthError("Login", exc.message) from None
        self.stats.logins += 1
        self._backoff.reset()
        conn_log.info("ami logged in", user=self.username, version=version)
        for flt in self.filters:
            try:
                await conn.action("Filter", flt.fields(), self.action_timeout)
            except AmiActionError as exc:
                conn_log.warning(
                    "ami filter refused; receiving unfiltered events",
                    filter=flt.filter,
                    response=exc.message.get("Message"),
                )
        await self._resync(conn, conn_log)
        self._conn = conn
        await self._ping_loop(conn, conn_log)

    async def _resync(
        self, conn: Connection, conn_log: structlog.typing.FilteringBoundLogger
    ) -> None:
        """Snapshot before live events: hold live events until both lists are in, then
        queue reset + snapshot + held events, in that order, in one step."""
        async with asyncio.timeout(self.resync_timeout):
            channels = await self._list_while_alive(conn, "CoreShowChannels")
            try:
                queues = await self._list_while_alive(conn, "QueueStatus")
            except AmiActionError as exc:
                # No app_queue (or no right to ask): calls are still followed; only the
                # queue positions and member names are missing until their next events.
                conn_log.warning("ami QueueStatus refused", response=exc.message.get("Message"))
                queues = []
        assert isinstance(channels, list) and isinstance(queues, list)
        held, self._held = self._held or [], None
        self._queue.put_nowait(_Reset(channels + queues))
        conn.resynced = True
        for msg in held:
            self._queue.put_nowait(msg)
        self.stats.resyncs += 1
        conn_log.info(
            "ami resynced", channels=len(channels) - 1, queue_items=len(queues), held=len(held)
        )

    async def _list_while_alive(self, conn: Connection, name: str) -> list[Message]:
        """A list action of a resync. No Pings go out meanwhile, so silence is the check:
        nothing at all from Asterisk for a ping interval plus timeout means the socket is
        half-open, found as fast as the Ping would find it (not after resync_timeout)."""
        silence_s = self.ping_interval + self.ping_timeout
        answer = asyncio.ensure_future(conn.action(name, {}, self.resync_timeout, True))
        try:
            while not answer.done():
                await asyncio.wait({answer}, timeout=min(silence_s, 1.0))
                if not answer.done() and time.monotonic() - conn.last_read > silence_s:
                    self.stats.ping_timeouts += 1
                    raise AmiConnectionLost(
                        f"nothing from Asterisk for {silence_s:g} s during a resync:"
                        " connection half-open"
                    )
        finally:
            answer.cancel()
        result = answer.result()
        assert isinstance(result, list)
        return result

    async def _ping_loop(
        self, conn: Connection, conn_log: structlog.typing.FilteringBoundLogger
    ) -> None:
        while True:
            closed = asyncio.ensure_future(conn.closed_event.wait())
            damaged = asyncio.ensure_future(conn.damaged.wait())
            try:
                await asyncio.wait(
                    {closed, damaged},
                    timeout=self.ping_interval,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                closed.cancel()
                damaged.cancel()
            if conn.closed:
                raise AmiConnectionLost(conn.reason)
            if conn.damaged.is_set():
                conn.damaged.clear()
                self.stats.damaged_resyncs += 1
                conn_log.warning("bytes that are not AMI on the stream; resyncing")
                self._held = []
                await self._resync(conn, conn_log)
                continue
            try:
                await conn.action("Ping", {}, self.ping_timeout)
            except AmiTimeout:
                self.stats.ping_timeouts += 1
                raise AmiConnectionLost(
                    f"no Pong within {self.ping_timeout:g} s: connection half-open"
                ) from None

    def _on_live_event(self, msg: Message) -> None:
        """Called by the reader for every event not answering a list action."""
        self.stats.events += 1
        if self._overflowed.is_set():
            return  # the connection is being dropped; its resync replaces these
        held = self._held
        if held is not None:
            if len(held) < self.max_backlog:
                held.append(msg)
                return
            held.clear()
        elif self._queue.qsize() < self.max_backlog:
            self._queue.put_nowait(msg)
            return
        self.stats.overflows += 1
        log.error(
            "ami event backlog full: the sink is too slow; reconnecting to resync",
            max_backlog=self.max_backlog,
        )
        self._drop_backlog()
        self._overflowed.set()

    def _drop_backlog(self) -> None:
        """Throw the whole backlog away: the sink next hears ``connected(False)``, then the
        ``reset()`` and snapshot of the reconnect, which rebuild what was dropped."""
        queue = self._queue
        while not queue.empty():
            queue.get_nowait()

    # -- the consumer ----------------------------------------------------------------------
    async def _task_consume(self) -> None:
        """The one task that calls the sink, in queue (= arrival) order."""
        queue = self._queue
        sink = self._sink
        since_yield = 0
        while True:
            item = await queue.get()
            since_yield += 1
            if since_yield >= 256:
                # get() does not yield while the queue has items: let the reader read.
                since_yield = 0
                await asyncio.sleep(0)
            if isinstance(item, Message):
                await self._apply(item)
            elif isinstance(item, _Reset):
                self._call(sink.reset)
                for msg in item.snapshot:
                    await self._apply(msg)
                self._call(sink.connected, True)
            else:
                self._call(sink.connected, item.up)

    async def _apply(self, msg: Message) -> None:
        try:
            result = self._sink.apply(msg)
            if self._sink_is_async:
                await result  # type: ignore[misc]
        except asyncio.CancelledError:
            raise
        except Exception:
            self.stats.sink_errors += 1
            log.exception("ami sink failed on an event; continuing", event=msg.name)

    def _call(self, method: Callable[..., object], *args: object) -> None:
        try:
            method(*args)
        except Exception:
            self.stats.sink_errors += 1
            log.exception("ami sink failed", method=getattr(method, "__name__", "?"))


__all__ = [
    "AmiActionError",
    "AmiAuthError",
    "AmiClient",
    "AmiClientStats",
    "AmiConnectionLost",
    "AmiError",
    "AmiFilter",
    "AmiNotConnected",
    "AmiTimeout",
    "EventSink",
    "event_filter",
]
