"""The rules for editing a call's attached data: what an agent may change, and how much.

An edit (a "change") names some of ``note``, ``disposition``, ``tags`` and
``attributes``; anything else is refused, so a typo never silently stores nothing and
an agent can never overwrite what the route wrote (customer, routing, IVR input).
Every accepted change yields a new document whose ``version`` is one more: the store
refuses a change made against any version but the current one, so two agents never
overwrite each other without noticing.

Refusals are :class:`CallDataError` with a ``code`` an HTTP layer can map directly:
``invalid`` (wrong type, bad format, unknown field; retrying the same edit cannot
help), ``too_large`` (a length or count over its limit, or the whole document over
:data:`MAX_DOCUMENT_BYTES`), ``stale_version`` (:class:`StaleVersion`, carries the
current document so the client can merge and retry) and ``unknown_call``.

Text is refused if it holds control characters (other than newline and tab in free
text) or lone surrogates: PostgreSQL's ``jsonb`` refuses ``\\u0000`` and unpaired
surrogates, so such a document would be accepted in Redis and then jam the history
writer for good.

Pure: no I/O, no clock (``now`` is passed in).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

ErrorCode = Literal["invalid", "too_large", "stale_version", "unknown_call"]

#: The whole document, serialised as stored (:func:`serialize`), in UTF-8 bytes.
MAX_DOCUMENT_BYTES = 32 * 1024
MAX_NOTE_CHARS = 4_000
MAX_DISPOSITION_CHARS = 64
MAX_TAGS = 20
MAX_TAG_CHARS = 32
MAX_ATTRIBUTES = 50
MAX_ATTRIBUTE_KEY_CHARS = 64
MAX_ATTRIBUTE_VALUE_CHARS = 1_024
MAX_WRITER_CHARS = 128  # call_data_history.changed_by checks the same

FIELDS = frozenset({"note", "disposition", "tags", "attributes"})

#: Letters, digits, space, ``_ - . /``; starts and ends with no space (lengths checked apart).
DISPOSITION = re.compile(r"^[A-Za-z0-9_./-](?:[A-Za-z0-9 _./-]*[A-Za-z0-9_./-])?\Z")
TAG = re.compile(r"^[A-Za-z0-9_-]+\Z")
ATTRIBUTE_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*\Z")  # \Z: no trailing newline

#: Control characters (Unicode category Cc) and lone surrogates; free text may hold \n, \t.
_BAD_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_BAD_FREE_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


class CallDataError(Exception):
    """A refused read or edit of call data; nothing was stored."""

    def __init__(self, code: ErrorCode, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def as_json(self) -> dict[str, Any]:
        """The error body an API returns."""
        return {"error": self.code, "message": self.message, "field": self.field}


class StaleVersion(CallDataError):
    """The edit was made against an older version: re-read (``current``), merge, retry."""

    def __init__(self, sent_version: int, current: Mapping[str, Any]) -> None:
        self.current_version: int = current["version"]
        self.current: dict[str, Any] = dict(current)
        super().__init__(
            "stale_version",
            f"version: {sent_version} was sent but the call data is at version "
            f"{self.current_version}",
            "version",
        )


def serialize(document: Mapping[str, Any]) -> bytes:
    """The stored form: compact JSON, UTF-8 (what the size limit measures)."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def check_size(document: Mapping[str, Any]) -> bytes:
    """Serialise ``document``, refusing it when over :data:`MAX_DOCUMENT_BYTES`."""
    try:
        raw = serialize(document)
    except UnicodeEncodeError as exc:  # a lone surrogate from elsewhere in the document
        raise CallDataError("invalid", "document: holds text that is not valid Unicode") from exc
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise CallDataError(
            "too_large", f"document: {len(raw):,} bytes, at most {MAX_DOCUMENT_BYTES:,}"
        )
    return raw


def check_change(change: object, by: object) -> None:
    """Every check that does not depend on the current document (cheap, no I/O needed).

    :func:`apply_change` runs it too; a store runs it first so that a malformed edit is
    refused before any read, and never reported as stale instead."""
    _check_writer(by)
    if not isinstance(change, Mapping):
        raise CallDataError("invalid", f"change: must be an object, not {_type(change)}")
    if not change:
        raise CallDataError(
            "invalid", "change: empty; give at least one of " + ", ".join(sorted(FIELDS))
        )
    for key in change:
        if key not in FIELDS:
            raise CallDataError(
                "invalid",
                f"{_show(key)}: unknown field; allowed: " + ", ".join(sorted(FIELDS)),
                str(key),
            )
    if "note" in change:
        _check_note(change["note"])
    if "disposition" in change:
        _check_disposition(change["disposition"])
    if "tags" in change:
        _check_tags(change["tags"])
    if "attributes" in change:
        _check_attributes(change["attributes"])


def apply_change(
    document: Mapping[str, Any], change: Mapping[str, Any], by: str, now: datetime
) -> dict[str, Any]:
    """A new document with ``change`` applied, ``version`` + 1; ``document`` is untouched."""
    check_change(change, by)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    at = now.astimezone(UTC).isoformat()
    new = copy.deepcopy(dict(document))
    if "note" in change:
        new["notes"] = _set_note(new.get("notes") or [], by, change["note"], at)
    if "disposition" in change:
        new["disposition"] = change["disposition"]
    if "tags" in change:
        new["tags"] = list(change["tags"])
    if "attributes" in change:
        new["attributes"] = _merge_attributes(new.get("attributes") or {}, change["attributes"])
    new["version"] = int(document["version"]) + 1
    new["updated_at"] = at
    new["updated_by"] = by
    return new


def _set_note(notes: list[dict[str, Any]], by: str, text: str, at: str) -> list[dict[str, Any]]:
    """One note per writer: replaced in place (order of first writing), removed when empty."""
    entry = {"by": by, "text": text, "at": at}
    out: list[dict[str, Any]] = []
    found = False
    for note in notes:
        if note.get("by") == by:
            found = True
            if text:
                out.append(entry)
        else:
            out.append(note)
    if not found and text:
        out.append(entry)
    return out


def _merge_attributes(
    current: Mapping[str, Any], change: Mapping[str, str | None]
) -> dict[str, Any]:
    merged = dict(current)
    for key, value in change.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    if len(merged) > MAX_ATTRIBUTES:
        raise CallDataError(
            "too_large",
            f"attributes: {len(merged):,} keys after this change, at most {MAX_ATTRIBUTES:,}",
            "attributes",
        )
    return merged


def _check_writer(by: object) -> None:
    if not isinstance(by, str) or not by:
        raise CallDataError("invalid", f"by: must be a non-empty string, not {_type(by)}", "by")
    if len(by) > MAX_WRITER_CHARS:
        raise CallDataError(
            "too_large", f"by: {len(by):,} characters, at most {MAX_WRITER_CHARS:,}", "by"
        )
    _check_text("by", by, free=False)


def _check_note(note: object) -> None:
    if not isinstance(note, str):
        raise CallDataError("invalid", f"note: must be a string, not {_type(note)}", "note")
    if len(note) > MAX_NOTE_CHARS:
        raise CallDataError(
            "too_large", f"note: {len(note):,} characters, at most {MAX_NOTE_CHARS:,}", "note"
        )
    _check_text("note", note, free=True)


def _check_disposition(disposition: object) -> None:
    if disposition is None:
        return
    if not isinstance(disposition, str):
        raise CallDataError(
            "invalid",
            f"disposition: must be a string or null, not {_type(disposition)}",
            "disposition",
        )
    if len(disposition) > MAX_DISPOSITION_CHARS:
        raise CallDataError(
            "too_large",
            f"disposition: {len(disposition):,} characters, at most {MAX_DISPOSITION_CHARS}",
            "disposition",
        )
    if not DISPOSITION.match(disposition):
        raise CallDataError(
            "invalid",
            f"disposition: {_show(disposition)} is not 1 to {MAX_DISPOSITION_CHARS} letters, "
            "digits, spaces or _-./ (no leading or trailing space)",
            "disposition",
        )


def _check_tags(tags: object) -> None:
    if not isinstance(tags, list):
        raise CallDataError("invalid", f"tags: must be a list, not {_type(tags)}", "tags")
    if len(tags) > MAX_TAGS:
        raise CallDataError("too_large", f"tags: {len(tags):,} tags, at most {MAX_TAGS}", "tags")
    seen: set[str] = set()
    for tag in tags:
        if not isinstance(tag, str):
            raise CallDataError("invalid", f"tags: must hold strings, not {_type(tag)}", "tags")
        if len(tag) > MAX_TAG_CHARS:
            raise CallDataError(
                "too_large",
                f"tags: {_show(tag)} is {len(tag):,} characters, at most {MAX_TAG_CHARS}",
                "tags",
            )
        if not TAG.match(tag):
            raise CallDataError(
                "invalid",
                f"tags: {_show(tag)} is not 1 to {MAX_TAG_CHARS} of A-Z a-z 0-9 _ -",
                "tags",
            )
        if tag in seen:
            raise CallDataError("invalid", f"tags: {_show(tag)} appears twice", "tags")
        seen.add(tag)


def _check_attributes(attributes: object) -> None:
    if not isinstance(attributes, Mapping):
        raise CallDataError(
            "invalid", f"attributes: must be an object, not {_type(attributes)}", "attributes"
        )
    for key, value in attributes.items():
        if not isinstance(key, str):
            raise CallDataError(
                "invalid", f"attributes: keys must be strings, not {_type(key)}", "attributes"
            )
        if len(key) > MAX_ATTRIBUTE_KEY_CHARS:
            raise CallDataError(
                "too_large",
                f"attributes: key {_show(key)} is {len(key):,} characters, "
                f"at most {MAX_ATTRIBUTE_KEY_CHARS}",
                "attributes",
            )
        if not ATTRIBUTE_KEY.match(key):
            raise CallDataError(
                "invalid",
                f"attributes: key {_show(key)} must be a letter then letters, digits or _.-",
                "attributes",
            )
        field = f"attributes.{key}"
        if value is None:
            continue
        if not isinstance(value, str):
            raise CallDataError(
                "invalid", f"{field}: must be a string or null, not {_type(value)}", field
            )
        if len(value) > MAX_ATTRIBUTE_VALUE_CHARS:
            raise CallDataError(
                "too_large",
                f"{field}: {len(value):,} characters, at most {MAX_ATTRIBUTE_VALUE_CHARS:,}",
                field,
            )
        _check_text(field, value, free=True)


def _check_text(field: str, text: str, *, free: bool) -> None:
    bad = (_BAD_FREE_TEXT if free else _BAD_TEXT).search(text)
    if bad is not None:
        char = bad.group()
        what = "lone surrogate" if "\ud800" <= char <= "\udfff" else "control character"
        raise CallDataError(
            "invalid", f"{field}: {what} U+{ord(char):04X} at position {bad.start()}", field
        )


def _type(value: object) -> str:
    """The JSON name of a value's type, for messages that speak the client's language."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _show(value: object, limit: int = 32) -> str:
    """A value quoted for a message, cut short so errors stay small."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
