"""FastAGI as Asterisk 22 speaks it, without I/O: lines in, requests and replies out.

We write our own instead of using panoramisk's ``fast_agi``: panoramisk reads the
request with no size limit, spins on EOF before the blank line, takes Asterisk's
unsolicited ``HANGUP`` line as the reply to the command in flight (every later reply
is then off by one) and reads only one line of a multi-line ``520`` usage error. Each
of those is a misrouted or stuck caller. The grammar is small (see
shared/asterisk-brief.md §1), so this module is short and fully unit-tested.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from cti.text import ControlCharacterError, refuse_control_characters, strip_control_characters

MAX_HEADER_LINES = 256
MAX_HEADER_BYTES = 64 * 1024
_REPLY = re.compile(r"^(\d{3})(?:[ -](.*))?$")
_RESULT = re.compile(r"^result=(\S*)(?:\s+\((.*)\))?(?:\s+(.*))?$")
_VARIABLE_NAME = re.compile(r"^_{0,2}[A-Za-z][A-Za-z0-9_]{0,79}$")


class AgiProtocolError(ValueError):
    """The peer does not speak FastAGI (or speaks too much of it)."""


@dataclass(frozen=True, slots=True)
class AgiRequest:
    """The environment block Asterisk sends before the first command.

    Free of control characters (:mod:`cti.text`'s rule): every value goes on to
    PostgreSQL, Redis, the logs or a terminal, and PostgreSQL refuses a NUL outright,
    which used to fail the record writers for ever. Header values have them stripped:
    they are Asterisk's facts about the channel (caller id, dialled number, channel
    name), and the call must still be recorded under them. An argument that holds one
    is dropped whole (left empty, so the others keep their positions) and its fault
    noted in ``refused``: arguments are the caller's choices from the IVR, and
    stripping ``intent=bill\0ing`` would make up a choice (``billing``) nobody made.
    """

    headers: Mapping[str, str]
    args: tuple[str, ...]
    refused: tuple[str, ...] = ()  # one message per argument dropped

    @property
    def script(self) -> str:
        """The script path from ``agi://host/script?query``, without slashes or query."""
        return self.headers.get("agi_network_script", "").split("?", 1)[0].strip("/")

    def get(self, name: str) -> str:
        """A header's value, with Asterisk's literal ``unknown`` read as empty."""
        value = self.headers.get(f"agi_{name}", "")
        return "" if value == "unknown" else value


class RequestParser:
    """Feed header lines one at a time; :meth:`feed` returns the request at the blank line."""

    def __init__(self, max_lines: int = MAX_HEADER_LINES, max_bytes: int = MAX_HEADER_BYTES):
        self._headers: dict[str, str] = {}
        self._lines = 0
        self._bytes = 0
        self._max_lines = max_lines
        self._max_bytes = max_bytes

    def feed(self, raw: bytes) -> AgiRequest | None:
        self._lines += 1
        self._bytes += len(raw)
        if self._lines > self._max_lines or self._bytes > self._max_bytes:
            raise AgiProtocolError(
                f"request header larger than {self._max_lines} lines / {self._max_bytes} bytes"
            )
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if line == "":
            if not self._headers:
                raise AgiProtocolError("empty request: blank line before any header")
            return self._request()
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep or not key.startswith("agi_") or not key.replace("_", "").isalnum():
            raise AgiProtocolError(f"not an AGI header line: {line[:60]!r}")
        # Arguments are judged whole at the blank line; other values lose their controls.
        self._headers[key] = value if key.startswith("agi_arg_") else _clean(value)
        return None

    def _request(self) -> AgiRequest:
        if self._headers.get("agi_network") != "yes":
            raise AgiProtocolError("request without 'agi_network: yes'")
        headers = dict(self._headers)
        args: list[str] = []
        refused: list[str] = []
        index = 1
        while (arg := headers.get(f"agi_arg_{index}")) is not None:
            try:
                args.append(refuse_control_characters(arg.strip()))
            except ControlCharacterError as exc:
                refused.append(f"agi_arg_{index}: {exc}")
                args.append("")
            headers[f"agi_arg_{index}"] = args[-1]
            index += 1
        for key in [k for k in headers if k.startswith("agi_arg_")]:
            headers[key] = _clean(headers[key])  # beyond a gap in the numbering: unused
        return AgiRequest(headers, tuple(args), tuple(refused))


def _clean(value: str) -> str:
    return strip_control_characters(value).strip()


@dataclass(frozen=True, slots=True)
class AgiReply:
    code: int
    result: str | None  # the value after ``result=``
    data: str | None  # the text in parentheses, e.g. a variable's value
    text: str  # the whole reply, continuation lines joined with newlines

    @property
    def ok(self) -> bool:
        return self.code == 200


class Hangup:
    """Asterisk's unsolicited ``HANGUP`` line: the channel hung up; a reply still follows."""

    def __repr__(self) -> str:
        return "HANGUP"


HANGUP = Hangup()


class ReplyParser:
    """Feed reply lines; :meth:`feed` returns a reply, :data:`HANGUP`, or None (need more)."""

    def __init__(self, max_lines: int = 200) -> None:
        self._continuation: list[str] = []
        self._max_lines = max_lines

    def feed(self, raw: bytes) -> AgiReply | Hangup | None:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if line == "HANGUP" and not self._continuation:
            return HANGUP
        if self._continuation:
            self._continuation.append(line)
            if len(self._continuation) > self._max_lines:
                raise AgiProtocolError("multi-line reply too long")
            if line.startswith("520 "):
                text = "\n".join(self._continuation)
                self._continuation = []
                return AgiReply(520, None, None, text)
            return None
        match = _REPLY.match(line)
        if not match:
            raise AgiProtocolError(f"not an AGI reply: {line[:60]!r}")
        code = int(match.group(1))
        if line.startswith("520-"):
            self._continuation = [line]
            return None
        if code == 100:  # "100 result=0 Trying...": an interim answer, the real one follows
            return None
        rest = match.group(2) or ""
        result = _RESULT.match(rest)
        if result:
            return AgiReply(code, result.group(1), result.group(2), line)
        return AgiReply(code, None, None, line)


def quote(value: str) -> str:
    """An AGI argument: double-quoted, with ``\\`` and ``"`` escaped (res_agi parse_args)."""
    if "\n" in value or "\r" in value:
        raise ValueError("AGI arguments cannot contain line breaks")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exec_application(application: str, arguments: str) -> bytes:
    """``EXEC app "args"``: res_agi passes only the third word on, so it is quoted whole."""
    if not application.isalnum():
        raise ValueError(f"{application!r} is not an application name")
    return f"EXEC {application} {quote(arguments)}\n".encode()


def set_variable(name: str, value: str) -> bytes:
    """``SET VARIABLE name "value"``; ``__NAME`` makes every later leg inherit it."""
    if not _VARIABLE_NAME.match(name):
        raise ValueError(f"{name!r} is not a channel variable name")
    return f"SET VARIABLE {name} {quote(value)}\n".encode()
