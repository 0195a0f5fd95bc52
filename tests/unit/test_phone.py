"""Caller-number normalisation (cti.routing.phone): tables of what trunks send, and
properties that must hold for any input."""

from __future__ import annotations

import re

import phonenumbers
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cti.routing.phone import WITHHELD_MARKERS, normalize, normalize_dnis

E164 = re.compile(r"^\+[1-9]\d{1,14}$")


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        pytest.param("+12125550001", "US", "+12125550001", id="us-e164-passthrough"),
        pytest.param("+442079460000", "US", "+442079460000", id="gb-e164-from-us-region"),
        pytest.param("+442079460000", "GB", "+442079460000", id="gb-e164-passthrough"),
        pytest.param("+12125550001", "GB", "+12125550001", id="us-e164-from-gb-region"),
        pytest.param("2125550001", "US", "+12125550001", id="us-national-10-digit"),
        pytest.param("12125550001", "US", "+12125550001", id="us-leading-1"),
        pytest.param("011442079460000", "US", "+442079460000", id="us-intl-prefix-011"),
        pytest.param("00442079460000", "GB", "+442079460000", id="gb-intl-prefix-00"),
        pytest.param("0044 20 7946 0000", "GB", "+442079460000", id="gb-intl-prefix-00-spaced"),
        pytest.param("00 1 212 555 0001", "GB", "+12125550001", id="gb-calls-us-via-00"),
        pytest.param("02079460000", "GB", "+442079460000", id="gb-national-with-0"),
        pytest.param("020 7946 0000", "GB", "+442079460000", id="gb-national-spaced"),
        pytest.param("(212) 555-0001", "US", "+12125550001", id="us-punctuation"),
        pytest.param("1.212.555.0001", "US", "+12125550001", id="us-dots"),
        pytest.param("212/555-0001", "US", "+12125550001", id="us-slash"),
        pytest.param("+1 (212) 555-0001", "US", "+12125550001", id="us-plus-punctuation"),
        pytest.param("  +12125550001\t", "US", "+12125550001", id="surrounding-whitespace"),
        pytest.param("tel:+12125550001", "US", "+12125550001", id="tel-uri-e164"),
        pytest.param("tel:2125550001", "US", "+12125550001", id="tel-uri-national"),
        pytest.param("tel:+44-20-7946-0000", "US", "+442079460000", id="tel-uri-dashes"),
    ],
)
def test_normalize_to_e164(raw: str, region: str, e164: str) -> None:
    number = normalize(raw, region)
    assert number.e164 == e164
    assert number.known_format
    assert not number.withheld


def test_region_decides_national_numbers() -> None:
    """The same national digits mean different numbers in different regions."""
    assert normalize("2079460000", "US").e164 == "+12079460000"
    assert normalize("02079460000", "GB").e164 == "+442079460000"


def test_default_region_is_us() -> None:
    assert normalize("2125550001").e164 == "+12125550001"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("unknown", id="unknown"),
        pytest.param("anonymous", id="anonymous"),
        pytest.param("Anonymous", id="Anonymous"),
        pytest.param("ANONYMOUS", id="ANONYMOUS"),
        pytest.param("private", id="private"),
        pytest.param("restricted", id="restricted"),
        pytest.param("withheld", id="withheld"),
        pytest.param("unavailable", id="unavailable"),
        pytest.param(" unknown ", id="padded-unknown"),
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param(None, id="None"),
    ],
)
@pytest.mark.parametrize("region", ["US", "GB"])
def test_withheld_markers(raw: str | None, region: str) -> None:
    number = normalize(raw, region)
    assert number.e164 is None
    assert number.withheld
    assert not number.known_format


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("sipp", id="sipp"),
        pytest.param("abc", id="letters"),
        pytest.param("212555000l", id="digit-with-letter-l"),
        pytest.param("+1-212-555-0001;ext=5", id="extension-suffix"),
        pytest.param("sip:+12125550001@example.com", id="sip-uri"),
        pytest.param("+", id="plus-only"),
        pytest.param("0", id="single-zero"),
        pytest.param("911", id="short-code"),
        pytest.param("+0123456789", id="country-code-zero"),
        pytest.param("555", id="too-short"),
        pytest.param("tel:", id="empty-tel-uri"),
        pytest.param("unknown caller", id="not-exactly-a-marker"),
    ],
)
@pytest.mark.parametrize("region", ["US", "GB"])
def test_garbage_is_not_a_number_and_not_withheld(raw: str, region: str) -> None:
    number = normalize(raw, region)
    assert number.e164 is None
    assert not number.withheld
    assert number.raw == raw.strip()


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("1" * 100, id="100-digits"),
        pytest.param("+1" + "2" * 80, id="plus-and-80-digits"),
        pytest.param("x" * 10_000, id="10k-letters"),
        # A valid number followed, after a run of spaces, by more digits. Parsing the
        # first 64 characters would turn 2125550001...9 into the valid +12125550001.
        pytest.param("2125550001" + " " * 60 + "9", id="truncation-would-give-us-number"),
        pytest.param("+44 20 7946 000" + " " * 60 + "0", id="truncation-would-give-gb-number"),
    ],
)
def test_over_long_input_is_not_a_number(raw: str) -> None:
    number = normalize(raw, "GB" if raw.startswith("+44") else "US")
    assert number.e164 is None
    assert not number.withheld
    assert len(number.raw) <= 64


def test_more_than_15_digits_is_not_e164() -> None:
    """libphonenumber calls 15-digit German national numbers possible; E.164 allows 15."""
    assert normalize("+4913608377835337", "US").e164 is None
    assert normalize("00 49 13608377835337", "GB").e164 is None


# --- properties ----------------------------------------------------------------------------


def _example_numbers() -> list[str]:
    """libphonenumber's example number of every type for every region, as E.164."""
    numbers = set()
    for region in phonenumbers.SUPPORTED_REGIONS:
        for kind in range(11):  # PhoneNumberType.FIXED_LINE .. UAN
            sample = phonenumbers.example_number_for_type(region, kind)
            if sample is not None:
                numbers.add(phonenumbers.format_number(sample, phonenumbers.PhoneNumberFormat.E164))
    return sorted(numbers)


_EXAMPLE_NUMBERS = _example_numbers()

_nanp_e164 = st.builds(
    lambda area, exchange, line: f"+1{area}{exchange}{line:04d}",
    st.integers(200, 999),
    st.integers(200, 999),
    st.integers(0, 9999),
)


def test_there_are_many_example_numbers() -> None:
    assert len(_EXAMPLE_NUMBERS) > 500


@given(st.sampled_from(_EXAMPLE_NUMBERS) | _nanp_e164, st.sampled_from(["US", "GB"]))
def test_normalize_is_idempotent_on_valid_numbers(e164: str, region: str) -> None:
    assert normalize(e164, region).e164 == e164
    assert normalize(normalize(e164, region).e164, region).e164 == e164


@given(_nanp_e164)
def test_nanp_national_formats_normalise_to_the_same_number(e164: str) -> None:
    digits = e164[2:]
    pretty = f"({digits[:3]}) {digits[3:6]}-{digits[6:]}"
    for raw in (digits, "1" + digits, pretty, "tel:" + e164, "011" + e164[1:]):
        assert normalize(raw, "US").e164 == e164


@given(st.sampled_from(_EXAMPLE_NUMBERS))
def test_gb_international_prefix_reaches_every_country(e164: str) -> None:
    assert normalize("00" + e164[1:], "GB").e164 == e164


@given(st.one_of(st.none(), st.text(), st.text(alphabet="+0123456789 ()-.tel:"), _nanp_e164))
@example("tel:tel:+1212")
@example("++12125550001")
@example("٢١٢٥٥٥٠٠٠١")  # Arabic-Indic digits
@example("+4913608377835337")  # 16 digits: possible in libphonenumber, not E.164
@example("2125550001" + " " * 60 + "9")  # over-long
def test_normalize_never_raises_and_returns_e164_or_none(raw: str | None) -> None:
    for region in ("US", "GB"):
        number = normalize(raw, region)
        assert number.e164 is None or E164.match(number.e164)
        assert len(number.raw) <= 64
        if number.withheld:
            assert number.e164 is None


@given(
    st.sampled_from(["", "+", "0", "00", "011", "1", "44"]),
    st.text(alphabet="0123456789", min_size=1, max_size=20),
    st.sampled_from(["US", "GB", "DE", "IT", "AU"]),
)
def test_digit_strings_give_e164_or_none(prefix: str, digits: str, region: str) -> None:
    e164 = normalize(prefix + digits, region).e164
    assert e164 is None or E164.match(e164)


@given(st.sampled_from(sorted(WITHHELD_MARKERS)), st.sampled_from(["US", "GB"]))
def test_every_withheld_marker_in_any_case_is_withheld(marker: str, region: str) -> None:
    for raw in (marker, marker.upper(), marker.title()):
        number = normalize(raw, region)
        assert number.withheld
        assert number.e164 is None


# --- dialled numbers -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        pytest.param("5550100", "5550100", id="digits"),
        pytest.param("+15550100", "+15550100", id="plus-kept"),
        pytest.param(" 555-0100 ", "5550100", id="punctuation-and-space"),
        pytest.param("(555) 0100", "5550100", id="parentheses"),
        pytest.param("", "", id="empty"),
        pytest.param(None, "", id="None"),
        pytest.param("+", "", id="plus-only"),
        pytest.param("s", "", id="asterisk-s-extension"),
        pytest.param("555*0100", "", id="star"),
        pytest.param("1+5550100", "", id="plus-inside"),
        pytest.param("++5550100", "", id="double-plus"),
    ],
)
def test_normalize_dnis(raw: str | None, key: str) -> None:
    assert normalize_dnis(raw) == key


@given(st.one_of(st.none(), st.text()))
def test_normalize_dnis_is_a_digit_key_or_empty(raw: str | None) -> None:
    key = normalize_dnis(raw)
    assert key == "" or key.lstrip("+").isdigit()
    assert key.count("+") <= 1 and "+" not in key[1:]
    assert normalize_dnis(key) == key


# --- the 00 international prefix, whatever the region --------------------------------------


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        pytest.param("0012125550022", "US", "+12125550022", id="us-00-to-us"),
        pytest.param("00 1 212 555 0022", "US", "+12125550022", id="us-00-spaced"),
        pytest.param("0044 20 7946 0000", "US", "+442079460000", id="us-00-to-gb"),
        pytest.param("0033.1.23.45.67.89", "US", "+33123456789", id="us-00-dotted-to-fr"),
        pytest.param("(0049) 30 1234567", "CA", "+49301234567", id="ca-00-to-de"),
        pytest.param("00442079460000", "JP", "+442079460000", id="jp-00-to-gb"),
        pytest.param("0012125550022", "RU", "+12125550022", id="ru-00-to-us"),
        pytest.param("00442079460000", "AU", "+442079460000", id="au-00-to-gb"),
        # Brazil's international prefix is 00 + a carrier code: 0012... would be carrier 12.
        pytest.param("0012125550022", "BR", "+12125550022", id="br-00-to-us"),
        pytest.param("0015 44 20 7946 0000", "BR", "+442079460000", id="br-carrier-15-kept"),
        # Thailand dials out with 001-009: 00 1 201... is the US, 001 44... still the UK.
        pytest.param("0012015550123", "TH", "+12015550123", id="th-00-to-us"),
        pytest.param("001 44 20 7946 0000", "TH", "+442079460000", id="th-idd-001-kept"),
        pytest.param("tel:0012125550022", "US", "+12125550022", id="tel-uri-00"),
        pytest.param("011442079460000", "US", "+442079460000", id="us-011-still"),
    ],
)
def test_00_prefix_is_international_whatever_the_region(raw: str, region: str, e164: str) -> None:
    assert normalize(raw, region).e164 == e164


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        # Japanese freephone: a valid Japanese number, not Thailand (+66) or Lithuania (+370).
        pytest.param("0066 12 345678", "JP", "+81006612345678", id="jp-freephone-0066"),
        pytest.param("0037 123456", "JP", "+810037123456", id="jp-freephone-0037"),
        # Tajik mobiles may start with 00; 00 + 1234567 would be too short for +1 anyway.
        pytest.param("001234567", "TJ", "+992001234567", id="tj-mobile-00"),
    ],
)
def test_a_valid_national_number_that_starts_with_00_stays_national(
    raw: str, region: str, e164: str
) -> None:
    assert normalize(raw, region).e164 == e164


@pytest.mark.parametrize("raw", ["00", "000", "0000 1234 5678", "00 28 1234"])
def test_00_without_a_country_code_is_not_made_international(raw: str) -> None:
    e164 = normalize(raw, "GB").e164
    assert e164 is None or e164.startswith("+44")


#: Regions where libphonenumber (9.0.x) has valid national numbers starting with 00:
#: freephone in ID, IN, JP, KR, UY and Tajik mobiles. Everywhere else, and in these
#: regions when the digits are no valid national number, 00 + country code is international.
NATIONAL_00_REGIONS = frozenset({"ID", "IN", "JP", "KR", "TJ", "UY"})


@given(
    st.sampled_from(_EXAMPLE_NUMBERS),
    st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS)),
)
def test_00_reaches_every_country_from_every_region(e164: str, region: str) -> None:
    got = normalize("00" + e164[1:], region).e164
    if got != e164:
        assert region in NATIONAL_00_REGIONS
        calling_code = phonenumbers.country_code_for_region(region)
        assert got is not None and got.startswith(f"+{calling_code}")
