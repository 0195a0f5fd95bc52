"""Reading a CRM export (cti.customer_csv): each row judged on its own, whatever is in it."""

from __future__ import annotations

import csv
import io
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cti.customer_csv import ImportFileError, ImportReport, columns_help, parse_file
from cti.text import strip_control_characters


def parse(text: str, region: str = "US") -> tuple[list, ImportReport]:
    report = ImportReport()
    return parse_file(io.StringIO(text), region, report), report


def test_aliases_and_phone_columns_are_read() -> None:
    rows, report = parse(
        "Account,Customer Name,Value Tier,Account Status,Lang,Phone,Mobile 2\n"
        "X-1,Ann,GOLD,Delinquent,FR,0012125550101,+44 20 7946 0001\n"
    )
    assert not report.refused
    (row,) = rows
    assert (row.account_number, row.name, row.tier, row.status, row.language) == (
        "X-1", "Ann", "gold", "delinquent", "fr",
    )  # fmt: skip
    assert row.phones == ("+12125550101", "+442079460001")
    assert row.phone_columns == ("Phone", "Mobile 2")


@pytest.mark.parametrize(
    ("alias", "column"),
    [
        ("account", "account_number"),
        ("Account No", "account_number"),
        ("customer_name", "name"),
        ("value-tier", "tier"),
        ("account_status", "status"),
        ("preferred_language", "language"),
        ("lang", "language"),
    ],
)
def test_every_documented_alias_is_read(alias: str, column: str) -> None:
    assert alias.lower().replace(" ", "_").replace("-", "_") in columns_help()
    values = {"account_number": "X-1", "name": "Ann", "tier": "gold", "status": "closed"}
    values["language"] = "de"
    header = [alias if c == column else c for c in values]
    (row,), _ = parse(f"{','.join(header)}\n{','.join(values.values())}\n")
    assert getattr(row, column) == values[column]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the file is empty"),
        ("name,tier\n", "missing column(s) account_number"),
        ("account,account_number,name,tier\n", "columns account and account_number"),
        ("account,na\x1bme,name,tier\n", "control character U+001B ESC"),
    ],
)
def test_an_unusable_header_refuses_the_file(content: str, message: str) -> None:
    with pytest.raises(ImportFileError, match=re.escape(message)):
        parse(content)


def test_a_refusal_names_line_and_column() -> None:
    rows, report = parse(
        "account,name,tier,phones\n"
        f"X-1,{'N' * 5000},gold,\n"
        "X-2,Bo\x00b,gold,\n"
        "X-3,Cy,gold,12\n"
        "X-4,Di,gold,2125550104\n"
    )
    assert [r.account_number for r in rows] == ["X-4"]
    assert [(p.line, p.column) for p in report.refused] == [
        (2, "name"), (3, "name"), (4, "phones"),
    ]  # fmt: skip
    assert "5000 characters, at most 200" in str(report.refused[0])
    assert str(report.refused[1]) == "column name: control character U+0000 NUL at character 3"


_cell = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from("\x00\x1b\r\n\x9b;|+0"))


@given(st.lists(st.lists(_cell, min_size=0, max_size=6), max_size=8))
def test_any_rows_give_good_rows_and_refusals_never_an_exception(rows: list[list[str]]) -> None:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["account", "name", "tier", "status", "phones", "note"])
    writer.writerows(rows)
    good, report = parse(out.getvalue())
    assert len(good) + len(report.refused) <= len(rows)
    for row in good:
        for value in (row.account_number, row.name, row.tier, row.status, row.language):
            assert strip_control_characters(value) == value
            assert not any("\udc80" <= c <= "\udcff" for c in value)
        assert 1 <= len(row.name) <= 200
    for problem in report.refused:
        assert strip_control_characters(repr(str(problem))) == repr(str(problem))
