"""An agent's part in a call, from their events on it (cti.calls.part)."""

from __future__ import annotations

import pytest

from cti.calls.part import Part, part_from_events


@pytest.mark.parametrize(
    ("kinds", "part"),
    [
        ([], Part.NONE),
        (["ringing"], Part.RINGING),
        (["ringing", "ring_stopped"], Part.RANG),
        (["ringing", "ended"], Part.RANG),
        (["ringing", "abandoned"], Part.RANG),
        (["ringing", "connected", "left"], Part.CONNECTED),
        (["ringing", "ring_stopped", "ringing"], Part.RINGING),  # rings again (transfer back)
        (["ringing", "connected", "ended"], Part.CONNECTED),
    ],
)
def test_the_part_follows_the_agents_events(kinds: list[str], part: Part) -> None:
    assert part_from_events(kinds) is part


def test_only_a_connected_agent_writes_and_a_ringing_one_reads() -> None:
    assert [p for p in Part if p.may_write] == [Part.CONNECTED]
    assert {p for p in Part if p.may_read} == {Part.CONNECTED, Part.RINGING}
