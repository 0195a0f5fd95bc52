"""Redis through Sentinel, through the real Asterisk: the master is killed (SIGKILL)
during a transfer, a replica is promoted, and the pop and the call's data still reach
the next agent.

A second daemon (``cti serve``) routes and follows the call with
``CTI_REDIS_URL=redis+sentinel://`` pointing at a private group (tests/sentinel.py: a
master, a replica, three sentinels); the test's sidebar reads through the same URL. The
story is test_call_tracking's (A answers and writes a note, blind transfer to B,
attended transfer to C); after A's note is replicated the master is killed as the blind
transfer starts. Nothing may be lost: Redis keeps everything (the replica had it), and
the events of the transfer are published once the new master answers.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from cti.app.resources import redis_client
from cti.config import load_config
from tests.e2e.ami import Ami
from tests.e2e.conftest import E2ESetup, daemon_env
from tests.e2e.stack import Daemon, free_port
from tests.e2e.test_call_tracking import check_timeline, follow_the_call
from tests.sentinel import FAILOVER_S, replicated, sentinel_group
from tests.waiting import until

pytestmark = pytest.mark.e2e

#: After A's note: the blind transfer is sent right away; the kill lands while the
#: transfer is under way (or just before or after it: the test holds either way).
KILL_AFTER_S = 0.2


async def test_the_master_dies_during_a_transfer_and_the_next_agent_still_gets_it_all(
    sandbox: E2ESetup, ami: Ami, agents, place_calls, agi_target
):
    workdir = sandbox.workdir / f"sentinel-{uuid.uuid4().hex[:6]}"
    workdir.mkdir()
    async with sentinel_group(workdir) as group:
        url = group.url()
        port = free_port()
        env = daemon_env(sandbox, CTI_REDIS_URL=url, CTI_INSTANCE_ID="sentinel")
        env["CTI_PLAN_CACHE"] = str(workdir / "plan.toml")
        second = await Daemon.start(
            port=port, env=env, log=workdir / "daemon.log", ready_file=workdir / "plan.toml"
        )
        killer: list[asyncio.Task[None]] = []
        try:
            await agi_target(f"127.0.0.1:{port}")
            db = await asyncpg.connect(sandbox.database_url)
            async with redis_client(load_config({"CTI_REDIS_URL": url})) as client:

                async def kill_during_the_transfer(call_id: str, version: int) -> None:
                    await until(
                        lambda: db.fetchval(
                            "SELECT count(*) FROM call_data_history"
                            " WHERE call_id = $1 AND version = $2",
                            uuid.UUID(call_id),
                            version,
                        ),
                        within_s=10,
                    )
                    assert await replicated(client)  # A's note is on the replica

                    async def kill() -> None:
                        await asyncio.sleep(KILL_AFTER_S)
                        group.kill_master()
                        await until(group.promoted, within_s=FAILOVER_S, every_s=0.2)

                    killer.append(asyncio.create_task(kill()))

                try:
                    call_id = await follow_the_call(
                        sandbox,
                        client,
                        ami,
                        agents,
                        place_calls,
                        mid_call=kill_during_the_transfer,
                    )
                finally:
                    await db.close()
                await asyncio.wait_for(killer[0], FAILOVER_S)
                assert await group.promoted()
                server = await client.info("server")
                assert server["tcp_port"] == group.replica_port
            await check_timeline(sandbox, call_id)
        finally:
            for task in killer:
                task.cancel()
            await second.stop()
