"""Caller-number normalisation to E.164.

Asterisk hands us whatever the trunk sent: ``+12125550001``, ``2125550001``,
``0044 20 7946 0000``, ``011442079460000``, ``anonymous``, ``unknown`` or nothing.
libphonenumber (the ``phonenumbers`` port) knows every country's national and
international prefixes, so we lean on it rather than on our own tables. We only parse,
never validate: a number that parses is a number a customer may have given us.

One exception to "the region decides": ``00`` followed by a country code is read as an
international number whatever the region, because ``00`` is the international prefix of
most of the world and CRM exports and trunks write foreign numbers that way even where
the local prefix is ``011`` (US, Canada), ``010`` (Japan) or ``810`` (Russia). In
libphonenumber's metadata no region's fixed-line numbers start with ``00``, but a few
regions have numbers that do: freephone in Japan (``0037``, ``0066``, ``0077``, ``0088``),
Korea (``00308``, ``00368``, ``00798``), Indonesia (``001803``, ``007803``), India
(``000800``) and Uruguay (``0004``), and Tajik mobiles (``00`` + 7 digits). So when the
region reads the digits as a *valid* national number, that reading wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import CountryCodeSource

#: What trunks and Asterisk send when the caller withheld or has no number.
WITHHELD_MARKERS = frozenset(
    {"", "unknown", "anonymous", "private", "restricted", "withheld", "unavailable", "none"}
)
_PUNCTUATION = re.compile(r"[\s().\-/]")
_MAX_RAW_LENGTH = 64
_E164 = re.compile(r"^\+[1-9]\d{1,14}\Z")  # E.164: at most 15 digits
_INTERNATIONAL_00 = re.compile(r"^00[1-9]")  # country codes never start with 0


@dataclass(frozen=True, slots=True)
class CallerNumber:
    """A caller number as we understood it."""

    raw: str
    e164: str | None  # None when withheld or not a phone number at all

    @property
    def withheld(self) -> bool:
        return self.raw.strip().lower() in WITHHELD_MARKERS

    @property
    def known_format(self) -> bool:
        return self.e164 is not None


def normalize(raw: str | None, region: str = "US") -> CallerNumber:
    """Normalise ``raw`` to E.164 using ``region`` for national numbers."""
    stripped = (raw or "").strip()
    text = stripped[:_MAX_RAW_LENGTH]
    if text.lower() in WITHHELD_MARKERS:
        return CallerNumber(text, None)
    if len(stripped) > _MAX_RAW_LENGTH:  # never parse a truncated prefix as the number
        return CallerNumber(text, None)
    compact = _PUNCTUATION.sub("", text)
    if compact.startswith("tel:"):
        compact = compact[4:]
    if not compact.lstrip("+").isdigit():
        return CallerNumber(text, None)
    parsed = _parse(compact, region)
    if parsed is None:
        return CallerNumber(text, None)
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return CallerNumber(text, e164 if _E164.match(e164) else None)


def _parse(compact: str, region: str) -> phonenumbers.PhoneNumber | None:
    """The possible number ``compact`` denotes in ``region``, or None."""
    local = _possible(compact, region)
    if not _INTERNATIONAL_00.match(compact):
        return local
    international = _possible("+" + compact[2:], region)
    if international is None:
        return local
    if local is None or not phonenumbers.is_valid_number(local):
        return international
    # Both readings are numbers and the region's is valid. A national number of the
    # region (Japanese freephone 0066...) stays national. Where the region's own
    # international prefix is 00 plus a digit or a carrier code (Thailand 001, Brazil
    # 0012, Singapore 008...), 00 + country code wins if that is valid too.
    if local.country_code_source == CountryCodeSource.FROM_DEFAULT_COUNTRY:
        return local
    return international if phonenumbers.is_valid_number(international) else local


def _possible(digits: str, region: str) -> phonenumbers.PhoneNumber | None:
    try:
        parsed = phonenumbers.parse(digits, region, keep_raw_input=True)
    except phonenumbers.NumberParseException:
        return None
    return parsed if phonenumbers.is_possible_number(parsed) else None


def normalize_dnis(raw: str | None) -> str:
    """The lookup key of a dialled number: its digits (and a leading ``+``)."""
    text = _PUNCTUATION.sub("", (raw or "").strip())[:_MAX_RAW_LENGTH]
    if text.startswith("+") and text[1:].isdigit():
        return text
    return text if text.isdigit() else ""
