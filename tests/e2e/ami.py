"""A small AMI client for the end-to-end tests: observe what Asterisk did.

Plain ``Action: Login``, one reader task that appends every event to ``events`` (in
arrival order) and resolves action responses by ActionID. Tests take ``mark()``
before they act and ``wait_event(pred, since=mark)`` afterwards, so an event that
arrived before the wait started is still found. Not the daemon's AMI client.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from typing import Any

Message = dict[str, Any]


def parse(block: str) -> Message:
    """One AMI message. Repeated ``ChanVariable``-style headers become a dict ``name=value``."""
    message: Message = {}
    for line in block.split("\r\n"):
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key.endswith("ChanVariable"):
            name, _, var = value.partition("=")
            message.setdefault(key, {})[name] = var
        else:
            message.setdefault(key, value)
    return message


class Ami:
    def __init__(self) -> None:
        self.events: list[Message] = []
        self._changed = asyncio.Condition()
        self._pending: dict[str, asyncio.Future[Message]] = {}
        self._ids = itertools.count(1)
        self._reader_task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None

    @classmethod
    async def connect(cls, host: str, port: int, username: str, secret: str) -> Ami:
        self = cls()
        reader, self._writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        greeting = await asyncio.wait_for(reader.readline(), 5)
        if not greeting.startswith(b"Asterisk Call Manager"):
            raise ConnectionError(f"not an AMI greeting: {greeting!r}")
        self._reader_task = asyncio.create_task(self._read(reader), name="ami-reader")
        reply = await self.action("Login", Username=username, Secret=secret, Events="on")
        if reply.get("Response") != "Success":
            raise ConnectionError(f"AMI login refused: {reply.get('Message')}")
        return self

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                message = parse(raw.decode("utf-8", "replace"))
                future = self._pending.pop(message.get("ActionID", ""), None)
                if "Response" in message and future is not None:
                    if not future.done():
                        future.set_result(message)
                    continue
                if "Event" in message:
                    async with self._changed:
                        self.events.append(message)
                        self._changed.notify_all()
        except (asyncio.IncompleteReadError, ConnectionError):
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionError("AMI connection closed"))

    async def _send(self, name: str, fields: dict[str, str]) -> tuple[str, asyncio.Future[Message]]:
        assert self._writer is not None
        action_id = f"e2e-{next(self._ids)}"
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[action_id] = future
        lines = [f"Action: {name}", f"ActionID: {action_id}"]
        lines += [f"{key}: {value}" for key, value in fields.items()]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self._writer.drain()
        return action_id, future

    async def action(self, name: str, within_s: float = 5, **fields: str) -> Message:
        _action_id, future = await self._send(name, fields)
        return await asyncio.wait_for(future, within_s)

    async def list_action(self, name: str, within_s: float = 5, **fields: str) -> list[Message]:
        """An action answered by a list of events (``...Complete`` ends it)."""
        since = self.mark()
        action_id, future = await self._send(name, fields)
        reply = await asyncio.wait_for(future, within_s)
        if reply.get("Response") != "Success":
            raise AssertionError(f"{name}: {reply.get('Message')}")
        await self.wait_event(
            lambda e: e.get("ActionID") == action_id and e["Event"].endswith("Complete"),
            since=since,
            within_s=within_s,
            what=f"end of the {name} list",
        )
        return [
            e
            for e in self.events[since:]
            if e.get("ActionID") == action_id and not e["Event"].endswith("Complete")
        ]

    async def getvar(self, channel: str, variable: str) -> str | None:
        reply = await self.action("Getvar", Channel=channel, Variable=variable)
        return reply.get("Value") if reply.get("Response") == "Success" else None

    def mark(self) -> int:
        """Index of the next event; pass it as ``since`` to ignore what came before."""
        return len(self.events)

    def find(self, predicate: Callable[[Message], bool], since: int = 0) -> list[Message]:
        return [e for e in self.events[since:] if predicate(e)]

    async def wait_event(
        self,
        predicate: Callable[[Message], bool],
        *,
        since: int = 0,
        within_s: float = 10,
        what: str = "event",
    ) -> Message:
        """The first event from ``since`` on that matches; AssertionError after ``within_s``."""
        seen = since
        try:
            async with asyncio.timeout(within_s), self._changed:
                while True:
                    for event in self.events[seen:]:
                        if predicate(event):
                            return event
                    seen = len(self.events)
                    await self._changed.wait()
        except TimeoutError:
            names = [e.get("Event") for e in self.events[since:]][-40:]
            raise AssertionError(
                f"no {what} from Asterisk within {within_s}s; last events: {names}"
            ) from None

    async def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self.action("Logoff", within_s=1)
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            await asyncio.gather(self._reader_task, return_exceptions=True)


def is_event(name: str, **fields: str) -> Callable[[Message], bool]:
    """Predicate: event ``name`` whose headers equal ``fields``."""
    return lambda e: e.get("Event") == name and all(e.get(k) == v for k, v in fields.items())


def answered_dial(device: str) -> Callable[[Message], bool]:
    """Predicate: a DialEnd whose destination is a channel of ``device`` (``PJSIP/2003``)
    that answered: e.g. the target of an attended transfer's consult call."""
    return lambda e: (
        e.get("Event") == "DialEnd"
        and e.get("DestChannel", "").startswith(f"{device}-")
        and e.get("DialStatus") == "ANSWER"
    )


def call_id_of(event: Message) -> str:
    return event.get("ChanVariable", {}).get("CTI_CALL_ID", "")
