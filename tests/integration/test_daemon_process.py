"""``cti serve`` as a process: JSON logs that carry the call id, and a clean SIGTERM."""

from __future__ import annotations

import asyncio
import os
import sys

from tests.conftest import REDIS_URL
from tests.fakes.asterisk_agi import agi_call
from tests.processes import free_port, json_log, killed_on_exit, stop
from tests.waiting import until


async def test_serve_logs_json_per_call_and_stops_cleanly(seeded, tmp_path, redis_client):
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cti", "serve",
        stderr=asyncio.subprocess.PIPE,
        env={
            **os.environ, "CTI_DATABASE_URL": seeded, "CTI_REDIS_URL": REDIS_URL,
            "CTI_AGI_BIND": f"127.0.0.1:{port}", "CTI_LOG_FORMAT": "json",
            "CTI_PLAN_CACHE": str(tmp_path / "plan.toml"),
        },
    )  # fmt: skip
    async with killed_on_exit(process):

        async def routed_by_rule():
            try:
                result = await agi_call("127.0.0.1", port, callerid="2120000002", dnid="5550100")
            except OSError:
                return None
            return result if result.var("CTI_RULE") == "gold" else None

        result = await until(routed_by_rule, within_s=15, every_s=0.1)
        call_id = result.var("CTI_CALL_ID")
        stderr = await stop(process, within_s=15)
    assert process.returncode == 0
    lines = json_log(stderr)  # every line is JSON
    routed = [line for line in lines if line.get("call_id") == call_id]
    assert len(routed) == 1
    assert routed[0]["event"] == "call routed"
    assert (routed[0]["rule"], routed[0]["queue"], routed[0]["level"]) == (
        "gold",
        "support",
        "info",
    )
    stopped = [line for line in lines if line["event"] == "cti stopped"]
    assert stopped and stopped[0]["unwritten"] == 0
