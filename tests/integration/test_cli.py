"""The ``cti`` command as operators run it: a real process against real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import tomllib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from cti.db.migrate import migrate
from tests.conftest import PG_SERVER


async def cti(*args: str, database_url: str, stdin: bytes | None = None, **env: str):
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cti", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "CTI_DATABASE_URL": database_url, "CTI_LOG_FORMAT": "json", **env},
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(stdin), 60)
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def empty_database_url():
    name = f"cti_test_cli_empty_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(f"{PG_SERVER}/postgres")
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    yield f"{PG_SERVER}/{name}"
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def test_migrate_creates_the_database_and_is_idempotent(empty_database_url):
    code, out, err = await cti("db", "migrate", database_url=empty_database_url)
    assert code == 0, err
    assert (
        "applied 10 migration(s): 001_routing.sql, 002_call_tracking.sql, 003_agents.sql, "
        "004_dead_letters.sql, 005_token_version.sql, 006_agent_states.sql, "
        "007_supervisor_audit.sql, 010_reports.sql, 011_pbx.sql, 012_audit_device.sql"
    ) in out
    code, out, _ = await cti("db", "migrate", database_url=empty_database_url)
    assert (code, out.strip()) == (0, "applied 0 migration(s)")
    conn = await asyncpg.connect(empty_database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 10
        assert await conn.fetchval("SELECT to_regclass('routing_rules')::text") == "routing_rules"
    finally:
        await conn.close()


async def test_an_applied_migration_that_was_edited_is_refused(empty_database_url, tmp_path):
    sql = tmp_path / "sql"
    sql.mkdir()
    (sql / "001_one.sql").write_text("CREATE TABLE one (id int);")
    assert await migrate(empty_database_url, sql) == ["001_one.sql"]
    (sql / "001_one.sql").write_text("CREATE TABLE one (id bigint);")
    code, _, err = await cti(
        "db", "migrate", "--sql-dir", str(sql), database_url=empty_database_url
    )
    assert code == 1
    assert "001_one.sql was changed after it was applied" in err


async def test_migrate_against_an_unreachable_server_says_so():
    code, _, err = await cti("db", "migrate", database_url="postgresql://postgres@127.0.0.1:1/x")
    assert code == 1
    assert err.startswith("cti: database:")


CSV = """\
account_number,name,tier,status,language,phones,mobile
A1000001,Good One,gold,active,en,+1 212 555 0101;2125550102,
A1000002,Good Two,Bronze,,es,,(646) 555-0103
A1000003,Bad Tier,diamond,active,en,2125550104,
A1000004,Bad Phone,silver,active,en,not-a-number,
A1000001,Duplicate Account,gold,active,en,2125550105,
A1000006,Phone Taken In File,gold,active,en,2125550101,
,No Account,gold,active,en,,
A1000008,Short Row,gold
A1000009,Owned Elsewhere,gold,active,en,+12120000002,
"""


async def test_import_loads_good_rows_and_reports_bad_ones_by_line(seeded, tmp_path, db):
    path = tmp_path / "crm.csv"
    path.write_text(CSV)
    code, out, err = await cti("customers", "import", str(path), database_url=seeded)
    assert code == 2  # done, with rejected rows
    assert out.strip() == "2 new, 0 updated, 0 unchanged, 7 refused"
    problems = [line for line in err.splitlines() if line.startswith(str(path))]
    assert [p.split(":")[1] for p in problems] == ["4", "5", "6", "7", "8", "9", "10"]
    assert "tier 'diamond'" in problems[0]
    assert "phone 'not-a-number'" in problems[1]
    assert "account A1000001 already on line 2" in problems[2]
    assert "phone +12125550101 already on line 2" in problems[3]
    assert "account_number ''" in problems[4]
    assert "expected 7 fields, found 3" in problems[5]
    assert "phone +12120000002 belongs to account A0000002" in problems[6]
    rows = await db.fetch(
        """SELECT c.account_number, c.tier, c.status, c.language,
                  array_agg(p.e164 ORDER BY p.e164) AS phones
           FROM customers c JOIN customer_phones p ON p.customer_id = c.id
           WHERE c.account_number LIKE 'A100000%' GROUP BY c.id ORDER BY 1"""
    )
    assert [tuple(r) for r in rows] == [
        ("A1000001", "gold", "active", "en", ["+12125550101", "+12125550102"]),
        ("A1000002", "bronze", "active", "es", ["+16465550103"]),
    ]
    # Importing again replaces the customer's phones with the file's.
    path.write_text("account_number,name,tier,phones\nA1000001,Good One,platinum,2125550199\n")
    code, out, _ = await cti("customers", "import", str(path), database_url=seeded)
    assert (code, out.strip()) == (0, "0 new, 1 updated, 0 unchanged, 0 refused")
    phones = await db.fetch(
        "SELECT e164 FROM customer_phones p JOIN customers c ON c.id = p.customer_id"
        " WHERE account_number = 'A1000001'"
    )
    assert [p["e164"] for p in phones] == ["+12125550199"]


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "the file is empty"), ("name,tier\nx,gold\n", "missing column(s) account_number")],
)
async def test_import_of_an_unusable_file_changes_nothing(seeded, tmp_path, db, content, message):
    before = await db.fetchval("SELECT count(*) FROM customers")
    path = tmp_path / "bad.csv"
    path.write_text(content)
    code, _, err = await cti("customers", "import", str(path), database_url=seeded)
    assert code == 1 and message in err
    assert await db.fetchval("SELECT count(*) FROM customers") == before


async def test_rules_export_then_load_round_trips(seeded, tmp_path):
    code, exported, err = await cti("rules", "export", database_url=seeded)
    assert code == 0, err
    plan = tomllib.loads(exported)
    assert [r["name"] for r in plan["rules"]][:2] == ["closed", "collections"]
    # The queues' timers and the pause reasons are stored and exported too (migration 006).
    support = next(q for q in plan["queues"] if q["name"] == "support")
    assert support["wrapup_s"] == 30
    assert [r["name"] for r in plan["pause_reasons"]] == ["lunch", "break", "training", "meeting"]
    # An operator raises the gold rule's priority in the exported file and loads it back.
    gold = next(r for r in plan["rules"] if r["name"] == "gold")
    assert gold["priority"] == 10
    path = tmp_path / "plan.toml"
    path.write_text(exported.replace("priority = 10", "priority = 30"))
    code, out, err = await cti("rules", "load", str(path), database_url=seeded)
    assert code == 0, err
    assert "stored 6 queue(s), 3 number(s), 9 rule(s), 4 pause reason(s)" in out
    code, out, _ = await cti(
        "route", "--ani", "2120000002", "--dnis", "5550100", database_url=seeded
    )
    assert "priority  30" in out and "rule      gold" in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[rules]]\nname = "x"\nmatch = { tier = ["gould"] }\n', 'rules[1] "x".match.tier'),
        ('[[rules]]\nname = "x"\nqueue = "nowhere"\n', "unknown queue 'nowhere'"),
        ("[[rules]\n", "not valid TOML"),
        ("[[rules]]\nname = \n", "not valid TOML: Invalid value (at line 2, column 8)"),
        (b'[[queues]]\nname = "caf\xe9"\n', "not UTF-8 text: byte 0xe9 at line 2, column 12"),
        ("[[rules]]\nname = " + "[" * 5000 + "]" * 5000, "nested too deeply"),
        ("[[rules]]\nname = " + "{a=" * 5000 + "}" * 5000, "nested too deeply"),
        ('[[rules]]\nname = "x"\npriority = ' + "9" * 5000, "too long to read (at line 3,"),
        ("#" * (5 * 2**20), "too big for a routing plan (at most 4 MiB)"),
    ],
)
async def test_a_bad_plan_file_is_refused_and_changes_nothing(seeded, tmp_path, text, message):
    """Exit 2, "input refused", whatever is wrong with the file (from a misspelt tier to
    bytes that are not text): one line naming the file, never a traceback; 1 is left for
    failures that trying again may cure (the database)."""
    _, before, _ = await cti("rules", "export", database_url=seeded)
    path = tmp_path / "bad.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    # --check needs no database, so it cannot know the stored queues.
    checks = ([], ["--check"]) if "unknown queue" not in message else ([],)
    for check in checks:
        code, _, err = await cti("rules", "load", *check, str(path), database_url=seeded)
        assert code == 2 and message in err
        assert err.startswith(f"cti: {path}: ") and err.count("\n") == 1, err
    _, after, _ = await cti("rules", "export", database_url=seeded)
    assert after == before


async def test_a_plan_file_that_cannot_be_read_is_a_failure_not_a_refusal(seeded, tmp_path):
    code, _, err = await cti("rules", "load", str(tmp_path / "missing.toml"), database_url=seeded)
    assert (code, err) == (1, f"cti: {tmp_path / 'missing.toml'}: No such file or directory\n")


async def test_rules_check_needs_no_database(tmp_path):
    path = Path(__file__).parents[2] / "cti" / "demo" / "routing.toml"
    code, out, _ = await cti(
        "rules", "load", "--check", str(path), database_url="postgresql://nobody@127.0.0.1:1/x"
    )
    assert (code, out.strip()) == (0, f"{path}: ok")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--ani", "2120000004", "--dnis", "5550200", "--at", "2026-11-22T10:00"],
         ["route     afterhours", "rule      closed"]),  # a Sunday, local time
        (["--ani", "2120000004", "--dnis", "5550200", "--at", "2026-11-23T10:00",
          "--ivr", "intent=balance"],
         ["route     selfservice", "rule      balance-self-service"]),
        (["--ani", "anonymous", "--dnis", "5559999"],
         ["queue     default", "customer  unknown", "number    unknown (default queue)"]),
    ],
)  # fmt: skip
async def test_route_explains_the_decision(seeded, args, expected):
    code, out, err = await cti("route", *args, database_url=seeded)
    assert code == 0, err
    for line in expected:
        assert line in out


async def test_route_never_prints_a_stored_names_control_characters(seeded):
    conn = await asyncpg.connect(seeded)
    try:  # stored before imports refused them
        await conn.execute(
            "UPDATE customers SET name = $1 WHERE account_number = 'A0000002'",
            "Alan\x1b[2J\x1b]0;owned\x07 Turing\x9b",
        )
    finally:
        await conn.close()
    code, out, err = await cti("route", "--ani", "2120000002", "--dnis", "5550100",
                               database_url=seeded)  # fmt: skip
    assert code == 0, err
    assert "customer  A0000002 Alan[2J]0;owned Turing (gold," in out
    assert not any(ch in out for ch in "\x1b\x07\x9b")


@pytest.mark.parametrize(
    ("at", "shown"),
    [
        ("2026-11-23T10:00", "2026-11-23T10:00:00-05:00 (America/New_York)"),  # local
        ("2026-11-23T15:00:00+00:00", "2026-11-23T10:00:00-05:00 (America/New_York)"),
        ("2026-07-01T23:30Z", "2026-07-01T19:30:00-04:00 (America/New_York)"),  # summer
    ],
)
async def test_route_shows_the_moment_in_the_numbers_local_time(seeded, at, shown):
    code, out, err = await cti(
        "route", "--ani", "2120000002", "--dnis", "5550200", "--at", at, database_url=seeded
    )
    assert code == 0, err
    assert f"at        {shown}\n" in out


async def test_route_without_a_time_shows_now_in_the_numbers_local_time(seeded):
    code, out, err = await cti("route", "--ani", "2120000002", "--dnis", "5550200",
                               database_url=seeded)  # fmt: skip
    assert code == 0, err
    shown = next(line for line in out.splitlines() if line.startswith("at "))
    stamp, zone = shown.removeprefix("at").split()
    assert zone == "(America/New_York)"
    moment = datetime.fromisoformat(stamp)
    assert moment.utcoffset() == moment.astimezone(ZoneInfo("America/New_York")).utcoffset()
    assert abs(moment - datetime.now(UTC)) < timedelta(minutes=5)
    # A number not in the plan has no zone of its own: UTC, said so.
    code, out, _ = await cti("route", "--ani", "1", "--dnis", "5559999", database_url=seeded)
    assert re.search(r"^at        \S+\+00:00 \(UTC\)$", out, re.MULTILINE)


async def test_a_reader_that_goes_away_ends_the_command_quietly(seeded):
    """``cti rules export | head -1``: the rest of the output has nowhere to go. Like
    seq or cat, cti stops without a word (status 141, as if killed by SIGPIPE)."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cti", "rules", "export",
            stdout=write_end, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "CTI_DATABASE_URL": seeded},
        )  # fmt: skip
    finally:
        os.close(write_end)
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert (process.returncode, err.decode()) == (141, "")


async def test_a_file_error_is_not_called_a_database_error(seeded, tmp_path):
    target = tmp_path / "missing" / "plan.toml"
    code, _, err = await cti("rules", "export", "-o", str(target), database_url=seeded)
    assert code == 1
    assert err.strip() == f"cti: {target}: No such file or directory"


@pytest.mark.parametrize("command", [["route", "--ani", "1", "--dnis", "1"], ["rules", "export"]])
async def test_a_database_that_cannot_be_reached_is_named(command):
    code, _, err = await cti(*command, database_url="postgresql://postgres@127.0.0.1:1/x")
    assert code == 1
    assert err.startswith("cti: database:") and "Traceback" not in err


async def test_route_with_a_bad_time_says_so(seeded):
    code, _, err = await cti(
        "route", "--ani", "1", "--dnis", "1", "--at", "soon", database_url=seeded
    )
    assert code == 1 and "--at 'soon'" in err


@pytest.mark.parametrize(
    ("variable", "value"),
    [("CTI_AGI_BIND", "4573"), ("CTI_ROUTE_BUDGET_MS", "fast"), ("CTI_LOG_FORMAT", "xml")],
)
async def test_a_bad_setting_stops_start_up_naming_the_variable(variable, value):
    code, _, err = await cti(
        "serve", database_url="postgresql://x@127.0.0.1/x", **{variable: value}
    )
    assert code == 1
    assert err.startswith(f"cti: configuration: {variable}=")


async def test_seed_demo_creates_the_demo_agents_and_a_supervisor(empty_database_url):
    """The demo's sidebar users: agent2001-2006 on the phones, and a supervisor for the
    team view; all with CTI_DEMO_PASSWORD, named in the output."""
    from cti.screenpop.auth import verify_password

    code, _, err = await cti("db", "migrate", database_url=empty_database_url)
    assert code == 0, err
    password = "demo password for the test"
    code, out, err = await cti(
        "db", "seed-demo", "--customers", "10",
        database_url=empty_database_url, CTI_DEMO_PASSWORD=password,
    )  # fmt: skip
    assert code == 0, err
    assert "supervisor" in out and "agent2001" in out
    conn = await asyncpg.connect(empty_database_url)
    try:
        rows = await conn.fetch("SELECT username, endpoint, role, password_hash FROM agents")
    finally:
        await conn.close()
    users = {row["username"]: row for row in rows}
    assert set(users) == {f"agent200{n}" for n in range(1, 7)} | {"supervisor"}
    assert users["supervisor"]["role"] == "supervisor"
    assert {users[f"agent200{n}"]["role"] for n in range(1, 7)} == {"agent"}
    assert users["agent2004"]["endpoint"] == "PJSIP/2004"
    # No queue rings the supervisor's endpoint.
    assert not users["supervisor"]["endpoint"].startswith("PJSIP/200")
    assert verify_password(password, users["supervisor"]["password_hash"])
