"""``cti demo call`` (``scripts/demo call``) through the real Asterisk: one SIPp call
from the trunk, answered by a SIPp agent, told back from what the daemon recorded."""

from __future__ import annotations

import asyncio
import os
import re
import sys

import pytest

from tests.e2e.ami import Ami
from tests.e2e.conftest import E2ESetup

pytestmark = pytest.mark.e2e


async def test_demo_call_places_one_call_and_tells_how_it_went(ami: Ami, agents, sandbox: E2ESetup):
    await agents.start(2001, 2002, 2003)  # the support queue
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cti", "demo", "call", "2120000002", "5550100", "--hold", "4",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "CTI_DATABASE_URL": sandbox.database_url},
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[:4] == [
        "call      2120000002 -> 5550100",
        "route     queue support (priority 10)",
        "rule      gold",
        "customer  Alan Turing (gold)",
    ]
    assert re.fullmatch(r"agent     200[123], after \d+\.\d s in the queue", lines[4])
    talk = re.fullmatch(r"talk      (\d+\.\d) s", lines[5])
    # The caller stays 4 s after Asterisk answers; the agent rings 0.3 s first. A call
    # that hung up right after Answer() (the old hint's) would have no talk at all.
    assert talk and 2.0 <= float(talk[1]) <= 4.5, lines


async def test_demo_calls_places_the_list_and_tables_how_each_went(
    ami: Ami, agents, sandbox: E2ESetup, tmp_path
):
    """What ``scripts/demo`` runs for its calls, and what its hint tells to run again."""
    await agents.start(2001, 2002, 2003)
    calls = tmp_path / "calls.csv"
    calls.write_text("SEQUENTIAL\n# a comment\n2120000002;5550100;;\n2120000004;5550100;;balance\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cti", "demo", "calls", "--file", str(calls), "--hold", "3",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "CTI_DATABASE_URL": sandbox.database_url},
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0] == "placing 2 call(s), 2 a second, each caller stays 3 s"
    rows = [line.split("  ") for line in lines[3:5]]
    gold, bronze = ([cell.strip() for cell in row if cell.strip()] for row in rows)
    assert gold[:3] == ["2120000002", "5550100", "Alan Turing"]
    assert gold[7] == "gold" and re.fullmatch(r"200[123]", gold[9]), gold
    assert bronze[2] == "Edsger Dijkstra" and bronze[4] == "selfservice", bronze
    assert bronze[-2:] == ["self-service", "-"], bronze
