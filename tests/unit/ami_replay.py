"""Replaying recorded AMI traffic (tests/fixtures/ami/*.txt) through the real parser
and the real call model, strictly: leftover bytes, dropped lines, unknown call events,
channels the model did not track and late events all fail the replay.

A fixture is the raw byte stream one AMI session received from Asterisk 22.10.1 (CRLF
kept), preceded by one ``#`` line that says how it was recorded.

Renaming (for interleaving captures, and for the benchmark's replicated traffic): every
header whose key ends in ``Uniqueid``, ``Linkedid`` or ``BridgeId`` gets ``<tag>`` put
in front of its value; every key ending in ``Channel`` (and ``Newname``) gets ``<tag>``
inserted after the last ``-`` of the channel name, so ``PJSIP/2001-0000000e`` becomes
``PJSIP/2001-<tag>0000000e`` (same device, new channel); a non-empty
``...ChanVariable: CTI_CALL_ID=<uuid>`` becomes ``CTI_CALL_ID=<tag><uuid>``; and every
``Timestamp`` is shifted by ``shift`` seconds. Agents, queues, numbers are unchanged, so
two renamed copies of one capture are two concurrent calls to the same agents. Tags
must not contain ``-``, ``;``, ``@`` or ``=``.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cti.ami.protocol import AmiParser, Message
from cti.calls.effects import Effect
from cti.calls.model import CallModel

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ami"


def fixture_names() -> list[str]:
    return sorted(path.stem for path in FIXTURES.glob("*.txt"))


def load(name: str) -> bytes:
    """The fixture's bytes as received, without its ``#`` header line."""
    raw = (FIXTURES / f"{name}.txt").read_bytes()
    if not raw.startswith(b"#"):
        raise AssertionError(f"{name}: first line must be a '#' comment")
    return raw[raw.index(b"\n") + 1 :]


# -- parsing ---------------------------------------------------------------------------
def parse(data: bytes, chunks: Iterable[int] | None = None) -> list[Message]:
    """Parse ``data`` whole, or cut into pieces of the given sizes (cycled); strict."""
    parser = AmiParser()
    messages: list[Message] = []
    if chunks is None:
        messages.extend(parser.feed(data))
    else:
        sizes = list(chunks)
        if not sizes or min(sizes) < 1:
            raise ValueError("chunk sizes must be >= 1")
        offset = 0
        index = 0
        while offset < len(data):
            size = sizes[index % len(sizes)]
            messages.extend(parser.feed(data[offset : offset + size]))
            offset += size
            index += 1
    stats = parser.stats
    if parser.buffered:
        raise AssertionError(f"{parser.buffered} bytes left over after the last message")
    if stats.oversized or stats.garbage_lines or stats.decode_errors or stats.empty_messages:
        raise AssertionError(f"parser dropped input: {stats}")
    return messages


def random_chunks(data: bytes, rng: random.Random, max_size: int = 64) -> Iterator[bytes]:
    offset = 0
    while offset < len(data):
        size = rng.randint(1, max_size)
        yield data[offset : offset + size]
        offset += size


# -- replay through the model ----------------------------------------------------------
@dataclass
class Replay:
    model: CallModel
    effects: list[Effect] = field(default_factory=list)
    by_message: list[tuple[Message, list[Effect]]] = field(default_factory=list)

    def of(self, *types: type[Effect]) -> list[Effect]:
        return [effect for effect in self.effects if isinstance(effect, types)]

    def calls(self) -> dict[str, list[Effect]]:
        """Effects grouped by the call's Linkedid (stable for a call's whole life)."""
        grouped: dict[str, list[Effect]] = {}
        for effect in self.effects:
            grouped.setdefault(effect.linkedid, []).append(effect)
        return grouped


def replay(messages: Sequence[Message], model: CallModel | None = None) -> Replay:
    """Apply every message in order; fail on anything the model could not place.

    Besides the model's own counters, every event that carries a Uniqueid is checked
    independently: after it, the model must know that channel, unless the event was the
    channel's Hangup.
    """
    model = model if model is not None else CallModel()
    result = Replay(model)
    hung_up: set[str] = set()
    for msg in messages:
        effects = model.apply(msg)
        result.effects.extend(effects)
        result.by_message.append((msg, effects))
        uniqueid = msg.fields.get("uniqueid")
        if not uniqueid or not msg.is_event or model.restoring:
            continue
        if msg.name == "Hangup":
            hung_up.add(uniqueid)
        elif uniqueid not in hung_up and model.channel(uniqueid) is None:
            raise AssertionError(f"model lost channel {uniqueid} on {msg.name}")
    stats = model.stats
    problems = {
        "unknown events": stats.unknown,
        "late channels": stats.late_channels,
        "late events": stats.late_events,
        "unattributed": stats.unattributed,
        "call id conflicts": stats.call_id_conflicts,
    }
    bad = {name: value for name, value in problems.items() if value}
    if bad:
        raise AssertionError(f"model could not place events: {bad}")
    return result


def replay_fixture(name: str, model: CallModel | None = None) -> Replay:
    return replay(parse(load(name)), model)


# -- raw blocks, renaming, interleaving --------------------------------------------------
def split_blocks(data: bytes) -> tuple[bytes, list[bytes]]:
    """(greeting line, message blocks each with its CRLF CRLF terminator)."""
    greeting = b""
    if data.startswith(b"Asterisk Call Manager/"):
        end = data.index(b"\r\n") + 2
        greeting, data = data[:end], data[end:]
    blocks = [block + b"\r\n\r\n" for block in data.split(b"\r\n\r\n") if block]
    return greeting, blocks


def is_event_block(block: bytes) -> bool:
    return block.startswith(b"Event: ")


def block_timestamp(block: bytes) -> float | None:
    start = block.find(b"\r\nTimestamp: ")
    if start < 0:
        return None
    start += len(b"\r\nTimestamp: ")
    return float(block[start : block.index(b"\r\n", start)])


_ID_SUFFIXES = (b"Uniqueid", b"Linkedid", b"BridgeId")
_CHANNEL_SUFFIXES = (b"Channel", b"Newname")


class Renamer:
    """Renders one capture's blocks again and again under new tags (see module doc).

    The insertion points are found once, so rendering a copy is a join: cheap enough to
    replicate a capture a few hundred times for the benchmark.
    """

    def __init__(self, blocks: Sequence[bytes], call_id_variable: bytes = b"CTI_CALL_ID"):
        self._pieces: list[bytes | float | None] = []  # bytes, None = tag, float = time
        head = call_id_variable + b"="
        pieces = self._pieces
        for block in blocks:
            pending = b""
            for line in block.split(b"\r\n")[:-1]:
                key, sep, value = line.partition(b": ")
                if not sep or not value:
                    pending += line + b"\r\n"
                    continue
                if key == b"Timestamp":
                    pieces.append(pending + key + sep)
                    pieces.append(float(value))
                    pending = b"\r\n"
                elif key.endswith(_ID_SUFFIXES):
                    pieces.append(pending + key + sep)
                    pieces.append(None)
                    pending = value + b"\r\n"
                elif key.endswith(_CHANNEL_SUFFIXES) and b"-" in value:
                    dash = value.rindex(b"-") + 1
                    pieces.append(pending + key + sep + value[:dash])
                    pieces.append(None)
                    pending = value[dash:] + b"\r\n"
                elif key.endswith(b"ChanVariable") and value.startswith(head) and value != head:
                    pieces.append(pending + key + sep + head)
                    pieces.append(None)
                    pending = value[len(head) :] + b"\r\n"
                else:
                    pending += line + b"\r\n"
            pieces.append(pending)

    def render(self, tag: str, shift: float = 0.0) -> bytes:
        if any(char in tag for char in "-;@="):
            raise ValueError(f"bad tag {tag!r}")
        tag_b = tag.encode()
        out = []
        for piece in self._pieces:
            if piece is None:
                out.append(tag_b)
            elif isinstance(piece, float):
                out.append(b"%.6f" % (piece + shift))
            else:
                out.append(piece)
        return b"".join(out)


def renamed_events(name: str, tag: str, shift: float = 0.0) -> list[bytes]:
    """The event blocks of one fixture, renamed (responses and the greeting left out)."""
    _, blocks = split_blocks(load(name))
    events = [block for block in blocks if is_event_block(block)]
    return split_blocks(Renamer(events).render(tag, shift))[1]


def interleave(streams: Sequence[Sequence[bytes]]) -> list[bytes]:
    """Merge event blocks of several captures by Timestamp; each stream keeps its order
    (ties and blocks without a Timestamp stay behind their predecessor)."""

    def keyed(index: int, blocks: Sequence[bytes]) -> Iterator[tuple[float, int, int, bytes]]:
        last = float("-inf")
        for position, block in enumerate(blocks):
            stamp = block_timestamp(block)
            last = max(last, stamp) if stamp is not None else last
            yield last, index, position, block

    merged = heapq.merge(*(keyed(i, blocks) for i, blocks in enumerate(streams)))
    return [block for *_, block in merged]
