"""Customers: the router's lookup, and the import of a CRM's CSV export.

The lookup is one indexed query: by the account number an IVR collected when there
is one, else by the caller's E.164 number (the primary key of ``customer_phones``).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import asyncpg

from cti.routing.model import ACCOUNT_NUMBER, STATUSES, TIERS, Customer
from cti.routing.phone import normalize

FIND_CUSTOMER_SQL = """
SELECT id, account_number, name, tier, status, language FROM (
    SELECT 0 AS precedence, c.* FROM customers c WHERE c.account_number = $2
    UNION ALL
    SELECT 1, c.* FROM customer_phones p JOIN customers c ON c.id = p.customer_id
    WHERE p.e164 = $1
) AS found ORDER BY precedence LIMIT 1
"""


async def find_customer(
    conn: asyncpg.Connection | asyncpg.Pool, e164: str | None, account: str | None
) -> Customer | None:
    if e164 is None and account is None:
        return None
    row = await conn.fetchrow(FIND_CUSTOMER_SQL, e164, account)
    return Customer(**dict(row)) if row else None


# --- CSV import --------------------------------------------------------------------------

_LANGUAGE = re.compile(r"^[a-z]{2,3}$")
_PHONE_SPLIT = re.compile(r"[;|]")
MAX_FIELD = 1024
MAX_PHONES = 20
REQUIRED_COLUMNS = ("account_number", "name", "tier")
_ALIASES = {
    "account": "account_number",
    "account_no": "account_number",
    "customer_name": "name",
    "value_tier": "tier",
    "account_status": "status",
    "preferred_language": "language",
    "lang": "language",
}


@dataclass(frozen=True, slots=True)
class ImportRow:
    line: int
    account_number: str
    name: str
    tier: str
    status: str
    language: str
    phones: tuple[str, ...]


@dataclass(slots=True)
class ImportReport:
    loaded: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)


class ImportFileError(ValueError):
    """The file as a whole cannot be read (no header, missing required columns)."""


def _column(name: str) -> str:
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    return _ALIASES.get(key, key)


def parse_rows(text: Iterable[str], region: str, report: ImportReport) -> Iterator[ImportRow]:
    """Validate each row; yield the good ones and record the bad ones with line numbers.

    Phone columns are ``phones`` (several numbers separated by ``;`` or ``|``) and any
    column whose name starts with ``phone`` or ``mobile``.
    """
    csv.field_size_limit(MAX_FIELD * 8)
    reader = csv.reader(text)
    try:
        header = [_column(h) for h in next(reader)]
    except StopIteration:
        raise ImportFileError("the file is empty; expected a header row") from None
    except csv.Error as exc:
        raise ImportFileError(f"line 1: {exc}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ImportFileError(f"line 1: missing column(s) {', '.join(missing)}")
    phone_columns = [
        i for i, h in enumerate(header) if h.startswith("phone") or h.startswith("mobile")
    ]
    index = {h: i for i, h in enumerate(header)}
    seen_accounts: dict[str, int] = {}
    seen_phones: dict[str, int] = {}
    while True:
        line = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            report.bad.append((line, str(exc)))
            continue
        if not any(v.strip() for v in values):
            continue
        try:
            row = _validate(values, index, phone_columns, header, line, region)
            first = seen_accounts.setdefault(row.account_number, line)
            if first != line:
                raise ValueError(f"account {row.account_number} already on line {first}")
            for phone in row.phones:
                owner = seen_phones.setdefault(phone, line)
                if owner != line:
                    raise ValueError(f"phone {phone} already on line {owner}")
        except ValueError as exc:
            report.bad.append((line, str(exc)))
            continue
        yield row


def _validate(
    values: list[str],
    index: dict[str, int],
    phone_columns: list[int],
    header: list[str],
    line: int,
    region: str,
) -> ImportRow:
    if len(values) != len(header):
        raise ValueError(f"expected {len(header)} fields, found {len(values)}")
    if any(len(v) > MAX_FIELD for v in values):
        raise ValueError(f"a field is longer than {MAX_FIELD} characters")

    def get(column: str, default: str = "") -> str:
        i = index.get(column)
        return values[i].strip() if i is not None else default

    account = get("account_number")
    if not ACCOUNT_NUMBER.match(account):
        raise ValueError(f"account_number {account!r}: letters, digits and - only, 1-32")
    name = get("name")
    if not 1 <= len(name) <= 200:
        raise ValueError("name: required, at most 200 characters")
    tier = get("tier").lower()
    if tier not in TIERS:
        raise ValueError(f"tier {tier!r}: expected one of {', '.join(TIERS)}")
    status = (get("status") or "active").lower()
    if status not in STATUSES:
        raise ValueError(f"status {status!r}: expected one of {', '.join(STATUSES)}")
    language = (get("language") or "en").lower()
    if not _LANGUAGE.match(language):
        raise ValueError(f"language {language!r}: expected a 2- or 3-letter code such as en")
    raw_phones = [p for i in phone_columns for p in _PHONE_SPLIT.split(values[i]) if p.strip()]
    if len(raw_phones) > MAX_PHONES:
        raise ValueError(f"at most {MAX_PHONES} phone numbers per customer")
    phones = []
    for raw in raw_phones:
        number = normalize(raw, region)
        if number.e164 is None:
            raise ValueError(f"phone {raw.strip()!r} is not a phone number")
        if number.e164 not in phones:
            phones.append(number.e164)
    return ImportRow(line, account, name, tier, status, language, tuple(phones))


async def import_customers(
    conn: asyncpg.Connection, text: Iterable[str] | str, region: str
) -> ImportReport:
    """Load the good rows of a CSV export; report the bad ones. One transaction.

    A customer's phones become exactly those in the file. A phone that already belongs
    to another customer in the database makes its row bad: we never move a number
    between customers behind an operator's back.
    """
    report = ImportReport()
    lines = io.StringIO(text) if isinstance(text, str) else text
    rows = list(parse_rows(lines, region, report))
    async with conn.transaction():
        await conn.execute(
            "CREATE TEMP TABLE import_phones (account_number text, e164 text, line int)"
            " ON COMMIT DROP"
        )
        await conn.copy_records_to_table(
            "import_phones",
            records=[(r.account_number, p, r.line) for r in rows for p in r.phones],
        )
        conflicts = await conn.fetch(
            """SELECT i.line, i.e164, c.account_number AS owner
               FROM import_phones i
               JOIN customer_phones p ON p.e164 = i.e164
               JOIN customers c ON c.id = p.customer_id
               WHERE c.account_number <> i.account_number"""
        )
        bad_lines = {}
        for conflict in conflicts:
            bad_lines.setdefault(
                conflict["line"],
                f"phone {conflict['e164']} belongs to account {conflict['owner']}",
            )
        good = [r for r in rows if r.line not in bad_lines]
        report.bad.extend(bad_lines.items())
        report.bad.sort()
        await conn.executemany(
            """INSERT INTO customers (account_number, name, tier, status, language)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (account_number) DO UPDATE SET
                   name = EXCLUDED.name, tier = EXCLUDED.tier, status = EXCLUDED.status,
                   language = EXCLUDED.language, updated_at = now()""",
            [(r.account_number, r.name, r.tier, r.status, r.language) for r in good],
        )
        await conn.execute(
            """DELETE FROM customer_phones p USING customers c
               WHERE c.id = p.customer_id AND c.account_number = ANY($1::text[])""",
            [r.account_number for r in good],
        )
        await conn.executemany(
            """INSERT INTO customer_phones (e164, customer_id)
               SELECT $2, id FROM customers WHERE account_number = $1""",
            [(r.account_number, p) for r in good for p in r.phones],
        )
        report.loaded = len(good)
    return report
