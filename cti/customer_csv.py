"""A CRM's CSV export of customers, read and checked row by row (no I/O, no database).

What a first import meets in the wild: aliases for the column names, numbers written in
every national and international style, rows cut short, bytes that are not UTF-8,
control characters in names. Each row is judged on its own and a refusal names its
line, its column and why, so an operator can fix the file; only an unusable header
refuses the file as a whole.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from cti.routing.model import ACCOUNT_NUMBER, STATUSES, TIERS
from cti.routing.phone import normalize
from cti.text import ControlCharacterError, refuse_control_characters

#: The columns a CRM export may have, what each means, and the other names it may go by.
#: ``--help`` and the README are written from this table. Names are compared in lower
#: case with spaces and dashes read as ``_``.
COLUMNS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("account_number", "required: letters, digits and -, 1 to 32", ("account", "account_no")),
    ("name", "required: 1 to 200 characters", ("customer_name",)),
    ("tier", f"required: {', '.join(TIERS)} (any case)", ("value_tier",)),
    ("status", f"{', '.join(STATUSES)}; default active", ("account_status",)),
    ("language", "a 2- or 3-letter code such as en; default en", ("preferred_language", "lang")),
    ("phones", "several numbers separated by ; or |", ()),
)
PHONE_COLUMN_PREFIXES = ("phone", "mobile")
_ALIASES = {alias: column for column, _, aliases in COLUMNS for alias in aliases}
_KNOWN = {column for column, _, _ in COLUMNS}
REQUIRED_COLUMNS = ("account_number", "name", "tier")
_LANGUAGE = re.compile(r"^[a-z]{2,3}\Z")
_PHONE_SPLIT = re.compile(r"[;|]")
_UNDECODABLE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8 (surrogateescape)
MAX_NAME = 200
MAX_FIELD = 1024
MAX_PHONES = 20
#: csv's own limit, far above any column's: over it the row is refused without a column.
MAX_CSV_FIELD = 64 * 1024


def columns_help() -> str:
    """The import's columns as ``--help`` and the README show them."""
    lines = ["columns (a header row is required; other columns are ignored):"]
    for column, meaning, aliases in COLUMNS:
        lines.append(f"  {column:<16} {meaning}")
        if aliases:
            lines.append(f"  {'':<16} also named: {', '.join(aliases)}")
    lines += [
        f"  {'phone*, mobile*':<16} any column whose name starts with phone or mobile:",
        f"  {'':<16} one or more numbers, as for phones",
        "numbers: +E.164, 00 + country code, or national numbers of --region;",
        "spaces, dots, dashes and parentheses are ignored.",
    ]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class ImportRow:
    line: int
    account_number: str
    name: str
    tier: str
    status: str
    language: str
    phones: tuple[str, ...]
    phone_columns: tuple[str, ...] = ()  # the column each phone came from, for messages
    #: False when the file has no phone column: then it says nothing about phones, and a
    #: customer already stored keeps theirs (a tier-only export must not wipe numbers).
    has_phones: bool = True

    def phone_column(self, e164: str) -> str:
        return self.phone_columns[self.phones.index(e164)]


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong (or worth a warning) on one line of the file, in which column."""

    line: int
    column: str | None  # the column's name as the file's header writes it
    message: str

    def __str__(self) -> str:
        return f"column {self.column}: {self.message}" if self.column else self.message


@dataclass(slots=True)
class ImportReport:
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    refused: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


class ImportFileError(ValueError):
    """The file as a whole cannot be read (no header, missing required columns)."""


class _Refused(ValueError):
    def __init__(self, column: str | None, message: str) -> None:
        super().__init__(message)
        self.column = column


def _column(name: str) -> str:
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    return _ALIASES.get(key, key)


def _shown(value: str, limit: int = 40) -> str:
    """A value from the file, quoted and escaped for a terminal, cut when long."""
    return repr(value[:limit]) + ("..." if len(value) > limit else "")


@dataclass(frozen=True, slots=True)
class _Header:
    written: list[str]  # as the file writes them, for messages
    index: dict[str, int]  # our column name -> position
    phones: list[int]

    def name(self, position: int) -> str:
        return self.written[position] or f"#{position + 1}"


def _read_header(reader: Iterator[list[str]]) -> _Header:
    try:
        written = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ImportFileError("the file is empty; expected a header row") from None
    except csv.Error as exc:
        raise ImportFileError(f"line 1: {exc}") from None
    for h in written:
        if _UNDECODABLE.search(h):
            raise ImportFileError("line 1: the header is not UTF-8; save the file as UTF-8")
        try:
            refuse_control_characters(h)
        except ControlCharacterError as exc:
            raise ImportFileError(f"line 1: column {_shown(h)}: {exc}") from None
    names = [_column(h) for h in written]
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise ImportFileError(f"line 1: missing column(s) {', '.join(missing)}")
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in _KNOWN and name in index:
            first = written[index[name]]
            raise ImportFileError(f"line 1: columns {first} and {written[i]} both mean {name}")
        index.setdefault(name, i)
    phones = [
        i for i, n in enumerate(names) if n == "phones" or n.startswith(PHONE_COLUMN_PREFIXES)
    ]
    return _Header(written, index, phones)


def parse_file(text: Iterable[str], region: str, report: ImportReport) -> list[ImportRow]:
    """The good rows of a CSV export; the refused ones (and warnings) go to ``report``.

    Raises :class:`ImportFileError` when the header is unusable: then nothing is loaded.
    """
    csv.field_size_limit(MAX_CSV_FIELD)
    reader = csv.reader(text)
    header = _read_header(reader)
    return list(_rows(reader, header, region, report))


def _rows(
    reader: Iterator[list[str]], header: _Header, region: str, report: ImportReport
) -> Iterator[ImportRow]:
    ignored = [
        header.written[i]
        for i, name in enumerate(_column(h) for h in header.written)
        if name not in _KNOWN and i not in header.phones
    ]
    if ignored:
        report.warnings.append(Problem(1, None, f"column(s) ignored: {', '.join(ignored)}"))
    if not header.phones:
        report.warnings.append(
            Problem(
                1,
                None,
                "no phone column: new customers can be found by account number only,"
                " stored ones keep their phones",
            )
        )
    seen_accounts: dict[str, int] = {}
    seen_phones: dict[str, int] = {}
    while True:
        line = reader.line_num + 1  # type: ignore[attr-defined]
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            report.refused.append(Problem(line, None, str(exc)))
            continue
        if not any(v.strip() for v in values):
            continue
        try:
            row = _validate(values, header, line, region)
            first = seen_accounts.setdefault(row.account_number, line)
            if first != line:
                raise _Refused(
                    header.name(header.index["account_number"]),
                    f"account {row.account_number} already on line {first}",
                )
            for phone in row.phones:
                owner = seen_phones.setdefault(phone, line)
                if owner != line:
                    raise _Refused(
                        row.phone_column(phone), f"phone {phone} already on line {owner}"
                    )
        except _Refused as exc:
            report.refused.append(Problem(line, exc.column, str(exc)))
            continue
        if header.phones and not row.phones:
            report.warnings.append(
                Problem(
                    line,
                    _phone_column(header),
                    "no phone number: this customer can be found by account number only",
                )
            )
        yield row


def _phone_column(header: _Header) -> str:
    return "/".join(header.name(i) for i in header.phones)


def _validate(values: list[str], header: _Header, line: int, region: str) -> ImportRow:
    if len(values) != len(header.written):
        raise _Refused(None, f"expected {len(header.written)} fields, found {len(values)}")

    def text(position: int, limit: int = MAX_FIELD) -> str:
        column = header.name(position)
        value = values[position].strip()
        undecodable = _UNDECODABLE.search(value)
        if undecodable:
            byte = ord(undecodable.group()) - 0xDC00
            raise _Refused(column, f"not UTF-8 (byte 0x{byte:02X}); save the file as UTF-8")
        try:
            refuse_control_characters(value)
        except ControlCharacterError as exc:
            raise _Refused(column, str(exc)) from None
        if len(value) > limit:
            raise _Refused(column, f"{len(value)} characters, at most {limit}")
        return value

    def get(column: str, limit: int = MAX_FIELD) -> tuple[str, str]:
        position = header.index.get(column)
        if position is None:
            return "", column
        return text(position, limit), header.name(position)

    account, column = get("account_number")
    if not ACCOUNT_NUMBER.match(account):
        raise _Refused(
            column, f"account_number {_shown(account)}: letters, digits and - only, 1-32"
        )
    name, column = get("name", MAX_NAME)
    if not name:
        raise _Refused(column, "name: required")
    tier, column = get("tier")
    tier = tier.lower()
    if tier not in TIERS:
        raise _Refused(column, f"tier {_shown(tier)}: expected one of {', '.join(TIERS)}")
    status, column = get("status")
    status = status.lower() or "active"
    if status not in STATUSES:
        raise _Refused(column, f"status {_shown(status)}: expected one of {', '.join(STATUSES)}")
    language, column = get("language")
    language = language.lower() or "en"
    if not _LANGUAGE.match(language):
        raise _Refused(
            column, f"language {_shown(language)}: expected a 2- or 3-letter code such as en"
        )
    phones: list[str] = []
    sources: list[str] = []
    count = 0
    for position in header.phones:
        for raw in _PHONE_SPLIT.split(text(position)):
            if not raw.strip():
                continue
            count += 1
            if count > MAX_PHONES:
                raise _Refused(header.name(position), f"at most {MAX_PHONES} phone numbers")
            number = normalize(raw, region)
            if number.e164 is None:
                raise _Refused(
                    header.name(position),
                    f"phone {_shown(raw.strip())} is not a phone number (region {region})",
                )
            if number.e164 not in phones:
                phones.append(number.e164)
                sources.append(header.name(position))
    return ImportRow(
        line, account, name, tier, status, language, tuple(phones), tuple(sources),
        has_phones=bool(header.phones),
    )  # fmt: skip
