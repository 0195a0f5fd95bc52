"""Text from outside (CSV files, AGI variables, IVR input, HTTP bodies) that we store,
log or print.

Control characters have no place in a name, an account number or a phone number, and
each of them is a way in: NUL is refused by PostgreSQL's ``text`` (one NUL used to fail a
whole import), CR and LF forge log lines and split CSV rows, ESC (C0) and CSI (C1,
U+009B) start terminal escape sequences that run on the operator's screen when
``cti route`` prints a customer's name. The rule lives here, once: C0 (U+0000-U+001F),
DEL (U+007F) and C1 (U+0080-U+009F). Callers choose to refuse or to strip.
"""

from __future__ import annotations

import re
import reprlib
import unicodedata

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_NAMES = {"\x00": "NUL", "\t": "TAB", "\n": "LF", "\r": "CR", "\x1b": "ESC", "\x7f": "DEL"}


class ControlCharacterError(ValueError):
    """The text holds a control character; the message says which and where."""

    def __init__(self, character: str, position: int) -> None:
        self.character = character
        self.position = position  # 1-based, in characters
        name = _NAMES.get(character) or unicodedata.name(character, "")
        code = f"U+{ord(character):04X}"
        super().__init__(
            f"control character {code}{' ' + name if name else ''} at character {position}"
        )


def refuse_control_characters(text: str) -> str:
    """``text`` unchanged, or :class:`ControlCharacterError` naming the first control
    character and its position."""
    found = _CONTROL.search(text)
    if found is not None:
        raise ControlCharacterError(found.group(), found.start() + 1)
    return text


def strip_control_characters(text: str) -> str:
    """``text`` without its control characters: for output, where refusing is too late."""
    return _CONTROL.sub("", text)


class _Brief(reprlib.Repr):
    def repr_int(self, x: int, level: int) -> str:
        # Python refuses to write an int of more than 4,300 digits (a guard against
        # quadratic conversion), and reprlib would pass that ValueError on: a TOML
        # document can hold such a number.
        if x.bit_length() > 4_000:
            return f"<an integer of about {int(x.bit_length() * 0.30103)} digits>"
        return super().repr_int(x, level)


_BRIEF = _Brief()
_BRIEF.maxstring = 80
_BRIEF.maxother = 80
_BRIEF.maxlevel = 3


def brief(value: object) -> str:
    """``repr(value)`` cut short, for an error message that quotes input back: a
    megabyte-long name or an array nested a thousand deep must neither flood the
    operator's terminal nor exhaust the stack while the message is being written."""
    return _BRIEF.repr(value)
