"""Reading the call-event streams that cti.calls.publisher writes.

Each entry holds one field, ``e``: the event as JSON (:meth:`CallEvent.as_json`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

#: A stream entry id as clients send it back (``after=``): ``<ms>-<seq>`` or ``<ms>``.
STREAM_ID = re.compile(r"[0-9]{1,20}(-[0-9]{1,20})?")
#: Before every entry: "everything the stream still holds".
START = "0-0"


def entry_json(fields: Mapping[bytes | str, bytes | str]) -> str | None:
    """The event JSON of an entry, or None for an entry that is not ours."""
    raw = fields.get(b"e", fields.get("e"))
    if raw is None:
        return None
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def entry_id(raw: bytes | str) -> str:
    return raw.decode("ascii") if isinstance(raw, bytes) else raw
