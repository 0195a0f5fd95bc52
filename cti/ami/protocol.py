"""The Asterisk Manager Interface as Asterisk 22 speaks it, without I/O.

Bytes in, :class:`Message` objects out (:class:`AmiParser`); actions in, bytes out
(:func:`encode_action`). No sockets, no clock, no event loop: the adapter that owns the
TCP connection feeds whatever it reads and writes whatever this module returns.

Framing (shared/asterisk-brief.md §2): the server greets with one line
``Asterisk Call Manager/11.0.0``, then every message is ``Key: Value`` lines ended by
an empty line. Keys may repeat (``ChanVariable``). We accept CRLF and bare LF, messages
split anywhere across reads (a multi-byte UTF-8 character included: we decode whole
messages only), and we never buffer more than ``max_message`` bytes: a message that is
too large (or has a line longer than ``max_line``, or more than ``max_lines`` lines) is
dropped and counted, and the parser resynchronises at the next empty line. Lines without
a ``:`` are counted and skipped. Nothing here raises on bad input: a CTI feed that loses
one message must keep the next one.

Speed matters (the call model must follow well over 50,000 events/s on one core), so the
parser works on whole reads: one ``bytes.replace`` for CRLF, one ``rfind`` for the last
complete message, one ``decode`` and one ``split`` for all complete messages in the read,
then ``str.partition`` per line. Keys are lower-cased once, when the message is parsed.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

GREETING_PREFIX = "Asterisk Call Manager/"
_GREETING_PREFIX_B = GREETING_PREFIX.encode()

MAX_LINE = 8 * 1024
MAX_MESSAGE = 64 * 1024
MAX_LINES = 1024


class MessageKind(enum.Enum):
    GREETING = "greeting"
    EVENT = "event"
    RESPONSE = "response"
    OTHER = "other"


_EVENT = MessageKind.EVENT
_RESPONSE = MessageKind.RESPONSE
_OTHER = MessageKind.OTHER


class Message:
    """One AMI message. Keys are case-insensitive; the first value of a key wins in
    :meth:`get`, :meth:`getall` returns them all in order.

    ``fields`` is the lower-cased key → first value dict, public for hot paths that
    look up many keys (``msg.fields.get("uniqueid")``). ``name`` is the event name
    (``Newchannel``), the response status (``Success``) or the greeting's version.
    """

    __slots__ = ("_lines", "_multi", "fields", "kind", "name")

    def __init__(
        self,
        kind: MessageKind,
        name: str,
        fields: dict[str, str],
        lines: list[str] | None = None,
        multi: dict[str, list[str]] | None = None,
    ) -> None:
        self.kind = kind
        self.name = name
        self.fields = fields
        self._lines = lines
        self._multi = multi

    @classmethod
    def from_pairs(cls, pairs: Sequence[tuple[str, str]]) -> Message:
        """A message built from (key, value) pairs, in order (tests, fakes)."""
        lines = [f"{key}: {value}" for key, value in pairs]
        fields: dict[str, str] = {}
        multi: dict[str, list[str]] = {}
        for key, value in pairs:
            lkey = key.lower()
            if lkey in fields:
                multi.setdefault(lkey, [fields[lkey]]).append(value)
            else:
                fields[lkey] = value
        kind, name = _kind_of(fields)
        return cls(kind, name, fields, lines, multi or None)

    # -- lookups ---------------------------------------------------------------------
    def get(self, key: str, default: str | None = None) -> str | None:
        return self.fields.get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return self.fields[key.lower()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self.fields

    def getall(self, key: str) -> list[str]:
        """Every value of ``key``, in the order received (``[]`` when absent)."""
        lkey = key.lower()
        if self._multi is not None:
            values = self._multi.get(lkey)
            if values is not None:
                return list(values)
        value = self.fields.get(lkey)
        return [] if value is None else [value]

    def items(self) -> Iterator[tuple[str, str]]:
        """(key, value) pairs as received, keys in their original spelling."""
        for line in self._lines or ():
            key, sep, value = line.partition(":")
            if sep and key:
                yield key, value[1:] if value[:1] == " " else value

    def variables(self, prefix: str = "") -> dict[str, str]:
        """``<prefix>ChanVariable: NAME=value`` headers as a dict (``channelvars`` in
        manager.conf). ``prefix`` is ``""``, ``"Dest"``, ``"Transferee"``, ... ; the
        first value of a repeated variable wins, like everywhere else."""
        result: dict[str, str] = {}
        for item in self.getall(prefix + "ChanVariable"):
            name, sep, value = item.partition("=")
            if sep and name not in result:
                result[name] = value
        return result

    def variable(self, name: str, prefix: str = "") -> str | None:
        """One channel variable of the (prefixed) snapshot, ``None`` when absent."""
        key = prefix.lower() + "chanvariable"
        first = self.fields.get(key)
        if first is None:
            return None
        head = name + "="
        if first.startswith(head):
            return first[len(head) :]
        if self._multi is not None:
            for item in self._multi.get(key, ()):
                if item.startswith(head):
                    return item[len(head) :]
        return None

    @property
    def chanvars(self) -> dict[str, str]:
        return self.variables("")

    @property
    def dest_chanvars(self) -> dict[str, str]:
        return self.variables("Dest")

    # -- kinds -----------------------------------------------------------------------
    @property
    def is_event(self) -> bool:
        return self.kind is _EVENT

    @property
    def is_response(self) -> bool:
        return self.kind is _RESPONSE

    @property
    def action_id(self) -> str | None:
        return self.fields.get("actionid")

    def __repr__(self) -> str:
        return f"<Message {self.kind.value} {self.name!r} {len(self.fields)} fields>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (
            self.kind is other.kind
            and self.name == other.name
            and self.fields == other.fields
            and (self._multi or {}) == (other._multi or {})
        )

    __hash__ = None  # type: ignore[assignment]


def _kind_of(fields: dict[str, str]) -> tuple[MessageKind, str]:
    name = fields.get("event")
    if name is not None:
        return _EVENT, name
    name = fields.get("response")
    if name is not None:
        return _RESPONSE, name
    return _OTHER, ""


@dataclass(slots=True)
class ParserStats:
    """What the parser had to drop. ``messages`` counts what it returned."""

    messages: int = 0
    oversized: int = 0  # messages dropped for max_message / max_line / max_lines
    discarded_bytes: int = 0  # bytes skipped while resynchronising
    garbage_lines: int = 0  # lines without ':' (skipped)
    empty_messages: int = 0  # blocks with no usable line at all (dropped)
    decode_errors: int = 0  # messages that were not valid UTF-8 (decoded with U+FFFD)


class AmiParser:
    """Sans-I/O AMI framer: ``feed(bytes) -> list[Message]``.

    The first line is taken as the greeting when it starts with
    ``Asterisk Call Manager/`` (a :class:`Message` of kind ``GREETING`` whose ``name``
    is the version, also kept in :attr:`version`); otherwise it is read as a header line,
    so a parser can also be fed a stream that starts mid-session.
    """

    def __init__(
        self,
        *,
        max_line: int = MAX_LINE,
        max_message: int = MAX_MESSAGE,
        max_lines: int = MAX_LINES,
        expect_greeting: bool = True,
    ) -> None:
        if not 0 < max_line <= max_message or max_lines < 1:
            raise ValueError("need 0 < max_line <= max_message and max_lines >= 1")
        self._max_line = max_line
        self._max_message = max_message
        self._max_lines = max_lines
        self._buf = b""
        self._discarding = False
        self._greeting_pending = expect_greeting
        self.version: str | None = None
        self.stats = ParserStats()

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete message (0 between messages)."""
        return 0 if self._discarding else len(self._buf)

    @property
    def resynchronising(self) -> bool:
        """True while skipping the rest of an oversized message."""
        return self._discarding

    def feed(self, data: bytes) -> list[Message]:
        if not data:
            return []
        buf = self._buf
        if buf and buf[-1:] == b"\r" and data[:1] == b"\n":
            buf = buf[:-1]  # a CRLF split across two reads
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        buf = buf + data if buf else data
        out: list[Message] = []
        if self._discarding:
            buf = self._skip_oversized(buf)
            if self._discarding:
                return out
        if self._greeting_pending:
            buf = self._greeting(buf, out)
            if self._greeting_pending:
                self._buf = buf
                return out
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._buf = buf
            self._check_tail()
            return out
        self._buf = buf[end + 2 :]
        if self._buf:
            self._check_tail()
        complete = buf[:end]
        try:
            text = complete.decode("utf-8")
        except UnicodeDecodeError:
            self._parse_bytes_blocks(complete, out)
        else:
            self._parse_blocks(text.split("\n\n"), out)
        return out

    # -- internals ---------------------------------------------------------------------
    def _greeting(self, buf: bytes, out: list[Message]) -> bytes:
        newline = buf.find(b"\n")
        if newline < 0:
            head = buf[: len(_GREETING_PREFIX_B)]
            if not _GREETING_PREFIX_B.startswith(head) or len(buf) > self._max_line:
                self._greeting_pending = False  # not a greeting: read it as header lines
            return buf
        self._greeting_pending = False
        line = buf[:newline]
        if not line.startswith(_GREETING_PREFIX_B):
            return buf
        version = line[len(_GREETING_PREFIX_B) :].decode("utf-8", "replace").strip("\r ")
        self.version = version
        out.append(Message(MessageKind.GREETING, version, {}, [line.decode("utf-8", "replace")]))
        self.stats.messages += 1
        return buf[newline + 1 :]

    def _check_tail(self) -> None:
        """Bound the incomplete message we hold: drop it once it cannot be valid."""
        tail = self._buf
        size = len(tail)
        if size <= self._max_line:
            return
        if size > self._max_message or size - 1 - tail.rfind(b"\n") > self._max_line:
            self.stats.oversized += 1
            self._discarding = True
            self.stats.discarded_bytes += size
            self._buf = tail[-2:]

    def _skip_oversized(self, buf: bytes) -> bytes:
        """While discarding: drop everything up to and including the next empty line."""
        end = buf.find(b"\n\n")
        if end < 0:
            # Keep the last two bytes: they may start the boundary (or be a CR of CRLF).
            keep = buf[-2:]
            self.stats.discarded_bytes += len(buf) - len(keep)
            self._buf = keep
            return keep
        self._discarding = False
        self.stats.discarded_bytes += end + 2
        return buf[end + 2 :]

    def _parse_bytes_blocks(self, complete: bytes, out: list[Message]) -> None:
        """Slow path for a read with invalid UTF-8: decode message by message."""
        texts = []
        for raw in complete.split(b"\n\n"):
            try:
                texts.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                self.stats.decode_errors += 1
                texts.append(raw.decode("utf-8", "replace"))
        self._parse_blocks(texts, out)

    def _parse_blocks(self, blocks: list[str], out: list[Message]) -> None:
        max_line = self._max_line
        max_message = self._max_message
        max_lines = self._max_lines
        append = out.append
        n = 0
        garbage = 0
        for block in blocks:
            if not block:
                continue
            lines = block.split("\n")
            if len(block) > max_line:
                if (
                    len(block) > max_message
                    or len(lines) > max_lines
                    or max(map(len, lines)) > max_line
                ):
                    self.stats.oversized += 1
                    continue
            elif len(lines) > max_lines:
                self.stats.oversized += 1
                continue
            fields: dict[str, str] = {}
            multi: dict[str, list[str]] | None = None
            for line in lines:
                key, sep, value = line.partition(": ")
                if not sep:
                    if not line:
                        continue  # extra empty lines between messages
                    key, sep, value = line.partition(":")
                    if not sep:
                        garbage += 1
                        continue
                    if value[:1] == " ":
                        value = value[1:]
                if not key or key[0] == " ":
                    garbage += 1
                    continue
                key = key.lower()
                if key in fields:
                    if multi is None:
                        multi = {key: [fields[key], value]}
                    elif key in multi:
                        multi[key].append(value)
                    else:
                        multi[key] = [fields[key], value]
                else:
                    fields[key] = value
            if not fields:
                self.stats.empty_messages += 1
                continue
            event = fields.get("event")
            if event is not None:
                append(Message(_EVENT, event, fields, lines, multi))
            else:
                response = fields.get("response")
                if response is not None:
                    append(Message(_RESPONSE, response, fields, lines, multi))
                else:
                    append(Message(_OTHER, "", fields, lines, multi))
            n += 1
        self.stats.messages += n
        if garbage:
            self.stats.garbage_lines += garbage


# -- actions ---------------------------------------------------------------------------
class ActionEncodingError(ValueError):
    """An action that cannot be written to AMI as given (CR/LF in a value, bad key)."""


FieldValue = str | Sequence[str]


def _check(what: str, text: str) -> None:
    if not isinstance(text, str):
        raise ActionEncodingError(f"{what} must be a str, not {type(text).__name__}")
    if "\r" in text or "\n" in text:
        raise ActionEncodingError(f"{what} contains CR or LF: {text[:40]!r}")


def _check_key(key: str) -> None:
    _check("key", key)
    if not key or ":" in key or key != key.strip():
        raise ActionEncodingError(f"not a valid AMI key: {key!r}")


def encode_action(name: str, fields: Mapping[str, FieldValue], action_id: str) -> bytes:
    """``Action: <name>``, ``ActionID: <action_id>``, then ``fields`` in order, CRLF ended.

    A value that is a list or tuple is written as one line per item (``Variable:``
    of Originate). CR or LF anywhere, an empty key or a key with ``:`` raise
    :class:`ActionEncodingError`, as does a field named Action or ActionID.
    """
    _check_key(name)
    _check("ActionID", action_id)
    if not action_id:
        raise ActionEncodingError("empty ActionID")
    out = [f"Action: {name}\r\nActionID: {action_id}\r\n"]
    for key, value in fields.items():
        _check_key(key)
        if key.lower() in ("action", "actionid"):
            raise ActionEncodingError(f"{key} is set by encode_action, not by a field")
        if isinstance(value, str):
            _check(f"value of {key}", value)
            out.append(f"{key}: {value}\r\n")
        elif isinstance(value, Sequence):
            for item in value:
                _check(f"value of {key}", item)
                out.append(f"{key}: {item}\r\n")
        else:
            raise ActionEncodingError(f"value of {key} must be a str or a list of str")
    out.append("\r\n")
    return "".join(out).encode("utf-8")


@dataclass
class ActionIdGenerator:
    """``<prefix>-1``, ``<prefix>-2``, ... Inject one per connection; the adapter picks
    a prefix unique to the process and connection (tests pass a fixed one)."""

    prefix: str = "cti"
    next_number: int = field(default=1)

    def __post_init__(self) -> None:
        _check("ActionID prefix", self.prefix)

    def __call__(self) -> str:
        number = self.next_number
        self.next_number = number + 1
        return f"{self.prefix}-{number}"
