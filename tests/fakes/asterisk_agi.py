"""A fake Asterisk for FastAGI: it plays Asterisk 22's side of the conversation.

It sends the environment block exactly as res_agi's ``setup_env`` does (order, the
literal ``unknown`` for missing values, ``agi_arg_N``), splits each command with the
same rules as res_agi's ``parse_args`` (whitespace, double quotes, backslash escapes),
answers ``SET VARIABLE`` with ``200 result=1``, ``GET VARIABLE`` from a dict and
``EXEC MSet "a=b,c=d"`` by setting each pair (``200 result=0``, or ``result=-2`` as for
a missing application when ``applications`` leaves MSet out), and fails loudly on any
other command. It returns what Asterisk would have ended up with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


class UnexpectedCommand(AssertionError):
    pass


@dataclass
class AgiCallResult:
    variables: dict[str, str] = field(default_factory=dict)  # names as sent, e.g. __CTI_CALL_ID
    commands: list[list[str]] = field(default_factory=list)
    closed_by_server: bool = False

    def var(self, name: str) -> str | None:
        """A variable as the dialplan reads it: ``${CTI_CALL_ID}`` finds ``__CTI_CALL_ID``."""
        for key in (name, f"_{name}", f"__{name}"):
            if key in self.variables:
                return self.variables[key]
        return None


def parse_args(line: str) -> list[str]:
    """res_agi.c ``parse_args``: quotes group, backslash escapes the next character.

    An opening quote starts a word even when it is empty, so ``""`` is an argument.
    """
    args: list[str] = []
    current: list[str] = []
    in_quotes = escaped = in_word = False
    for char in line:
        if escaped or (char not in '"\\ \t') or (char in " \t" and in_quotes):
            current.append(char)
            escaped, in_word = False, True
        elif char == "\\":
            escaped = True
        elif char == '"':
            in_quotes, in_word = not in_quotes, True
        elif in_word:  # unquoted whitespace ends the word
            args.append("".join(current))
            current, in_word = [], False
    if in_word:
        args.append("".join(current))
    return args


def environment(
    *,
    script: str = "route",
    port: int = 4573,
    callerid: str = "unknown",
    calleridname: str = "unknown",
    dnid: str = "unknown",
    extension: str = "s",
    channel: str = "PJSIP/trunk-00000001",
    uniqueid: str = "1795407778.1",
    args: Sequence[str] = (),
) -> bytes:
    lines = [
        "agi_network: yes",
        f"agi_network_script: {script}",
        f"agi_request: agi://127.0.0.1:{port}/{script}",
        f"agi_channel: {channel}",
        "agi_language: en",
        "agi_type: PJSIP",
        f"agi_uniqueid: {uniqueid}",
        "agi_version: 22.10.1+dfsg+~cs6.17.60671434-1",
        f"agi_callerid: {callerid}",
        f"agi_calleridname: {calleridname}",
        "agi_callingpres: 0",
        "agi_callingani2: 0",
        "agi_callington: 0",
        "agi_callingtns: 0",
        f"agi_dnid: {dnid}",
        "agi_rdnis: unknown",
        "agi_context: from-trunk",
        f"agi_extension: {extension}",
        "agi_priority: 2",
        "agi_enhanced: 0.0",
        "agi_accountcode: ",
        "agi_threadid: 140109677246144",
        *(f"agi_arg_{i}: {arg}" for i, arg in enumerate(args, 1)),
    ]
    return ("\n".join(lines) + "\n\n").encode()


async def agi_call(
    host: str,
    port: int,
    *,
    variables: Mapping[str, str] | None = None,
    hangup_before_reply: int | None = None,
    applications: frozenset[str] = frozenset({"MSet"}),
    within_s: float = 5.0,
    local_addr: tuple[str, int] | None = None,
    **env: object,
) -> AgiCallResult:
    """Place one AGI request and serve commands until the server closes the socket.

    ``hangup_before_reply=n`` writes Asterisk's unsolicited ``HANGUP`` line before the
    reply to the n-th command (1-based), as res_agi does when the caller hangs up.
    ``local_addr=("127.0.0.2", 0)`` places it from another loopback address.
    """
    result = AgiCallResult()
    known = dict(variables or {})
    reader, writer = await asyncio.open_connection(host, port, local_addr=local_addr)
    try:
        writer.write(environment(port=port, **env))  # type: ignore[arg-type]
        await writer.drain()
        async with asyncio.timeout(within_s):
            while True:
                line = await reader.readline()
                if not line:
                    result.closed_by_server = True
                    return result
                if not line.endswith(b"\n"):
                    raise AssertionError(f"command without newline: {line!r}")
                argv = parse_args(line.decode().rstrip("\n"))
                result.commands.append(argv)
                if len(result.commands) == hangup_before_reply:
                    writer.write(b"HANGUP\n")
                writer.write(_answer(argv, result, known, applications))
                await writer.drain()
    finally:
        writer.close()


def _answer(
    argv: list[str], result: AgiCallResult, known: dict[str, str], applications: frozenset[str]
) -> bytes:
    verb = " ".join(argv[:2]).upper()
    if argv[:1] == ["EXEC"] and len(argv) >= 2:
        if argv[1] not in applications:
            return b"200 result=-2\n"
        if argv[1] == "MSet" and len(argv) == 3:
            for pair in argv[2].split(","):
                name, sep, value = pair.partition("=")
                if sep:  # MSet ignores entries without '='
                    result.variables[name] = value
                    known[name.lstrip("_")] = value
            return b"200 result=0\n"
    if verb == "SET VARIABLE":
        if len(argv) != 4:
            return (
                b"520-Invalid command syntax.  Proper usage follows:\n"
                b" Usage: SET VARIABLE <variablename> <value>\n"
                b"520 End of proper usage.\n"
            )
        result.variables[argv[2]] = argv[3]
        known[argv[2].lstrip("_")] = argv[3]
        return b"200 result=1\n"
    if verb == "GET VARIABLE" and len(argv) == 3:
        value = known.get(argv[2])
        return b"200 result=0\n" if value is None else f"200 result=1 ({value})\n".encode()
    raise UnexpectedCommand(f"the fake Asterisk does not expect {argv!r}")
