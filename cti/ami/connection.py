"""One AMI TCP session: the socket's only reader, the parser, and the actions in flight.

Split from :mod:`cti.ami.client`, which owns the reconnect loop, the resync and the sink:
a :class:`Connection` lives exactly as long as its socket, answers actions by ActionID
(list actions collect their events until ``...Complete``) and hands every other event to
``on_event`` synchronously, in arrival order. Its end fails every wait on it, so the
session task alone reports why a connection ended.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from cti.ami.errors import AmiActionError, AmiConnectionLost, AmiNotConnected, AmiTimeout
from cti.ami.protocol import (
    ActionIdGenerator,
    AmiParser,
    FieldValue,
    Message,
    MessageKind,
    encode_action,
)

READ_CHUNK = 64 * 1024


@dataclass(slots=True)
class Pending:
    future: asyncio.Future[Message | list[Message]]
    is_list: bool
    events: list[Message] = field(default_factory=list)


class Connection:
    """One TCP session: the parser, the actions in flight, and where live events go."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ids: ActionIdGenerator,
        on_event: Callable[[Message], None],
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = AmiParser()
        self.ids = ids
        self.on_event = on_event
        self.log = log
        self.greeting: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.pending: dict[str, Pending] = {}
        self.closed = False
        self.closed_event = asyncio.Event()
        self.reason = ""
        self.resynced = False  # its snapshot was queued for the sink
        #: Set when the parser dropped bytes that were not AMI: an event may have been
        #: lost with them, so the state is rebuilt from a fresh snapshot.
        self.damaged = asyncio.Event()
        self._damage_seen = 0
        self.last_read = time.monotonic()  # when bytes last came in (half-open checks)

    async def _task_read(self) -> None:
        """The only reader of the socket; never waits for anything but the socket. Its end
        closes the connection, which fails every wait of the session task: so the session
        task alone reports why a connection ended."""
        reason = "reader stopped"
        try:
            while True:
                data = await self.reader.read(READ_CHUNK)
                if not data:
                    reason = "closed by Asterisk"
                    return
                self.last_read = time.monotonic()
                for msg in self.parser.feed(data):
                    self._dispatch(msg)
                stats = self.parser.stats
                damage = stats.garbage_lines + stats.oversized
                if damage != self._damage_seen:
                    self._damage_seen = damage
                    self.damaged.set()
        except OSError as exc:
            reason = f"read failed: {exc}"
        finally:
            self.close(reason)

    def _dispatch(self, msg: Message) -> None:
        kind = msg.kind
        if kind is MessageKind.EVENT:
            action_id = msg.fields.get("actionid")
            pending = self.pending.get(action_id) if action_id is not None else None
            if pending is None or not pending.is_list:
                self.on_event(msg)
                return
            pending.events.append(msg)
            if msg.fields.get("eventlist", "").lower() == "complete" or msg.name.endswith(
                "Complete"
            ):
                _resolve(pending.future, pending.events)
        elif kind is MessageKind.RESPONSE:
            pending = self.pending.get(msg.fields.get("actionid", ""))
            if pending is None:
                self.log.debug("ami response to no pending action", action_id=msg.action_id)
            elif msg.name.lower() != "success":
                _resolve(pending.future, msg)
            elif not pending.is_list or msg.fields.get("eventlist", "").lower() != "start":
                _resolve(pending.future, pending.events if pending.is_list else msg)
        elif kind is MessageKind.GREETING:
            if not self.greeting.done():
                self.greeting.set_result(msg.name)
        else:
            self.log.debug("ami message that is neither event nor response", msg=repr(msg))

    async def action(
        self, name: str, fields: dict[str, FieldValue], timeout_s: float, is_list: bool = False
    ) -> Message | list[Message]:
        if self.closed:
            raise AmiNotConnected(f"{name}: not connected")
        action_id = self.ids()
        data = encode_action(name, fields, action_id)
        future: asyncio.Future[Message | list[Message]] = asyncio.get_running_loop().create_future()
        self.pending[action_id] = Pending(future, is_list)
        try:
            async with asyncio.timeout(timeout_s):
                self.writer.write(data)
                await self.writer.drain()
                result = await future
        except TimeoutError:
            raise AmiTimeout(f"{name}: no answer within {timeout_s:g} s") from None
        except OSError as exc:
            raise AmiConnectionLost(f"{name}: connection lost ({exc})") from exc
        finally:
            self.pending.pop(action_id, None)
        if isinstance(result, Message) and result.name.lower() != "success":
            raise AmiActionError(name, result)
        return result

    def close(self, reason: str) -> None:
        """Abort the socket and fail every wait on this connection (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.reason = reason
        self.closed_event.set()
        self.writer.transport.abort()
        lost = AmiConnectionLost(reason)
        for pending in self.pending.values():
            if not pending.future.done():
                pending.future.set_exception(lost)
                pending.future.exception()  # retrieved: no "never retrieved" warning
        if not self.greeting.done():
            self.greeting.set_exception(lost)
            self.greeting.exception()


def _resolve(
    future: asyncio.Future[Message | list[Message]], value: Message | list[Message]
) -> None:
    if not future.done():
        future.set_result(value)
