"""The edit rules of call data: what is accepted, what is refused and with which message."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from cti.calldata.document import (
    MAX_DOCUMENT_BYTES,
    StaleVersion,
    apply_change,
    check_change,
    check_size,
    serialize,
)
from cti.errors import DomainError

NOW = datetime(2025, 3, 4, 10, 30, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
CALL_ID = "0b7c3c1e-8a8e-4c55-9d2a-1f0e6a3b5c7d"


def doc(**extra: object) -> dict[str, object]:
    """A document shaped like the route's (cti.router.call_document)."""
    return {
        "call_id": CALL_ID,
        "version": 1,
        "created_at": NOW.isoformat(),
        "customer": {"id": 7, "name": "Ada Lovelace"},
        "routing": {"queue": "support"},
        "ivr": {"intent": "order"},
        "notes": [],
        "disposition": None,
        "tags": [],
        "attributes": {},
        **extra,
    }


def refused(change: object, by: object = "agent/2001", document: dict | None = None):
    with pytest.raises(DomainError) as caught:
        apply_change(document or doc(), change, by, NOW)  # type: ignore[arg-type]
    return caught.value


# -- accepted edits ------------------------------------------------------------------


def test_an_edit_makes_a_new_version_and_leaves_the_input_alone():
    before = doc(tags=["vip"], notes=[{"by": "x", "text": "t", "at": "a"}])
    snapshot = copy.deepcopy(before)
    after = apply_change(before, {"note": "called back", "tags": ["late"]}, "agent/2001", NOW)
    assert before == snapshot
    assert after is not before
    assert after["version"] == 2
    assert after["updated_at"] == "2025-03-04T10:30:00+00:00"
    assert after["updated_by"] == "agent/2001"
    assert after["tags"] == ["late"]
    # nested objects are not shared: changing the new one leaves the old one alone
    after["customer"]["name"] = "changed"
    after["notes"][0]["text"] = "changed"
    assert before == snapshot


def test_route_fields_are_kept():
    after = apply_change(doc(), {"disposition": "sale"}, "agent/2001", NOW)
    for key in ("call_id", "created_at", "customer", "routing", "ivr"):
        assert after[key] == doc()[key]


def test_now_is_stored_in_utc():
    paris = timezone(timedelta(hours=1))
    after = apply_change(doc(), {"note": "x"}, "a", datetime(2025, 3, 4, 11, 30, tzinfo=paris))
    assert after["notes"][0]["at"] == after["updated_at"] == "2025-03-04T10:30:00+00:00"


def test_a_naive_now_is_a_programming_error():
    with pytest.raises(ValueError):
        apply_change(doc(), {"note": "x"}, "a", datetime(2025, 3, 4, 10, 30))


def test_one_note_per_writer_replaced_in_place_and_removed_when_empty():
    v2 = apply_change(doc(), {"note": "first"}, "alice", NOW)
    v3 = apply_change(v2, {"note": "bob's"}, "bob", NOW)
    v4 = apply_change(v3, {"note": "second"}, "alice", LATER)
    assert v4["notes"] == [
        {"by": "alice", "text": "second", "at": LATER.isoformat()},
        {"by": "bob", "text": "bob's", "at": NOW.isoformat()},
    ]
    v5 = apply_change(v4, {"note": ""}, "alice", LATER)
    assert v5["notes"] == [{"by": "bob", "text": "bob's", "at": NOW.isoformat()}]
    v6 = apply_change(v5, {"note": ""}, "carol", LATER)  # nothing to remove: still a version
    assert (v6["version"], v6["notes"]) == (6, v5["notes"])


def test_a_note_may_hold_newlines_tabs_and_any_language():
    text = "ligne 1\n\tligne 2 — 電話 🙂"
    assert apply_change(doc(), {"note": text}, "a", NOW)["notes"][0]["text"] == text


def test_a_note_of_exactly_the_limit_is_accepted():
    assert len(apply_change(doc(), {"note": "x" * 4_000}, "a", NOW)["notes"][0]["text"]) == 4_000


@pytest.mark.parametrize("value", ["sale", "No answer", "callback/2d", "a", "x" * 64, "a.b_c-d"])
def test_dispositions_accepted(value):
    assert apply_change(doc(), {"disposition": value}, "a", NOW)["disposition"] == value


def test_disposition_null_clears():
    assert (
        apply_change(doc(disposition="sale"), {"disposition": None}, "a", NOW)["disposition"]
        is None
    )


def test_tags_replace_the_list():
    tags = [f"t{i}" for i in range(20)]
    v2 = apply_change(doc(tags=["old"]), {"tags": tags}, "a", NOW)
    assert v2["tags"] == tags
    assert apply_change(v2, {"tags": []}, "a", NOW)["tags"] == []


def test_tag_of_32_characters_is_accepted():
    assert apply_change(doc(), {"tags": ["A_-9" * 8]}, "a", NOW)["tags"] == ["A_-9" * 8]


def test_attributes_merge_and_null_deletes():
    v2 = apply_change(doc(), {"attributes": {"order": "A-17", "crm.case": "55"}}, "a", NOW)
    assert v2["attributes"] == {"order": "A-17", "crm.case": "55"}
    v3 = apply_change(
        v2, {"attributes": {"order": None, "promo": "spring", "gone": None}}, "a", NOW
    )
    assert v3["attributes"] == {"crm.case": "55", "promo": "spring"}
    assert v2["attributes"] == {"order": "A-17", "crm.case": "55"}


def test_attributes_are_created_when_the_document_has_none():
    old = doc()
    del old["attributes"]
    assert apply_change(old, {"attributes": {"k": "v"}}, "a", NOW)["attributes"] == {"k": "v"}


def test_attributes_at_the_limits_are_accepted():
    full = {f"k{i}": "v" for i in range(49)}
    change = {"attributes": {"K" * 64: "x" * 1_024}}
    assert len(apply_change(doc(attributes=full), change, "a", NOW)["attributes"]) == 50


def test_deleting_makes_room_in_the_same_change():
    full = {f"k{i}": "v" for i in range(50)}
    after = apply_change(doc(attributes=full), {"attributes": {"k0": None, "new": "v"}}, "a", NOW)
    assert len(after["attributes"]) == 50 and "new" in after["attributes"]


def test_several_fields_in_one_change():
    change = {"note": "n", "disposition": "sale", "tags": ["a"], "attributes": {"x": "1"}}
    after = apply_change(doc(), change, "a", NOW)
    assert (after["disposition"], after["tags"], after["attributes"]) == ("sale", ["a"], {"x": "1"})


# -- refusals ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "code", "field", "message"),
    [
        pytest.param(
            {"note": "x" * 4_215}, "too_large", "note", "note: 4,215 characters, at most 4,000",
            id="note-too-long",
        ),
        pytest.param(
            {"note": 5}, "invalid", "note", "note: must be a string, not number", id="note-number"
        ),
        pytest.param(
            {"note": True}, "invalid", "note", "note: must be a string, not boolean",
            id="note-bool",
        ),
        pytest.param(
            {"note": None}, "invalid", "note", "note: must be a string, not null", id="note-null"
        ),
        pytest.param(
            {"note": "a\x00b"}, "invalid", "note",
            "note: control character U+0000 at position 1", id="note-nul",
        ),
        pytest.param(
            {"note": "a\r\nb"}, "invalid", "note",
            "note: control character U+000D at position 1", id="note-cr",
        ),
        pytest.param(
            {"note": "\x1b[31m"}, "invalid", "note",
            "note: control character U+001B at position 0", id="note-escape",
        ),
        pytest.param(
            {"note": "ok \ud800"}, "invalid", "note", "note: lone surrogate U+D800 at position 3",
            id="note-surrogate",
        ),
        pytest.param(
            {"disposition": "x" * 65}, "too_large", "disposition",
            "disposition: 65 characters, at most 64", id="disposition-too-long",
        ),
        pytest.param(
            {"disposition": ""}, "invalid", "disposition",
            "disposition: '' is not 1 to 64 letters, digits, spaces or _-./ "
            "(no leading or trailing space)",
            id="disposition-empty",
        ),
        pytest.param(
            {"disposition": " sale"}, "invalid", "disposition", None, id="disposition-leading"
        ),
        pytest.param(
            {"disposition": "sale "}, "invalid", "disposition", None, id="disposition-trailing"
        ),
        pytest.param(
            {"disposition": "sale\n"}, "invalid", "disposition", None, id="disposition-newline"
        ),
        pytest.param(
            {"disposition": "vente réussie"}, "invalid", "disposition", None,
            id="disposition-accent",
        ),
        pytest.param(
            {"disposition": "a;b"}, "invalid", "disposition", None, id="disposition-semicolon"
        ),
        pytest.param(
            {"disposition": False}, "invalid", "disposition",
            "disposition: must be a string or null, not boolean", id="disposition-bool",
        ),
        pytest.param(
            {"tags": "vip"}, "invalid", "tags", "tags: must be a list, not string",
            id="tags-string",
        ),
        pytest.param(
            {"tags": None}, "invalid", "tags", "tags: must be a list, not null", id="tags-null"
        ),
        pytest.param(
            {"tags": [f"t{i}" for i in range(21)]}, "too_large", "tags",
            "tags: 21 tags, at most 20", id="tags-too-many",
        ),
        pytest.param(
            {"tags": ["x" * 33]}, "too_large", "tags", None, id="tag-too-long"
        ),
        pytest.param(
            {"tags": [""]}, "invalid", "tags", "tags: '' is not 1 to 32 of A-Z a-z 0-9 _ -",
            id="tag-empty",
        ),
        pytest.param({"tags": ["a b"]}, "invalid", "tags", None, id="tag-space"),
        pytest.param({"tags": ["a.b"]}, "invalid", "tags", None, id="tag-dot"),
        pytest.param({"tags": ["ok\n"]}, "invalid", "tags", None, id="tag-newline"),
        pytest.param(
            {"tags": ["a", "b", "a"]}, "invalid", "tags", "tags: 'a' appears twice",
            id="tag-twice",
        ),
        pytest.param(
            {"tags": [1]}, "invalid", "tags", "tags: must hold strings, not number",
            id="tag-number",
        ),
        pytest.param(
            {"attributes": ["a"]}, "invalid", "attributes",
            "attributes: must be an object, not list", id="attributes-list",
        ),
        pytest.param(
            {"attributes": {"k": 1}}, "invalid", "attributes.k",
            "attributes.k: must be a string or null, not number", id="attribute-number",
        ),
        pytest.param(
            {"attributes": {"k": True}}, "invalid", "attributes.k", None, id="attribute-bool"
        ),
        pytest.param(
            {"attributes": {"k": {"nested": "x"}}}, "invalid", "attributes.k",
            "attributes.k: must be a string or null, not object", id="attribute-object",
        ),
        pytest.param(
            {"attributes": {"k": "x" * 1_025}}, "too_large", "attributes.k",
            "attributes.k: 1,025 characters, at most 1,024", id="attribute-too-long",
        ),
        pytest.param(
            {"attributes": {"k": "a\x00"}}, "invalid", "attributes.k",
            "attributes.k: control character U+0000 at position 1", id="attribute-nul",
        ),
        pytest.param(
            {"attributes": {"1st": "x"}}, "invalid", "attributes",
            "attributes: key '1st' must be a letter then letters, digits or _.-",
            id="key-digit-first",
        ),
        pytest.param({"attributes": {"": "x"}}, "invalid", "attributes", None, id="key-empty"),
        pytest.param({"attributes": {"a b": "x"}}, "invalid", "attributes", None, id="key-space"),
        pytest.param({"attributes": {"a\n": "x"}}, "invalid", "attributes", None, id="key-nl"),
        pytest.param(
            {"attributes": {"k" * 65: "x"}}, "too_large", "attributes", None, id="key-too-long"
        ),
        pytest.param(
            {"attributes": {1: "x"}}, "invalid", "attributes",
            "attributes: keys must be strings, not number", id="key-number",
        ),
        pytest.param(
            {"version": 3}, "invalid", "version",
            "'version': unknown field; allowed: attributes, disposition, note, tags",
            id="unknown-field",
        ),
        pytest.param(
            {"note": "ok", "customer": {}}, "invalid", "customer", None, id="unknown-with-known"
        ),
        pytest.param(
            {}, "invalid", None,
            "change: empty; give at least one of attributes, disposition, note, tags",
            id="empty",
        ),
        pytest.param(
            ["note"], "invalid", None, "change: must be an object, not list", id="not-an-object"
        ),
        pytest.param(None, "invalid", None, "change: must be an object, not null", id="null"),
    ],
)  # fmt: skip
def test_refused(change, code, field, message):
    error = refused(change)
    assert (error.code, error.field) == (code, field)
    if message is not None:
        assert error.message == message
        assert str(error) == message
    assert error.as_json() == {"error": code, "message": error.message, "field": field}


def test_too_many_attributes_after_the_merge():
    full = {f"k{i}": "v" for i in range(50)}
    error = refused({"attributes": {"one_more": "v"}}, document=doc(attributes=full))
    assert (error.code, error.field) == ("too_large", "attributes")
    assert error.message == "attributes: 51 keys after this change, at most 50"
    # replacing an existing key is fine
    assert apply_change(doc(attributes=full), {"attributes": {"k1": "w"}}, "a", NOW)


@pytest.mark.parametrize(
    ("by", "code", "message"),
    [
        ("", "invalid", "by: must be a non-empty string, not string"),
        (None, "invalid", "by: must be a non-empty string, not null"),
        (7, "invalid", "by: must be a non-empty string, not number"),
        ("x" * 129, "too_large", "by: 129 characters, at most 128"),
        ("agent\n2001", "invalid", "by: control character U+000A at position 5"),
        ("agent\t2001", "invalid", "by: control character U+0009 at position 5"),
    ],
)
def test_writer_refused(by, code, message):
    error = refused({"note": "x"}, by=by)
    assert (error.code, error.field, error.message) == (code, "by", message)


def test_writer_of_128_characters_is_accepted():
    assert apply_change(doc(), {"note": "x"}, "w" * 128, NOW)["updated_by"] == "w" * 128


def test_check_change_needs_no_document():
    check_change({"note": "x", "attributes": {"k": None}}, "a")
    with pytest.raises(DomainError):
        check_change({"nope": 1}, "a")


# -- the whole document's size --------------------------------------------------------


def _padded_to(size: int) -> dict[str, object]:
    """A document whose serialised form is exactly ``size`` bytes."""
    document = doc(ivr={"pad": ""})
    missing = size - len(serialize(document))
    document["ivr"] = {"pad": "é" * (missing // 2) + "x" * (missing % 2)}  # 2 bytes each
    assert len(serialize(document)) == size
    return document


def test_size_limit_at_the_boundary():
    assert MAX_DOCUMENT_BYTES == 32_768
    raw = check_size(_padded_to(32_768))
    assert len(raw) == 32_768 and json.loads(raw)["call_id"] == CALL_ID
    with pytest.raises(DomainError) as caught:
        check_size(_padded_to(32_769))
    error = caught.value
    assert (error.code, error.field) == ("too_large", None)
    assert error.message == "document: 32,769 bytes, at most 32,768"


def test_size_counts_utf8_bytes_not_characters():
    document = doc(ivr={"pad": "€" * 11_000})  # 11,000 characters, 33,000 bytes
    with pytest.raises(DomainError, match="at most 32,768"):
        check_size(document)


def test_an_edit_that_grows_the_document_past_the_limit_is_refused():
    document = _padded_to(32_768 - 200)
    after = apply_change(document, {"note": "x" * 3_000}, "a", NOW)
    with pytest.raises(DomainError) as caught:
        check_size(after)
    assert caught.value.code == "too_large"


def test_serialised_form_is_compact_utf8():
    assert serialize({"a": "é", "b": [1]}) == '{"a":"é","b":[1]}'.encode()


# -- stale versions -------------------------------------------------------------------


def test_stale_version_carries_the_current_document():
    current = doc(version=5)
    error = StaleVersion(3, current)
    assert isinstance(error, DomainError)
    assert (error.code, error.field, error.current_version) == ("stale_version", "version", 5)
    assert error.current == current
    assert error.message == "version: 3 was sent but the call data is at version 5"
