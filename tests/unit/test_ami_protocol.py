"""The sans-I/O AMI framer (cti.ami.protocol): framing edge cases, limits and resync,
UTF-8 split across reads, every recorded capture parsed the same whatever the chunking,
and action encoding."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cti.ami.protocol import (
    ActionEncodingError,
    ActionIdGenerator,
    AmiParser,
    Message,
    MessageKind,
    encode_action,
)
from tests.unit import ami_replay

FIXTURES = ami_replay.fixture_names()


def feed_all(parser: AmiParser, *chunks: bytes) -> list[Message]:
    out: list[Message] = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    return out


def one_by_one(parser: AmiParser, data: bytes) -> list[Message]:
    return feed_all(parser, *(data[i : i + 1] for i in range(len(data))))


# -- greeting and basic framing -----------------------------------------------------------
def test_greeting_then_response_without_blank_line_between() -> None:
    parser = AmiParser()
    data = (
        b"Asterisk Call Manager/11.0.0\r\n"
        b"Response: Success\r\nActionID: login-1\r\nMessage: Authentication accepted\r\n\r\n"
    )
    greeting, response = parser.feed(data)
    assert greeting.kind is MessageKind.GREETING and greeting.name == "11.0.0"
    assert parser.version == "11.0.0"
    assert response.kind is MessageKind.RESPONSE and response.name == "Success"
    assert response.action_id == "login-1"
    assert response["message"] == "Authentication accepted"
    assert parser.buffered == 0


def test_greeting_split_across_reads() -> None:
    parser = AmiParser()
    messages = feed_all(parser, b"Asterisk Call", b" Manager/11.0.0\r", b"\nEvent: A\r\n\r\n")
    assert [m.kind for m in messages] == [MessageKind.GREETING, MessageKind.EVENT]
    assert parser.version == "11.0.0"


def test_no_greeting_is_fine_when_the_stream_starts_with_headers() -> None:
    parser = AmiParser()
    messages = feed_all(parser, b"Ev", b"ent: FullyBooted\r\nStatus: Fully Booted\r\n\r\n")
    assert [(m.kind, m.name) for m in messages] == [(MessageKind.EVENT, "FullyBooted")]
    assert parser.version is None


def test_crlf_lf_and_mixed_line_ends_give_the_same_messages() -> None:
    crlf = b"Event: Newstate\r\nChannel: PJSIP/1-1\r\nUniqueid: 1.1\r\n\r\n"
    lf = crlf.replace(b"\r\n", b"\n")
    mixed = b"Event: Newstate\nChannel: PJSIP/1-1\r\nUniqueid: 1.1\n\r\n"
    results = [AmiParser(expect_greeting=False).feed(data) for data in (crlf, lf, mixed)]
    assert results[0] == results[1] == results[2]
    assert results[0][0].get("CHANNEL") == "PJSIP/1-1"


def test_crlf_split_between_cr_and_lf() -> None:
    parser = AmiParser(expect_greeting=False)
    messages = feed_all(parser, b"Event: A\r", b"\nKey: v\r\n\r", b"\n")
    assert len(messages) == 1
    assert messages[0].fields == {"event": "A", "key": "v"}


def test_extra_blank_lines_between_messages_are_ignored() -> None:
    parser = AmiParser(expect_greeting=False)
    data = b"\r\n\r\nEvent: A\r\n\r\n\r\n\r\n\r\nEvent: B\r\n\r\n"
    assert [m.name for m in parser.feed(data)] == ["A", "B"]
    assert parser.stats.garbage_lines == 0


def test_kinds() -> None:
    parser = AmiParser(expect_greeting=False)
    event, response, other = parser.feed(
        b"Event: Hangup\r\n\r\nResponse: Error\r\nMessage: x\r\n\r\nPing: Pong\r\n\r\n"
    )
    assert event.is_event and event.name == "Hangup"
    assert response.is_response and response.name == "Error"
    assert other.kind is MessageKind.OTHER and other.name == "" and other["ping"] == "Pong"


def test_values_keep_colons_and_spaces() -> None:
    (msg,) = AmiParser(expect_greeting=False).feed(
        b"Event: X\r\nContact: sip:2001@127.0.0.1:5071\r\nCallerIDName:  two  spaces \r\n"
        b"AccountCode: \r\nNoSpace:value\r\nEmpty:\r\n\r\n"
    )
    assert msg["contact"] == "sip:2001@127.0.0.1:5071"
    assert msg["calleridname"] == " two  spaces "
    assert msg["accountcode"] == ""
    assert msg["nospace"] == "value"
    assert msg["empty"] == ""


# -- repeated keys and channel variables ----------------------------------------------------
REPEATED = (
    b"Event: DialBegin\r\nChannel: PJSIP/trunk-1\r\n"
    b"ChanVariable: CTI_CALL_ID=abc\r\nChanVariable: CTI_PRIORITY=5\r\n"
    b"ChanVariable: EMPTY=\r\nChanVariable: CTI_CALL_ID=second\r\n"
    b"DestChannel: PJSIP/2001-2\r\nDestChanVariable: CTI_CALL_ID=abc\r\n"
    b"chanvariable: X=lower-case key\r\n\r\n"
)


def test_repeated_keys_keep_every_value_in_order() -> None:
    (msg,) = AmiParser(expect_greeting=False).feed(REPEATED)
    assert msg.get("ChanVariable") == "CTI_CALL_ID=abc"  # the first one
    assert msg.getall("chanvariable") == [
        "CTI_CALL_ID=abc",
        "CTI_PRIORITY=5",
        "EMPTY=",
        "CTI_CALL_ID=second",
        "X=lower-case key",
    ]
    assert msg.getall("Missing") == []
    assert msg.getall("DestChannel") == ["PJSIP/2001-2"]
    assert msg.chanvars == {
        "CTI_CALL_ID": "abc",
        "CTI_PRIORITY": "5",
        "EMPTY": "",
        "X": "lower-case key",
    }
    assert msg.dest_chanvars == {"CTI_CALL_ID": "abc"}
    assert msg.variable("CTI_PRIORITY") == "5"
    assert msg.variable("CTI_CALL_ID", "Dest") == "abc"
    assert msg.variable("NOPE") is None
    assert msg.variables("Transferee") == {}


def test_lookup_is_case_insensitive_and_items_keep_the_spelling() -> None:
    (msg,) = AmiParser(expect_greeting=False).feed(b"Event: A\r\nBridgeUniqueid: b-1\r\n\r\n")
    assert msg.get("bridgeuniqueid") == msg.get("BRIDGEUNIQUEID") == msg["BridgeUniqueid"]
    assert "bridgeUNIQUEID" in msg and "nope" not in msg and 3 not in msg
    assert list(msg.items()) == [("Event", "A"), ("BridgeUniqueid", "b-1")]
    assert msg.get("nope", "default") == "default"


def test_from_pairs_equals_parsed() -> None:
    (parsed,) = AmiParser(expect_greeting=False).feed(REPEATED)
    built = Message.from_pairs(list(parsed.items()))
    assert built == parsed
    assert built != Message.from_pairs([("Event", "DialBegin")])


# -- UTF-8 --------------------------------------------------------------------------------
def test_multibyte_character_split_across_reads() -> None:
    data = "Event: Newchannel\r\nCallerIDName: José Ñúñez 日本\r\n\r\n".encode()
    cut = data.index("é".encode()) + 1  # inside the two bytes of é
    whole = AmiParser(expect_greeting=False).feed(data)
    split = feed_all(AmiParser(expect_greeting=False), data[:cut], data[cut:])
    assert split == whole
    assert split[0]["calleridname"] == "José Ñúñez 日本"
    assert one_by_one(AmiParser(expect_greeting=False), data) == whole


def test_invalid_utf8_is_replaced_and_counted_and_the_next_message_is_intact() -> None:
    parser = AmiParser(expect_greeting=False)
    bad, good = parser.feed(b"Event: A\r\nName: \xff\xfe\r\n\r\nEvent: B\r\nName: ok\r\n\r\n")
    assert bad["name"] == "\ufffd\ufffd"
    assert good["name"] == "ok"
    assert parser.stats.decode_errors == 1


# -- limits, garbage, resync ----------------------------------------------------------------
def test_oversized_message_is_dropped_counted_and_parsing_resumes() -> None:
    parser = AmiParser(expect_greeting=False, max_line=100, max_message=1000, max_lines=20)
    huge = b"Event: Huge\r\n" + b"".join(b"Key%d: value\r\n" % i for i in range(200)) + b"\r\n"
    after = b"Event: After\r\n\r\n"
    messages = []
    for i in range(0, len(huge + after), 7):
        messages.extend(parser.feed((huge + after)[i : i + 7]))
        assert len(parser._buf) <= 1000 + 7
    assert [m.name for m in messages] == ["After"]
    assert parser.stats.oversized == 1
    assert parser.stats.discarded_bytes > 0
    assert parser.buffered == 0


def test_too_many_lines_in_one_read_is_dropped() -> None:
    parser = AmiParser(expect_greeting=False, max_line=200, max_message=10_000, max_lines=20)
    many = b"Event: Many\r\n" + b"K: v\r\n" * 30 + b"\r\n"
    assert [m.name for m in parser.feed(many + b"Event: Next\r\n\r\n")] == ["Next"]
    assert parser.stats.oversized == 1


def test_a_line_too_long_in_a_complete_message_is_dropped() -> None:
    parser = AmiParser(expect_greeting=False, max_line=50, max_message=10_000)
    long_line = b"Event: Long\r\nValue: " + b"x" * 60 + b"\r\n\r\n"
    assert [m.name for m in parser.feed(long_line + b"Event: Next\r\n\r\n")] == ["Next"]
    assert parser.stats.oversized == 1


def test_an_endless_line_never_grows_the_buffer() -> None:
    parser = AmiParser(expect_greeting=False, max_line=1024, max_message=4096)
    assert parser.feed(b"Event: Endless\r\nData: ") == []
    for _ in range(2000):  # 8 MB without a line end
        assert parser.feed(b"y" * 4096) == []
        assert len(parser._buf) <= 4096 + 4096
    assert parser.resynchronising
    assert parser.buffered == 0
    messages = parser.feed(b"\r\n\r\nEvent: Back\r\n\r\n")
    assert [m.name for m in messages] == ["Back"]
    assert parser.stats.oversized == 1
    assert not parser.resynchronising


def test_an_endless_greeting_line_is_not_a_greeting() -> None:
    parser = AmiParser(max_line=64, max_message=256)
    for _ in range(100):
        parser.feed(b"z" * 64)
    assert parser.version is None
    assert [m.name for m in parser.feed(b"\r\n\r\nEvent: Ok\r\n\r\n")] == ["Ok"]


def test_garbage_lines_are_counted_and_skipped() -> None:
    parser = AmiParser(expect_greeting=False)
    messages = parser.feed(
        b"Event: A\r\nthis is not a header\r\nKey: v\r\n :starts with space\r\n\r\n"
        b"only garbage\r\nmore garbage\r\n\r\n"
        b"Event: B\r\n\r\n"
    )
    assert [(m.name, m.fields) for m in messages] == [
        ("A", {"event": "A", "key": "v"}),
        ("B", {"event": "B"}),
    ]
    assert parser.stats.garbage_lines == 4
    assert parser.stats.empty_messages == 1


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        AmiParser(max_line=100, max_message=50)
    with pytest.raises(ValueError):
        AmiParser(max_lines=0)


def test_feeding_nothing_is_harmless() -> None:
    parser = AmiParser()
    assert parser.feed(b"") == []
    assert parser.buffered == 0


# -- every capture, any chunking ---------------------------------------------------------------
@pytest.mark.parametrize("name", FIXTURES)
def test_capture_parses_the_same_whole_and_byte_by_byte(name: str) -> None:
    data = ami_replay.load(name)
    whole = ami_replay.parse(data)
    assert whole[0].kind is MessageKind.GREETING
    assert whole[1].is_response and whole[1].name == "Success"  # the Login response
    assert whole[-1].is_response and whole[-1].name == "Goodbye"
    assert ami_replay.parse(data, [1]) == whole
    # Every event carries a Timestamp (timestampevents=yes) except FullyBooted.
    events = [m for m in whole if m.is_event and m.name != "FullyBooted"]
    assert events and all("timestamp" in m for m in events)


@pytest.mark.parametrize("name", FIXTURES)
@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=40))
def test_capture_parses_the_same_in_random_chunks(name: str, sizes: list[int]) -> None:
    data = ami_replay.load(name)
    assert ami_replay.parse(data, sizes) == ami_replay.parse(data)


_KEY = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,15}", fullmatch=True)
_VALUE = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n"),
    max_size=40,
).filter(lambda value: not value.startswith(" "))


@settings(max_examples=200, deadline=None)
@given(
    messages=st.lists(
        st.lists(st.tuples(_KEY, _VALUE), min_size=1, max_size=8), min_size=1, max_size=6
    ),
    newline=st.sampled_from([b"\r\n", b"\n"]),
    data=st.data(),
)
def test_any_messages_survive_any_chunking(
    messages: list[list[tuple[str, str]]], newline: bytes, data: st.DataObject
) -> None:
    wire = b"".join(
        b"".join(f"{key}: {value}".encode() + newline for key, value in pairs) + newline
        for pairs in messages
    )
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(wire) - 1)), max_size=20)))
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    parser = AmiParser(expect_greeting=False)
    parsed = feed_all(parser, *pieces)
    assert parsed == [Message.from_pairs(pairs) for pairs in messages]
    assert parser.buffered == 0
    assert parser.stats.garbage_lines == 0


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(1, 599), max_size=12))
def test_arbitrary_bytes_never_crash_stay_bounded_and_ignore_chunking(
    data: bytes, cuts: list[int]
) -> None:
    def run(pieces: list[bytes]) -> tuple[list[Message], int]:
        parser = AmiParser(max_line=64, max_message=256, max_lines=8)
        out: list[Message] = []
        for piece in pieces:
            out.extend(parser.feed(piece))
            assert len(parser._buf) <= 256 + len(piece) + 2
        return out, parser.buffered

    points = sorted({cut for cut in cuts if cut < len(data)})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert run(pieces) == run([data])


# -- encoding actions ------------------------------------------------------------------------
def test_encode_action() -> None:
    wire = encode_action(
        "Originate",
        {"Channel": "PJSIP/2001", "Variable": ["A=1", "B=é"], "Async": "true"},
        "cti-7",
    )
    assert wire == (
        b"Action: Originate\r\nActionID: cti-7\r\nChannel: PJSIP/2001\r\n"
        b"Variable: A=1\r\nVariable: B=\xc3\xa9\r\nAsync: true\r\n\r\n"
    )
    (parsed,) = AmiParser(expect_greeting=False).feed(wire)
    assert parsed.kind is MessageKind.OTHER and parsed["action"] == "Originate"
    assert parsed.getall("variable") == ["A=1", "B=é"]


def test_encode_action_without_fields() -> None:
    assert encode_action("Ping", {}, "p-1") == b"Action: Ping\r\nActionID: p-1\r\n\r\n"


@pytest.mark.parametrize(
    ("name", "fields", "action_id"),
    [
        ("Hangup", {"Channel": "PJSIP/2001\r\nAction: Shutdown"}, "a-1"),
        ("Hangup", {"Channel": "x\n"}, "a-1"),
        ("Hangup", {"Channel": "x\r"}, "a-1"),
        ("Hangup", {"Variable": ["ok", "bad\r\n"]}, "a-1"),
        ("Hangup\r\n", {}, "a-1"),
        ("", {}, "a-1"),
        ("Hangup", {}, "a-1\r\nX: y"),
        ("Hangup", {}, ""),
        ("Hangup", {"Bad\nKey": "v"}, "a-1"),
        ("Hangup", {"Bad:Key": "v"}, "a-1"),
        ("Hangup", {"": "v"}, "a-1"),
        ("Hangup", {" Padded": "v"}, "a-1"),
        ("Hangup", {"ActionID": "other"}, "a-1"),
        ("Hangup", {"action": "Shutdown"}, "a-1"),
        ("Hangup", {"Channel": 5}, "a-1"),
        ("Hangup", {"Channel": None}, "a-1"),
    ],
)
def test_encode_action_refuses(name: str, fields: dict, action_id: str) -> None:
    with pytest.raises(ActionEncodingError):
        encode_action(name, fields, action_id)


def test_action_ids_are_injected_and_sequential() -> None:
    ids = ActionIdGenerator("conn1")
    assert [ids(), ids(), ids()] == ["conn1-1", "conn1-2", "conn1-3"]
    assert ActionIdGenerator()() == "cti-1"
    with pytest.raises(ActionEncodingError):
        ActionIdGenerator("bad\r\n")
