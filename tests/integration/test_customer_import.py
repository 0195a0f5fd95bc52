"""``cti customers import`` on a messy CRM export (tests/fixtures/crm-export): every valid
customer loads, every bad row is refused by line, column and reason, a second import
changes nothing and says so, and a caller whose number arrives as 00... is found."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.integration.test_cli import cti

FIXTURE = Path(__file__).parents[1] / "fixtures" / "crm-export"
EXPORT = FIXTURE / "crm-export.csv"
EXPECTED = json.loads((FIXTURE / "crm-export.expected.json").read_text())
LOADED: dict[str, dict] = EXPECTED["loaded"]
REFUSED: list[dict] = EXPECTED["refused"]
NO_PHONE: list[dict] = EXPECTED["warnings"]
SUMMARY_TAIL = f"{len(REFUSED)} refused ({len(NO_PHONE) + 1} warning(s))"  # + Email ignored

CUSTOMERS_SQL = """
SELECT c.account_number, c.name, c.tier, c.status, c.language,
       array_remove(array_agg(p.e164 ORDER BY p.e164), NULL) AS phones
FROM customers c LEFT JOIN customer_phones p ON p.customer_id = c.id
WHERE c.account_number LIKE 'CRM%' GROUP BY c.id ORDER BY 1
"""
VERSIONS_SQL = """
SELECT c.account_number, c.xmin::text AS version, c.updated_at,
       array_agg(p.xmin::text ORDER BY p.e164) AS phone_versions
FROM customers c LEFT JOIN customer_phones p ON p.customer_id = c.id
WHERE c.account_number LIKE 'CRM%' GROUP BY c.id ORDER BY 1
"""


def _problems(err: str) -> dict[int, str]:
    lines = [line for line in err.splitlines() if line.startswith(f"{EXPORT}:")]
    problems = {}
    for line in lines:
        _, number, text = line.split(":", 2)
        if not text.startswith(" warning: "):
            problems[int(number)] = text.strip()
    return problems


async def _customers(db) -> dict[str, dict]:
    return {
        r["account_number"]: {k: r[k] for k in ("name", "tier", "status", "language", "phones")}
        for r in await db.fetch(CUSTOMERS_SQL)
    }


async def test_a_dry_run_reports_and_stores_nothing(seeded, db):
    code, out, err = await cti("customers", "import", "--dry-run", str(EXPORT), database_url=seeded)
    assert code == 2, err
    assert (
        out.strip()
        == f"dry run, nothing stored: {len(LOADED)} new, 0 updated, 0 unchanged, " + (SUMMARY_TAIL)
    )
    assert sorted(_problems(err)) == [p["line"] for p in REFUSED]
    assert await db.fetchval("SELECT count(*) FROM customers WHERE account_number LIKE 'CRM%'") == 0


async def test_the_crm_export_loads_every_valid_customer_and_refuses_the_rest(seeded, db):
    code, out, err = await cti("customers", "import", str(EXPORT), database_url=seeded)
    assert code == 2  # done, with refused rows
    assert out.strip() == f"{len(LOADED)} new, 0 updated, 0 unchanged, {SUMMARY_TAIL}"

    # Every refused row: its line, its column (as the file names it) and the reason.
    problems = _problems(err)
    assert sorted(problems) == [p["line"] for p in REFUSED]
    for expected in REFUSED:
        message = problems[expected["line"]]
        if expected["column"]:
            assert message.startswith(f"column {expected['column']}: "), message
        assert expected["reason"] in message, message
    # A refusal never echoes a control character to the operator's terminal.
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", err)
    # A customer without a phone loads, with a warning on its line.
    for warning in NO_PHONE:
        assert f"{EXPORT}:{warning['line']}: warning: column Phones/Mobile: no phone number" in err
    assert f"{EXPORT}:1: warning: column(s) ignored: Email" in err

    # Every valid customer, as the file meant it, and nothing else.
    stored = await _customers(db)
    assert stored == LOADED

    # The same file again: nothing new, nothing written.
    before = await db.fetch(VERSIONS_SQL)
    code, out, _ = await cti("customers", "import", str(EXPORT), database_url=seeded)
    assert code == 2
    assert out.strip() == f"0 new, 0 updated, {len(LOADED)} unchanged, {SUMMARY_TAIL}"
    assert await db.fetch(VERSIONS_SQL) == before

    # One customer changed in the CRM: only that row is written.
    text = EXPORT.read_bytes().replace(
        b"CRM-00006,Ada Customer 6,silver", b"CRM-00006,Ada Six,gold"
    )
    changed = EXPORT.parent / "changed.csv"
    try:
        changed.write_bytes(text)
        code, out, err = await cti("customers", "import", str(changed), database_url=seeded)
    finally:
        changed.unlink()
    assert out.strip().startswith(f"0 new, 1 updated, {len(LOADED) - 1} unchanged")
    after = {r["account_number"]: r for r in await db.fetch(VERSIONS_SQL)}
    rewritten = [r["account_number"] for r in before if after[r["account_number"]] != r]
    assert rewritten == ["CRM-00006"]
    assert (await _customers(db))["CRM-00006"]["name"] == "Ada Six"


async def test_route_finds_a_customer_whose_number_arrives_with_00(seeded):
    code, _, err = await cti("customers", "import", str(EXPORT), database_url=seeded)
    assert code == 2, err
    # Stored from "+1 212 555 0106"; the trunk sends the caller as 00 1 212 555 0106.
    code, out, err = await cti(
        "route", "--ani", "0012125550106", "--dnis", "5550100", database_url=seeded
    )
    assert code == 0, err
    assert "caller    +12125550106" in out
    assert "customer  CRM-00006 Ada Customer 6" in out
    # And a demo customer, from the 00 form of its number.
    code, out, _ = await cti(
        "route", "--ani", "00 1 212 000 0002", "--dnis", "5550100", database_url=seeded
    )
    assert "customer  A0000002 " in out


async def test_region_reads_a_foreign_file(seeded, db, tmp_path):
    path = tmp_path / "uk.csv"
    path.write_text(
        "account,name,tier,phone\n"
        "UK-1,Ann Other,gold,020 7946 0001\n"
        "UK-2,Bea Other,silver,+1 212 555 0002\n"
        "UK-3,Cy Other,bronze,001 212 555 0003\n"
    )
    code, out, err = await cti(
        "customers", "import", "--region", "gb", str(path), database_url=seeded
    )
    assert (code, out.strip()) == (0, "3 new, 0 updated, 0 unchanged, 0 refused"), err
    phones = await db.fetch(
        "SELECT c.account_number, p.e164 FROM customer_phones p"
        " JOIN customers c ON c.id = p.customer_id WHERE account_number LIKE 'UK-%' ORDER BY 1"
    )
    # In the UK, 001 212... is the 00 prefix and +1: a US number.
    assert [tuple(r) for r in phones] == [
        ("UK-1", "+442079460001"),
        ("UK-2", "+12125550002"),
        ("UK-3", "+12125550003"),
    ]


@pytest.mark.parametrize("region", ["XX", "USA", ""])
async def test_an_unknown_region_is_refused(seeded, tmp_path, region):
    path = tmp_path / "x.csv"
    path.write_text("account,name,tier\nX-1,X,gold\n")
    code, _, err = await cti(
        "customers", "import", "--region", region, str(path), database_url=seeded
    )
    assert code == 1 and "--region" in err


async def test_a_file_without_phone_columns_keeps_stored_phones(seeded, db, tmp_path):
    """A tier-only export updates tiers; it does not wipe the customers' numbers."""
    path = tmp_path / "tiers.csv"
    path.write_text("account,name,tier\nA0000002,Alan Turing,platinum\nN-1,New One,gold\n")
    code, out, err = await cti("customers", "import", str(path), database_url=seeded)
    assert (code, out.strip()) == (0, "1 new, 1 updated, 0 unchanged, 0 refused (1 warning(s))")
    assert "1: warning: no phone column" in err
    phones = await db.fetch(
        "SELECT p.e164 FROM customer_phones p JOIN customers c ON c.id = p.customer_id"
        " WHERE c.account_number = 'A0000002'"
    )
    assert [p["e164"] for p in phones] == ["+12120000002"]
    code, out, _ = await cti("customers", "import", str(path), database_url=seeded)
    assert out.strip() == "0 new, 0 updated, 2 unchanged, 0 refused (1 warning(s))"
