"""``cti screenpop``: the sidebar's API as a process of its own, without FastAGI.

For running the API apart from the routers (more of them behind a balancer, or a
restart of one without touching the other). It needs PostgreSQL and Redis, and an AMI
connection for call control and pausing. That connection follows AMI events into a
call model of its own, because call control acts on the agent's own leg and must find
it, but it publishes nothing: the daemons' lease holder does that, and this process
reads what it published.
"""

from __future__ import annotations

import asyncio

import structlog

from cti.ami.client import AmiClient
from cti.batch_writer import BatchWriter
from cti.calldata.history import history_batch_writer
from cti.calldata.service import CallDataService
from cti.calldata.store import CallDataStore
from cti.calls.control import CallControl
from cti.calls.lease import instance_id
from cti.calls.model import CallModel
from cti.calls.publisher import EventPublisher
from cti.calls.sink import CallModelSink
from cti.config import Config, ConfigError
from cti.daemon import (
    close_pool,
    create_ami_client,
    create_pool,
    create_redis,
    run_until_signalled,
)
from cti.screenpop.app import HttpServer, build_app
from cti.screenpop.auth import Sessions
from cti.screenpop.metrics import AmiSource, Metrics

log = structlog.get_logger(__name__)


class ScreenpopService:
    def __init__(self, config: Config) -> None:
        if not config.session_secret:
            raise ConfigError(
                "CTI_SESSION_SECRET is not set: cti screenpop needs it to sign sessions"
            )
        self.config = config
        self.stop = asyncio.Event()
        self.pool = create_pool(config)
        self.redis = create_redis(config)
        self.history = BatchWriter("call-data-history", history_batch_writer(self.pool))
        store = CallDataStore(
            self.redis, config.call_data_ttl_s, pool=self.pool, history=self.history
        )
        events = EventPublisher(self.redis, ttl_s=config.call_data_ttl_s)
        self.metrics = Metrics()
        self.ami: AmiClient | None = None
        control = None
        if config.ami_enabled:
            model = CallModel()
            self.ami = create_ami_client(
                config,
                CallModelSink(model, on_effects=lambda _effects: None),
                id_prefix=f"cti-screenpop.{config.instance_id or instance_id()}",
            )
            control = CallControl(self.ami, model)
            ami = self.ami
            self.metrics.watch_ami(AmiSource(lambda: ami.is_connected, lambda: ami.stats.events))
        self.http = HttpServer(
            build_app(
                pool=self.pool,
                redis_client=self.redis,
                call_data=CallDataService(store, events),
                sessions=Sessions(config.session_secret.encode(), config.session_ttl_s),
                metrics=self.metrics,
                control=control,
                ami=self.ami,
            )
        )
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.pool
        await self.http.start(self.config.http_bind.host, self.config.http_bind.port)
        self._tasks = [asyncio.create_task(self.history.run(self.stop), name="history-writer")]
        if self.ami is not None:
            self._tasks.append(asyncio.create_task(self.ami.run(self.stop), name="ami"))

    async def shutdown(self, grace_s: float = 10) -> None:
        await self.http.stop()
        self.stop.set()
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await close_pool(self.pool)
        await self.redis.aclose()
        log.info("screenpop stopped", unwritten=self.history.backlog)

    async def run(self) -> None:
        await self.start()
        try:
            await self.stop.wait()
        finally:
            await self.shutdown()


async def serve_screenpop(config: Config) -> None:
    await run_until_signalled(ScreenpopService(config))
