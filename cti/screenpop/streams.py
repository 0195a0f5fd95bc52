"""Reading the call-event streams that cti.calls.publisher writes.

Each entry holds one field, ``e``: the event as JSON (:meth:`CallEvent.as_json`). The
streams keep a time (``CTI_STREAM_RETENTION_S``), so a client may come back for entries
that are gone: :func:`lost_after` says so, :func:`snapshot_start` is where it starts over.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from redis.asyncio import Redis
from redis.exceptions import ResponseError

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


def _parse_id(raw: bytes | str | None) -> tuple[int, int]:
    """``<ms>-<seq>`` (or ``<ms>``) as a pair that compares in stream order."""
    text = entry_id(raw) if raw is not None else START
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


async def lost_after(client: Redis, stream: str, after: str) -> str | None:
    """Why the stream may no longer give everything after ``after``, or None if it can.

    The stream holds everything after ``after`` when ``after`` is at or past its first
    entry. Otherwise entries were removed before it (or never were in it), and whether
    one of them came after ``after`` cannot be told (Redis 7 does not record what
    trimming removed), so the answer errs on the safe side: a client whose own last
    entry was trimmed is resynchronised, at worst needlessly, never skipped.
    ``"trimmed"``: the stream has removed entries (the retention); ``"reset"``: it has
    none removed yet does not reach back to ``after``, or it is gone: Redis lost its
    data, or the stream expired after a day without events.

    Call it after the read it vouches for: the first entry only moves forward, so a
    None after an XREAD from ``after`` means that XREAD skipped nothing."""
    if after == START:
        return None
    try:
        info = await client.xinfo_stream(stream)
    except ResponseError:  # no such key
        return "reset"
    wanted = _parse_id(after)
    first = info.get("first-entry")
    if first:
        if _parse_id(first[0]) <= wanted:
            return None
    elif _parse_id(info.get("last-generated-id")) <= wanted:
        return None  # empty, and nothing was ever added after ``after``
    removed = int(info.get("entries-added", 0)) > int(info.get("length", 0))
    return "trimmed" if removed else "reset"


async def snapshot_start(client: Redis, stream: str, entries: int) -> str:
    """Where a client with nothing (a new tab, or one resynchronised) starts: before the
    newest ``entries`` entries, so the page rebuilds the current calls from a bounded
    replay (an hour of the supervisors' stream can hold millions)."""
    newest = await client.xrevrange(stream, count=entries + 1) or []
    oldest = newest[-1][0] if len(newest) > entries else None
    return START if oldest is None else entry_id(oldest)
