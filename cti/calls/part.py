"""What part an agent had in a call, which decides what they may do with it.

Only an agent who was **connected** (talked) may write a call (its disposition, tags,
notes; transfer or hang it up): an agent whose phone merely rang did not handle it, and
letting them write would let them overwrite the colleague who did. An agent whose phone
**rings** may read the call (the screen pop); once it stopped ringing for them without
their answering (**rang**), the call is not theirs.

Pure: decided from the agent's own events on the call, in timeline order.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable


class Part(enum.Enum):
    CONNECTED = "connected"  # talked on the call at some point
    RINGING = "ringing"  # their phone rings now
    RANG = "rang"  # rang, was not answered, rings no more
    NONE = "none"  # never on the call

    @property
    def may_read(self) -> bool:
        return self in (Part.CONNECTED, Part.RINGING)

    @property
    def may_write(self) -> bool:
        return self is Part.CONNECTED


#: What ends an agent's ringing without their answering it (cti.calls.events).
_RING_ENDS = {"ring_stopped", "left", "ended", "abandoned", "transferred"}


def part_from_events(kinds: Iterable[str]) -> Part:
    """The agent's part from the kinds of the call's events that concern them (their own
    and the call-wide ``ended``/``abandoned``), oldest first."""
    ringing = rang = False
    for kind in kinds:
        if kind == "connected":
            return Part.CONNECTED
        if kind == "ringing":
            ringing, rang = True, True
        elif kind in _RING_ENDS:
            ringing = False
    if ringing:
        return Part.RINGING
    return Part.RANG if rang else Part.NONE
