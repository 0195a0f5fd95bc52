"""The one rule for control characters in outside text (cti.text)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cti.text import (
    ControlCharacterError,
    brief,
    refuse_control_characters,
    strip_control_characters,
)

CONTROLS = [chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a\x00b", "U+0000 NUL at character 2"),
        ("\x1b[2J", "U+001B ESC at character 1"),
        ("two\r\nlines", "U+000D CR at character 4"),
        ("tab\there", "U+0009 TAB at character 4"),
        ("csi \x9b31m", "U+009B at character 5"),
        ("next\x85line", "U+0085 at character 5"),
        ("del\x7f", "U+007F DEL at character 4"),
    ],
)
def test_a_control_character_is_refused_by_name_and_position(text: str, message: str) -> None:
    with pytest.raises(ControlCharacterError, match=re.escape(message)):
        refuse_control_characters(text)


@pytest.mark.parametrize(
    "text", ["", "Chloé Dupont", "O'Brien-Smith", "李小龍", "Ünïcødé ✓", "\xa0nbsp"]
)
def test_ordinary_text_passes_unchanged(text: str) -> None:
    assert refuse_control_characters(text) is text
    assert strip_control_characters(text) == text


@given(st.text(alphabet=st.sampled_from(CONTROLS) | st.characters(), max_size=50))
def test_refuse_and_strip_agree(text: str) -> None:
    stripped = strip_control_characters(text)
    assert not any(c in CONTROLS for c in stripped)
    try:
        assert refuse_control_characters(text) == text == stripped
    except ControlCharacterError as exc:
        assert text[exc.position - 1] == exc.character in CONTROLS
        assert not any(c in CONTROLS for c in text[: exc.position - 1])


def test_brief_names_an_integer_too_long_to_write() -> None:
    # A TOML plan can hold one; repr() of it raises ValueError past 4,300 digits.
    assert brief(10**5000) == "<an integer of about 5000 digits>"
    assert brief(12345) == "12345"
