"""The FastAGI grammar, without sockets: requests, replies, HANGUP, quoting."""

from __future__ import annotations

import pytest

from cti.agi.protocol import (
    HANGUP,
    AgiProtocolError,
    ReplyParser,
    RequestParser,
    quote,
    set_variable,
)
from tests.fakes.asterisk_agi import environment, parse_args


def _parse(block: bytes):
    parser = RequestParser()
    result = None
    for line in block.splitlines(keepends=True):
        result = parser.feed(line)
    return result


def test_request_as_asterisk_22_sends_it():
    request = _parse(
        environment(callerid="2120000002", dnid="5550100", args=["account=A1", "intent=x"])
    )
    assert request.script == "route"
    assert request.get("callerid") == "2120000002"
    assert request.get("dnid") == "5550100"
    assert request.get("rdnis") == ""  # Asterisk's literal "unknown"
    assert request.get("accountcode") == ""
    assert request.args == ("account=A1", "intent=x")


def test_script_path_loses_slashes_and_query():
    request = _parse(environment(script="route/?x=1"))
    assert request.script == "route"


def test_crlf_lines_are_accepted():
    request = _parse(environment(callerid="1").replace(b"\n", b"\r\n"))
    assert request.get("callerid") == "1"


@pytest.mark.parametrize(
    "block",
    [
        b"GET / HTTP/1.1\nHost: x\n\n",
        b"\n",
        b"agi_network_script: route\n\n",  # not a network AGI
        b"\x00\xff\xfe garbage\n",
    ],
    ids=["http", "blank-first", "no-agi-network", "binary"],
)
def test_non_agi_requests_are_refused(block):
    with pytest.raises(AgiProtocolError):
        _parse(block)


def test_oversized_request_is_refused():
    parser = RequestParser(max_bytes=1024)
    with pytest.raises(AgiProtocolError, match="larger than"):
        for i in range(100):
            parser.feed(f"agi_arg_{i}: {'x' * 50}\n".encode())


@pytest.mark.parametrize(
    ("line", "code", "result", "data"),
    [
        (b"200 result=1\n", 200, "1", None),
        (b"200 result=1 (support)\n", 200, "1", "support"),
        (b"200 result=0\n", 200, "0", None),
        (b"510 Invalid or unknown command\n", 510, None, None),
        (b"511 Command Not Permitted on a dead channel or intercept routine\n", 511, None, None),
    ],
)
def test_single_line_replies(line, code, result, data):
    reply = ReplyParser().feed(line)
    assert (reply.code, reply.result, reply.data) == (code, result, data)


def test_multi_line_520_is_read_to_its_end():
    parser = ReplyParser()
    lines = [
        b"520-Invalid command syntax.  Proper usage follows:\n",
        b" Usage: SET VARIABLE <variablename> <value>\n",
        b"   Sets a variable to the current channel.\n",
        b"520 End of proper usage.\n",
    ]
    assert [parser.feed(line) for line in lines[:-1]] == [None, None, None]
    reply = parser.feed(lines[-1])
    assert reply.code == 520 and "Usage: SET VARIABLE" in reply.text
    assert parser.feed(b"200 result=1\n").code == 200  # and the next reply is in step


def test_hangup_line_is_not_taken_for_the_reply():
    parser = ReplyParser()
    assert parser.feed(b"HANGUP\n") is HANGUP
    assert parser.feed(b"200 result=1\n").code == 200


def test_interim_100_is_skipped():
    parser = ReplyParser()
    assert parser.feed(b"100 result=0 Trying...\n") is None
    assert parser.feed(b"200 result=1\n").code == 200


def test_garbage_reply_is_a_protocol_error():
    with pytest.raises(AgiProtocolError):
        ReplyParser().feed(b"hello\n")


@pytest.mark.parametrize(
    "value", ["support", "", "two words", 'quote " inside', "back\\slash", "tab\there", "é"]
)
def test_quoted_values_reach_asterisk_unchanged(value):
    argv = parse_args(set_variable("__CTI_X", value).decode().rstrip("\n"))
    assert argv == ["SET", "VARIABLE", "__CTI_X", value]


def test_line_breaks_cannot_be_smuggled_into_a_command():
    with pytest.raises(ValueError):
        quote("a\nHANGUP")


@pytest.mark.parametrize("name", ["", "1X", "A B", "X;Y", "X(Y)", "___X"])
def test_bad_variable_names_are_refused(name):
    with pytest.raises(ValueError):
        set_variable(name, "v")


def test_control_characters_are_stripped_from_header_values():
    request = _parse(
        environment(
            callerid="212\x00000\x1f0002",
            dnid="5550\x7f100",
            channel="PJSIP/trunk-\x1b[2J\x9b0001",
            uniqueid="\t1795407778.1\x00",
        )
    )
    assert request.get("callerid") == "2120000002"
    assert request.get("dnid") == "5550100"
    assert request.get("channel") == "PJSIP/trunk-[2J0001"
    assert request.get("uniqueid") == "1795407778.1"
    assert request.refused == ()


def test_an_argument_with_a_control_character_is_dropped_whole():
    request = _parse(environment(args=["account=A1", "intent=bill\x00ing", "lang=\x85en"]))
    # Dropped, not stripped: "billing" is a choice the caller never made. The others
    # keep their positions.
    assert request.args == ("account=A1", "", "")
    assert request.headers["agi_arg_2"] == request.headers["agi_arg_3"] == ""
    assert request.refused == (
        "agi_arg_2: control character U+0000 NUL at character 12",
        "agi_arg_3: control character U+0085 at character 6",
    )


def test_an_argument_beyond_a_gap_is_still_cleaned():
    parser = RequestParser()
    for line in (b"agi_network: yes\n", b"agi_arg_1: a=1\n", b"agi_arg_3: b=\x00\n", b"\n"):
        request = parser.feed(line)
    assert request is not None
    assert request.args == ("a=1",)
    assert request.headers["agi_arg_3"] == "b="
