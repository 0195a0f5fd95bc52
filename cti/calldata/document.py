"""The call document: its one typed definition, how the route makes it, and the rules
for editing it (what an agent may change, and how much).

The route makes version 1 (:func:`new_document`); the store keeps it as JSON
(:func:`serialize`, :func:`deserialize`); the sidebar reads it. All three use
:class:`CallDocument`, a ``TypedDict``: the document is JSON at every boundary (Redis,
PostgreSQL's ``jsonb``, the API), so a typed dict costs nothing to make or store and
still lets the type checker hold every reader to the same shape.

An edit (a "change") names some of ``note``, ``disposition``, ``tags`` and
``attributes``; anything else is refused, so a typo never silently stores nothing and
an agent can never overwrite what the route wrote (customer, routing, IVR input).
Every accepted change yields a new document whose ``version`` is one more: the store
refuses a change made against any version but the current one, so two agents never
overwrite each other without noticing.

Refusals are :class:`cti.errors.DomainError` with code ``invalid`` (wrong type, bad
format, unknown field; retrying the same edit cannot help), ``too_large`` (a length or
count over its limit, or the whole document over :data:`MAX_DOCUMENT_BYTES`),
``stale_version`` (:class:`StaleVersion`, carries the current document so the client can
merge and retry) or ``unknown_call``.

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
from typing import Any, NotRequired, TypedDict, cast

from cti.errors import DomainError
from cti.routing.model import Customer, Decision

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

#: A call id: a UUID in its usual spelling (the route makes them; clients and the
#: inter-PBX trunk's ``X-CTI-Call-ID`` send them back).
CALL_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z", re.I)

#: Letters, digits, space, ``_ - . /``; starts and ends with no space (lengths checked apart).
DISPOSITION = re.compile(r"^[A-Za-z0-9_./-](?:[A-Za-z0-9 _./-]*[A-Za-z0-9_./-])?\Z")
TAG = re.compile(r"^[A-Za-z0-9_-]+\Z")
ATTRIBUTE_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*\Z")  # \Z: no trailing newline

#: Control characters (Unicode category Cc) and lone surrogates; free text may hold \n, \t.
_BAD_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_BAD_FREE_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


class CustomerCard(TypedDict):
    """Who is calling, as the route found them (their ``customers`` row)."""

    id: int
    account_number: str
    name: str
    tier: str
    status: str
    language: str


class RoutingCard(TypedDict):
    """What the route decided (:class:`cti.routing.model.Decision`), and why it failed
    open if it did (``lookup-timeout``, ``lookup-error``, ``no-routing-plan``)."""

    route: str
    queue: str | None
    priority: int
    rule: str
    tier: str
    fail_open: str | None


class Note(TypedDict):
    """One agent's note: one per writer (``by``), replaced when they write again."""

    by: str
    text: str
    at: str  # ISO 8601, UTC


class CallDocument(TypedDict):
    """The data attached to a call, from the route to the last edit.

    ``customer``, ``routing`` and ``ivr`` are the route's and never change; ``notes``,
    ``disposition``, ``tags`` and ``attributes`` are the agents' (:func:`apply_change`),
    and every edit adds one to ``version`` and sets ``updated_at``/``updated_by``."""

    call_id: str
    version: int
    created_at: str  # ISO 8601
    channel: str
    uniqueid: str
    ani: str  # E.164 when the number could be normalised, else as received
    dnis: str
    service: str | None
    customer: CustomerCard | None
    routing: RoutingCard
    ivr: dict[str, str]
    notes: list[Note]
    disposition: str | None
    tags: list[str]
    attributes: dict[str, str]
    updated_at: NotRequired[str]
    updated_by: NotRequired[str]


def new_document(
    *,
    call_id: str,
    created_at: datetime,
    channel: str,
    uniqueid: str,
    ani: str,
    dnis: str,
    customer: Customer | None,
    decision: Decision,
    fail_open: str | None,
    ivr: Mapping[str, str],
) -> CallDocument:
    """Version 1, as the route makes it: the screen pop starts from this."""
    return {
        "call_id": call_id,
        "version": 1,
        "created_at": created_at.isoformat(),
        "channel": channel,
        "uniqueid": uniqueid,
        "ani": ani,
        "dnis": dnis,
        "service": decision.service,
        "customer": None
        if customer is None
        else {
            "id": customer.id,
            "account_number": customer.account_number,
            "name": customer.name,
            "tier": customer.tier,
            "status": customer.status,
            "language": customer.language,
        },
        "routing": {
            "route": decision.route.value,
            "queue": decision.queue,
            "priority": decision.priority,
            "rule": decision.rule,
            "tier": decision.tier,
            "fail_open": fail_open,
        },
        "ivr": dict(ivr),
        "notes": [],
        "disposition": None,
        "tags": [],
        "attributes": {},
    }


class StaleVersion(DomainError):
    """The edit was made against an older version: re-read (``current``), merge, retry."""

    def __init__(self, sent_version: int, current: CallDocument) -> None:
        self.current_version: int = current["version"]
        self.current: CallDocument = current
        super().__init__(
            "stale_version",
            f"version: {sent_version} was sent but the call data is at version "
            f"{self.current_version}",
            "version",
            details={"current": current},
        )


def serialize(document: Mapping[str, Any]) -> bytes:
    """The stored form: compact JSON, UTF-8 (what the size limit measures)."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def deserialize(raw: bytes | str) -> CallDocument:
    """A document as stored (by :func:`serialize`, or PostgreSQL's ``jsonb`` as text)."""
    return cast(CallDocument, json.loads(raw))


def check_size(document: Mapping[str, Any]) -> bytes:
    """Serialise ``document``, refusing it when over :data:`MAX_DOCUMENT_BYTES`."""
    try:
        raw = serialize(document)
    except UnicodeEncodeError as exc:  # a lone surrogate from elsewhere in the document
        raise DomainError("invalid", "document: holds text that is not valid Unicode") from exc
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise DomainError(
            "too_large", f"document: {len(raw):,} bytes, at most {MAX_DOCUMENT_BYTES:,}"
        )
    return raw


def check_change(change: object, by: object) -> None:
    """Every check that does not depend on the current document (cheap, no I/O needed).

    :func:`apply_change` runs it too; a store runs it first so that a malformed edit is
    refused before any read, and never reported as stale instead."""
    _check_writer(by)
    if not isinstance(change, Mapping):
        raise DomainError("invalid", f"change: must be an object, not {_type(change)}")
    if not change:
        raise DomainError(
            "invalid", "change: empty; give at least one of " + ", ".join(sorted(FIELDS))
        )
    for key in change:
        if key not in FIELDS:
            raise DomainError(
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
    document: CallDocument, change: Mapping[str, Any], by: str, now: datetime
) -> CallDocument:
    """A new document with ``change`` applied, ``version`` + 1; ``document`` is untouched."""
    check_change(change, by)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    at = now.astimezone(UTC).isoformat()
    new = copy.deepcopy(document)
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


def _set_note(notes: list[Note], by: str, text: str, at: str) -> list[Note]:
    """One note per writer: replaced in place (order of first writing), removed when empty."""
    entry: Note = {"by": by, "text": text, "at": at}
    out: list[Note] = []
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
    current: Mapping[str, str], change: Mapping[str, str | None]
) -> dict[str, str]:
    merged = dict(current)
    for key, value in change.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    if len(merged) > MAX_ATTRIBUTES:
        raise DomainError(
            "too_large",
            f"attributes: {len(merged):,} keys after this change, at most {MAX_ATTRIBUTES:,}",
            "attributes",
        )
    return merged


def _check_writer(by: object) -> None:
    if not isinstance(by, str) or not by:
        raise DomainError("invalid", f"by: must be a non-empty string, not {_type(by)}", "by")
    if len(by) > MAX_WRITER_CHARS:
        raise DomainError(
            "too_large", f"by: {len(by):,} characters, at most {MAX_WRITER_CHARS:,}", "by"
        )
    _check_text("by", by, free=False)


def _check_note(note: object) -> None:
    if not isinstance(note, str):
        raise DomainError("invalid", f"note: must be a string, not {_type(note)}", "note")
    if len(note) > MAX_NOTE_CHARS:
        raise DomainError(
            "too_large", f"note: {len(note):,} characters, at most {MAX_NOTE_CHARS:,}", "note"
        )
    _check_text("note", note, free=True)


def _check_disposition(disposition: object) -> None:
    if disposition is None:
        return
    if not isinstance(disposition, str):
        raise DomainError(
            "invalid",
            f"disposition: must be a string or null, not {_type(disposition)}",
            "disposition",
        )
    if len(disposition) > MAX_DISPOSITION_CHARS:
        raise DomainError(
            "too_large",
            f"disposition: {len(disposition):,} characters, at most {MAX_DISPOSITION_CHARS}",
            "disposition",
        )
    if not DISPOSITION.match(disposition):
        raise DomainError(
            "invalid",
            f"disposition: {_show(disposition)} is not 1 to {MAX_DISPOSITION_CHARS} letters, "
            "digits, spaces or _-./ (no leading or trailing space)",
            "disposition",
        )


def _check_tags(tags: object) -> None:
    if not isinstance(tags, list):
        raise DomainError("invalid", f"tags: must be a list, not {_type(tags)}", "tags")
    if len(tags) > MAX_TAGS:
        raise DomainError("too_large", f"tags: {len(tags):,} tags, at most {MAX_TAGS}", "tags")
    seen: set[str] = set()
    for tag in tags:
        if not isinstance(tag, str):
            raise DomainError("invalid", f"tags: must hold strings, not {_type(tag)}", "tags")
        if len(tag) > MAX_TAG_CHARS:
            raise DomainError(
                "too_large",
                f"tags: {_show(tag)} is {len(tag):,} characters, at most {MAX_TAG_CHARS}",
                "tags",
            )
        if not TAG.match(tag):
            raise DomainError(
                "invalid",
                f"tags: {_show(tag)} is not 1 to {MAX_TAG_CHARS} of A-Z a-z 0-9 _ -",
                "tags",
            )
        if tag in seen:
            raise DomainError("invalid", f"tags: {_show(tag)} appears twice", "tags")
        seen.add(tag)


def _check_attributes(attributes: object) -> None:
    if not isinstance(attributes, Mapping):
        raise DomainError(
            "invalid", f"attributes: must be an object, not {_type(attributes)}", "attributes"
        )
    for key, value in attributes.items():
        if not isinstance(key, str):
            raise DomainError(
                "invalid", f"attributes: keys must be strings, not {_type(key)}", "attributes"
            )
        if len(key) > MAX_ATTRIBUTE_KEY_CHARS:
            raise DomainError(
                "too_large",
                f"attributes: key {_show(key)} is {len(key):,} characters, "
                f"at most {MAX_ATTRIBUTE_KEY_CHARS}",
                "attributes",
            )
        if not ATTRIBUTE_KEY.match(key):
            raise DomainError(
                "invalid",
                f"attributes: key {_show(key)} must be a letter then letters, digits or _.-",
                "attributes",
            )
        field = f"attributes.{key}"
        if value is None:
            continue
        if not isinstance(value, str):
            raise DomainError(
                "invalid", f"{field}: must be a string or null, not {_type(value)}", field
            )
        if len(value) > MAX_ATTRIBUTE_VALUE_CHARS:
            raise DomainError(
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
        raise DomainError(
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
