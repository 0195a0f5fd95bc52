"""A running daemon (the real ``cti serve``: :func:`cti.app.service.daemon_service`) on
the test database."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cti.agi.server import AgiLimits
from cti.app.service import Service, daemon_service
from cti.config import Config, HostPort
from cti.demo.seed import seed_demo
from tests.conftest import REDIS_URL
from tests.fakes.asterisk_agi import AgiCallResult, agi_call


@pytest.fixture
async def seeded(db, database_url) -> str:
    await seed_demo(db, customers=2_000)
    return database_url


#: Route budget of the tests' daemons: a loaded machine's PostgreSQL can take longer than
#: the default's 150 ms lookup, and a call that failed open is not what most tests are
#: about (test_fail_open sets its own, shorter one).
ROUTE_BUDGET_MS = 5000
#: The FastAGI deadlines: the test's fake Asterisk shares the daemon's event loop, so a
#: loaded machine pauses both; only a test about the deadlines may race them.
AGI_LIMITS = AgiLimits(header_timeout_s=10, reply_timeout_s=10)


@pytest.fixture
def config(seeded, tmp_path) -> Config:
    return Config(
        database_url=seeded,
        redis_url=REDIS_URL,
        agi_bind=HostPort("127.0.0.1", 0),
        plan_cache=str(tmp_path / "plan-cache.toml"),
        route_budget_ms=ROUTE_BUDGET_MS,
    )


@dataclasses.dataclass
class RunningDaemon:
    daemon: Service

    @property
    def port(self) -> int:
        return self.daemon.agi.port

    async def call(self, **env: Any) -> AgiCallResult:
        return await agi_call("127.0.0.1", self.port, **env)


async def start_daemon(config: Config, wait_for_plan: bool = True) -> RunningDaemon:
    daemon = daemon_service(config, AGI_LIMITS)
    await daemon.start()
    if wait_for_plan:
        async with asyncio.timeout(5):
            await daemon.plan.loaded.wait()
    return RunningDaemon(daemon)


@pytest.fixture
async def running(config, redis_client) -> AsyncIterator[RunningDaemon]:
    running = await start_daemon(config)
    yield running
    await running.daemon.shutdown(writer_grace_s=2)
