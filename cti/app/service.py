"""``cti serve`` and ``cti screenpop``: one composition root for both.

A :class:`Service` opens its connections, wires the components its :class:`Role`
asks for and starts them in an order that lets each find what it hands work to
already running (the call data, the call following, the sidebar, FastAGI last), runs
until told to stop, then stops everything in one order (:mod:`cti.app.supervisor`).

* ``cti serve`` (:func:`daemon_service`): routing over FastAGI; call following and
  publishing when AMI is enabled; the sidebar's API when HTTP is enabled.
* ``cti screenpop`` (:func:`screenpop_service`): the sidebar's API alone, with an AMI
  connection of its own for call control that publishes nothing.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import Any

import asyncpg
import redis.asyncio as redis
import structlog

from cti.agi.server import AgiLimits, AgiServer
from cti.app.calldata import CallData, open_call_data
from cti.app.descriptors import fit_to_descriptors, raise_descriptor_limit
from cti.app.following import CallFollowing, follow_calls, observe_calls
from cti.app.resources import postgres_pool, redis_client
from cti.app.routing import Routing, open_routing, watch_plan
from cti.app.sidebar import open_metrics_port, open_sidebar
from cti.app.supervisor import WRITER_GRACE_S, Supervisor, run_until_signalled
from cti.app.wallboard import open_wallboard
from cti.batch_writer import BatchWriter
from cti.calls.lease import instance_id
from cti.config import Config, ConfigError
from cti.db.dead_letters import PgDeadLetters
from cti.router import Router
from cti.routing.plan_watcher import PlanWatcher
from cti.routing.table import RoutingTable
from cti.screenpop.app import HttpServer
from cti.screenpop.health import Probes
from cti.screenpop.metrics import Metrics
from cti.screenpop.ws import reader_factory
from cti.wallboard.engine import WallboardEngine

log = structlog.get_logger(__name__)


class Following(enum.Enum):
    #: Follow calls and publish their events while holding the lease.
    PUBLISH = "publish"
    #: Follow calls for call control only.
    OBSERVE = "observe"


@dataclass(frozen=True, slots=True)
class Role:
    """What one process runs. ``name`` starts its log lines (``cti stopped``).
    ``record_writers``: records the database refuses for good are set aside in it (dead
    letters), and the writers' figures are in ``/metrics`` and ``/readyz``."""

    name: str
    routing: bool
    following: Following | None
    sidebar: bool
    record_writers: bool


def daemon_role(config: Config) -> Role:
    return Role(
        name="cti",
        routing=True,
        following=Following.PUBLISH if config.ami_enabled else None,
        sidebar=config.http_enabled,
        record_writers=True,
    )


def screenpop_role(config: Config) -> Role:
    if not config.session_secret:
        raise ConfigError("CTI_SESSION_SECRET is not set: cti screenpop needs it to sign sessions")
    return Role(
        name="screenpop",
        routing=False,
        following=Following.OBSERVE if config.ami_enabled else None,
        sidebar=True,
        record_writers=False,
    )


@dataclass(slots=True)
class Parts:
    """What a started service is made of (tests and the stop log look at it)."""

    pool: asyncpg.Pool
    redis: redis.Redis
    metrics: Metrics
    call_data: CallData
    calls: CallFollowing | None = None
    http: HttpServer | None = None
    metrics_port: HttpServer | None = None
    routing: Routing | None = None
    wallboard: WallboardEngine | None = None

    def record_writers(self) -> list[BatchWriter[Any]]:
        """Every writer of records (the call events' outbox is not one of them)."""
        writers: list[BatchWriter[Any]] = []
        if self.routing is not None:
            writers += self.routing.writers
        writers.append(self.call_data.history)
        if self.calls is not None:
            writers += self.calls.writers
        return writers

    @property
    def backlog(self) -> int:
        """Records and call events not written yet."""
        outbox = self.calls.backlog if self.calls is not None else 0
        return outbox + sum(writer.backlog for writer in self.record_writers())


class Service:
    """One process: nothing is opened until :meth:`start`; :meth:`shutdown` closes all
    of it (:meth:`run` does both, around waiting for :attr:`stop`)."""

    def __init__(self, config: Config, role: Role, *, agi_limits: AgiLimits | None = None) -> None:
        self.config = config
        self.role = role
        self.stop = asyncio.Event()
        self._agi_limits = agi_limits
        self._supervisor = Supervisor()
        self._parts: Parts | None = None

    async def start(self) -> None:
        """Open, wire and start everything; return once FastAGI/HTTP listen."""
        try:
            self._parts = await self._open()
        except BaseException:
            await self._supervisor.close()
            raise

    async def _open(self) -> Parts:
        config, role, supervisor = self.config, self.role, self._supervisor
        pool = await supervisor.resource(postgres_pool(config))
        client = await supervisor.resource(redis_client(config))
        dead = PgDeadLetters(pool) if role.record_writers else None
        call_data = open_call_data(
            supervisor, config, pool=pool, redis_client=client, dead_letters=dead
        )
        metrics = Metrics()
        parts = Parts(pool, client, metrics, call_data)

        def watch_writers() -> None:  # every writer opened so far
            if role.record_writers:
                metrics.watch_writers([writer.stats for writer in parts.record_writers()])

        owner = config.instance_id or instance_id()
        if role.following is Following.PUBLISH:
            parts.calls = await follow_calls(
                supervisor,
                config,
                owner=owner,
                pool=pool,
                redis_client=client,
                call_data=call_data,
                dead_letters=dead,
            )
        elif role.following is Following.OBSERVE:
            parts.calls = await observe_calls(supervisor, config, owner=owner)
        if parts.calls is not None:
            for name, source in parts.calls.ami_sources().items():
                metrics.watch_ami(source, pbx=name)
        watch_writers()
        plan = watch_plan(supervisor, config) if role.routing or role.sidebar else None
        if role.sidebar:
            assert plan is not None
            parts.http = await open_sidebar(
                supervisor,
                config,
                pool=pool,
                redis_client=client,
                call_data=call_data.service,
                metrics=metrics,
                calls=parts.calls,
                plan=plan,
            )
        if config.metrics_bind is not None:
            amis = parts.calls.amis if parts.calls is not None else None
            probes = Probes(pool, client, metrics, amis)
            parts.metrics_port = await open_metrics_port(supervisor, config, metrics, probes)
        if role.routing:
            assert plan is not None
            parts.routing = await open_routing(
                supervisor,
                config,
                pool=pool,
                plan=plan,
                call_data=call_data,
                metrics=metrics,
                dead_letters=dead,
                agi_limits=self._agi_limits,
            )
            for followed in parts.calls.pbxes if parts.calls is not None else ():
                if followed.agents is not None:  # every PBX's: the queues' wrapup_s
                    followed.agents.plan.watch(parts.routing.plan)
            watch_writers()
        if parts.calls is not None and parts.calls.leadership is not None:
            plan = parts.routing.plan if parts.routing is not None else None
            parts.wallboard = open_wallboard(
                supervisor,
                config,
                redis_client=client,
                open_reader=reader_factory(client, block_ms=1000),
                owner=owner,
                table=lambda: plan.table if plan is not None else RoutingTable(),
            )
        return parts

    async def shutdown(self, writer_grace_s: float = WRITER_GRACE_S) -> None:
        """Stop accepting work, drain the writers, log off AMI, close the pools."""
        log.info(f"{self.role.name} stopping")
        self.stop.set()
        await self._supervisor.close(writer_grace_s)
        facts: dict[str, Any] = {}
        if self._parts is not None:
            if self._parts.routing is not None:
                facts["routed"] = self._parts.routing.router.routed
            facts["unwritten"] = self._parts.backlog
        log.info(f"{self.role.name} stopped", **facts)

    async def run(self) -> None:
        await self.start()
        try:
            await self.stop.wait()
        finally:
            await self.shutdown()

    # -- what tests and tools look at once started ---------------------------------------
    @property
    def parts(self) -> Parts:
        if self._parts is None:
            raise RuntimeError("the service is not started")
        return self._parts

    @property
    def pool(self) -> asyncpg.Pool:
        return self.parts.pool

    @property
    def metrics(self) -> Metrics:
        return self.parts.metrics

    @property
    def http(self) -> HttpServer | None:
        return self.parts.http

    @property
    def routing(self) -> Routing:
        if self.parts.routing is None:
            raise RuntimeError(f"{self.role.name} does not route calls")
        return self.parts.routing

    @property
    def agi(self) -> AgiServer:
        return self.routing.agi

    @property
    def router(self) -> Router:
        return self.routing.router

    @property
    def plan(self) -> PlanWatcher:
        return self.routing.plan


def daemon_service(config: Config, agi_limits: AgiLimits | None = None) -> Service:
    return Service(config, daemon_role(config), agi_limits=agi_limits)


def screenpop_service(config: Config) -> Service:
    return Service(config, screenpop_role(config))


async def _run(service: Service) -> None:
    await run_until_signalled(service.stop, service.run)


def fitted(config: Config, role: Role) -> Config:
    """The descriptor table raised to its hard limit, and the caps fitted to it."""
    descriptors = raise_descriptor_limit()
    return fit_to_descriptors(
        config, routing=role.routing, sidebar=role.sidebar, descriptors=descriptors
    )


async def serve(config: Config) -> None:
    """``cti serve``."""
    await _run(daemon_service(fitted(config, daemon_role(config))))


async def serve_screenpop(config: Config) -> None:
    """``cti screenpop``."""
    await _run(screenpop_service(fitted(config, screenpop_role(config))))
