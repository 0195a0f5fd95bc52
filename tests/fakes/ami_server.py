"""A fake Asterisk Manager Interface over real sockets, for the AMI client's tests.

It speaks the wire format as Asterisk 22 does (shared/asterisk-brief.md §2): the
``Asterisk Call Manager/11.0.0`` greeting; ``Login`` answered ``Success``, or ``Error``
followed by a close (after ``login_failure_delay_s``; real Asterisk waits 1 s);
``Ping`` -> ``Ping: Pong``; ``Filter`` -> ``Success`` (or ``Permission denied``);
``CoreShowChannels`` / ``QueueStatus`` as list responses built from the scripted
snapshot; ``Logoff`` -> ``Goodbye`` and a close. Anything else is answered ``Error`` and
recorded in :attr:`FakeAmi.unknown`, so a test can fail on it.

Live events are pushed as raw bytes (:meth:`FakeAmi.push`), e.g. a recorded fixture's
event blocks. :meth:`FakeAmi.hang` turns the current sessions silent without closing
them (a hung Asterisk or a half-open connection); :meth:`FakeAmi.close` drops every
connection, as a restart does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cti.ami.protocol import AmiParser, Message

GREETING = b"Asterisk Call Manager/11.0.0\r\n"

Fields = Mapping[str, str]


def block(pairs: Sequence[tuple[str, str]] | Fields) -> bytes:
    """One AMI message, CRLF ended."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    return b"".join(f"{key}: {value}\r\n".encode() for key, value in items) + b"\r\n"


def event(name: str, **fields: str) -> bytes:
    return block([("Event", name), ("Privilege", "call,all"), *fields.items()])


@dataclass
class Session:
    writer: asyncio.StreamWriter
    logged_in: bool = False
    silent: bool = False
    actions: list[Message] = field(default_factory=list)
    pongs: int = 0


class FakeAmi:
    def __init__(
        self,
        *,
        username: str = "cti",
        secret: str = "s3cret",
        port: int = 0,
        channels: Sequence[Fields] = (),
        queue_status: Sequence[tuple[str, Fields]] = (),
        filter_permitted: bool = True,
    ) -> None:
        self.username = username
        self.secret = secret
        self.port = port
        self.channels = list(channels)  # CoreShowChannel fields (no Event/ActionID)
        self.queue_status = list(queue_status)  # (event name, fields): QueueParams, ...
        self.filter_permitted = filter_permitted
        self.queue_status_error: str | None = None  # answer QueueStatus with this Error
        self.login_failure_delay_s = 0.0
        self.login_failure_message = "Authentication failed"
        #: Actions left unanswered (the socket stays open): a hang half-way
        self.unanswered: set[str] = set()
        self.during_resync = b""  # live bytes sent inside the CoreShowChannels answer
        #: Canned answers to other actions: name -> response fields (``Response`` included)
        self.responses: dict[str, dict[str, str]] = {}
        self.sessions: list[Session] = []
        self.login_failures = 0
        #: When each refused Login arrived (loop time): tests measure backoff from these,
        #: not from when a polling test happened to notice.
        self.login_failure_times: list[float] = []
        self.unknown: list[Message] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> FakeAmi:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def live(self) -> list[Session]:
        """Logged-in sessions still open."""
        return [s for s in self.sessions if s.logged_in and not s.writer.is_closing()]

    def actions(self, name: str) -> list[Message]:
        return [m for s in self.sessions for m in s.actions if m.get("Action") == name]

    async def push(self, data: bytes) -> None:
        """Raw bytes to every logged-in session (live events)."""
        for session in self.live:
            session.writer.write(data)
            await session.writer.drain()

    def hang(self) -> None:
        """Current sessions stop answering anything but keep their sockets open."""
        for session in self.sessions:
            session.silent = True

    async def close(self) -> None:
        """Drop every connection and stop listening (an Asterisk restart)."""
        if self._server is not None:
            self._server.close()
        for session in self.sessions:
            session.writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # -- one connection -----------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        session = Session(writer)
        self.sessions.append(session)
        parser = AmiParser(expect_greeting=False)
        try:
            writer.write(GREETING)
            while data := await reader.read(65536):
                for msg in parser.feed(data):
                    if session.silent:
                        continue
                    session.actions.append(msg)
                    if not await self._answer(session, msg):
                        return
        except OSError:
            pass
        finally:
            self._tasks.discard(task)
            writer.transport.abort()

    async def _answer(self, session: Session, msg: Message) -> bool:
        """Answer one action; False closes the connection."""
        name = msg.get("Action") or ""
        aid = msg.get("ActionID") or ""
        write = session.writer.write

        def response(status: str = "Success", **extra: str) -> bytes:
            return block([("Response", status), ("ActionID", aid), *extra.items()])

        if name == "Login":
            if msg.get("Username") == self.username and msg.get("Secret") == self.secret:
                session.logged_in = True
                write(response(Message="Authentication accepted"))
                write(event("FullyBooted", Uptime="11", LastReload="11", Status="Fully Booted"))
                return True
            self.login_failures += 1
            self.login_failure_times.append(asyncio.get_running_loop().time())
            await asyncio.sleep(self.login_failure_delay_s)
            write(response("Error", Message=self.login_failure_message))
            await session.writer.drain()
            return False
        if not session.logged_in:
            write(response("Error", Message="Permission denied"))
            return True
        if name in self.unanswered:
            return True
        if name == "Ping":
            session.pongs += 1
            write(response(Ping="Pong", Timestamp="1795410897.000000"))
        elif name == "Filter":
            if self.filter_permitted:
                write(response(Message="Success"))
            else:
                write(response("Error", Message="Permission denied"))
        elif name == "CoreShowChannels":
            write(response(EventList="start", Message="Channels will follow"))
            write(self.during_resync)
            for fields in self.channels:
                write(block([("Event", "CoreShowChannel"), ("ActionID", aid), *fields.items()]))
            write(
                block(
                    [
                        ("Event", "CoreShowChannelsComplete"),
                        ("ActionID", aid),
                        ("EventList", "Complete"),
                        ("ListItems", str(len(self.channels))),
                    ]
                )
            )
        elif name == "QueueStatus" and self.queue_status_error is not None:
            write(response("Error", Message=self.queue_status_error))
        elif name == "QueueStatus":
            write(response(EventList="start", Message="Queue status will follow"))
            for event_name, fields in self.queue_status:
                write(block([("Event", event_name), ("ActionID", aid), *fields.items()]))
            write(
                block(
                    [
                        ("Event", "QueueStatusComplete"),
                        ("ActionID", aid),
                        ("EventList", "Complete"),
                        ("ListItems", str(len(self.queue_status))),
                    ]
                )
            )
        elif name in self.responses:
            fields = dict(self.responses[name])
            write(response(fields.pop("Response", "Success"), **fields))
        elif name == "Logoff":
            write(response("Goodbye", Message="Thanks for all the fish."))
            await session.writer.drain()
            return False
        else:
            self.unknown.append(msg)
            write(response("Error", Message="Invalid/unknown command"))
        with contextlib.suppress(ConnectionError):
            await session.writer.drain()
        return True
