#!/usr/bin/env python3
"""Which regions' numbers start with 00, per libphonenumber's metadata.

cti.routing.phone reads ``00`` + country code as international whatever the region,
unless the region reads the digits as a valid national number of its own. This tool
checks the premise against the installed ``phonenumbers`` metadata, so it can be
re-run when that package is upgraded: it lists the regions whose international prefix
is not plain ``00`` and, per number type, every region whose national number pattern
admits a number starting with ``00`` (an exhaustive search with the ``regex`` module's
partial matching, which is why it is a tool and not a test: ``regex`` is not a
dependency of cti). tests/unit/test_phone.py NATIONAL_00_REGIONS holds the result.

Usage::

    .venv/bin/pip install regex
    .venv/bin/python tools/phone_00_audit.py
"""

from __future__ import annotations

import re

import phonenumbers
import regex  # type: ignore[import-not-found]
from phonenumbers import PhoneMetadata

TYPES = (
    "fixed_line", "mobile", "toll_free", "premium_rate", "shared_cost", "personal_number",
    "voip", "pager", "uan", "voicemail", "no_international_dialling",
)  # fmt: skip


def first_match(pattern: str, prefix: str, max_length: int = 17) -> str | None:
    """The first digit string starting with ``prefix`` that ``pattern`` matches whole."""
    compiled = regex.compile(f"(?:{pattern})")
    stack = [prefix]
    while stack:
        digits = stack.pop()
        if compiled.fullmatch(digits):
            return digits
        if len(digits) < max_length:
            stack += [
                d for d in (digits + c for c in "9876543210")
                if compiled.fullmatch(d, partial=True)
            ]  # fmt: skip
    return None


def main() -> None:
    regions = sorted(phonenumbers.SUPPORTED_REGIONS)
    print(f"phonenumbers {phonenumbers.__version__}: {len(regions)} regions")
    other = [
        (r, PhoneMetadata.metadata_for_region(r).international_prefix)
        for r in regions
        if not re.fullmatch(PhoneMetadata.metadata_for_region(r).international_prefix, "00")
    ]
    print(f"\ninternational prefix is not plain 00 in {len(other)} regions:")
    for region, prefix in other:
        print(f"  {region}  {prefix}")
    print("\nnational numbers that start with 00 (region, type, example):")
    for region in regions:
        metadata = PhoneMetadata.metadata_for_region(region)
        for kind in TYPES:
            desc = getattr(metadata, kind, None)
            if desc is not None and desc.national_number_pattern:
                example = first_match(desc.national_number_pattern, "00")
                if example:
                    print(f"  {region}  {kind:<26} {example}")


if __name__ == "__main__":
    main()
