"""``Action: Filter``: which events a session asks Asterisk for.

Filters are the session's, they save bandwidth and Asterisk CPU, and they are never
needed for correctness. Which events to ask for is the consumer's decision (the call
model's table, ``cti.calls.model.CALL_CENTRE_EVENTS``), passed in by the composition
root: this adapter knows how to spell a filter, not what the core needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cti.ami.protocol import FieldValue


@dataclass(frozen=True, slots=True)
class AmiFilter:
    """One ``Action: Filter`` / ``Operation: Add``. ``filter`` is a legacy regex over the
    whole event (``!`` in front excludes) unless ``match_criteria`` is given (advanced
    filters, Asterisk >= 22.1), in which case it is the expression the criteria test."""

    filter: str
    match_criteria: str | None = None

    def fields(self) -> dict[str, FieldValue]:
        fields: dict[str, FieldValue] = {"Operation": "Add", "Filter": self.filter}
        if self.match_criteria is not None:
            fields["MatchCriteria"] = self.match_criteria
        return fields


def event_filter(names: Iterable[str]) -> AmiFilter:
    """One include filter passing the named events. A legacy regex (every Asterisk has
    it); it may let through an event whose name merely starts with one of ``names``
    (``Hangup`` also passes ``HangupRequest``), which costs bandwidth, not correctness."""
    return AmiFilter("Event: (" + "|".join(names) + ")")
