"""The wallboard's engine (:mod:`cti.wallboard.engine`) and its own lease.

Whichever instance holds ``cti:wallboard:leader`` counts (the lease runs here with the
AMI lease's TTL; any instance may hold it, whatever PBX it leads: the wallboard counts
the events of every PBX once).

Its time zone is ``CTI_TIMEZONE``, else the routing plan's first dialled number's, else
UTC; its thresholds are each queue's in the plan (``sl_threshold_s``,
``short_abandon_s``) and a pause's maximum its reason's (``[[pause_reasons]]``). All
are read from the plan as it is now, so a plan reload applies at once.
"""

from __future__ import annotations

from collections.abc import Callable
from zoneinfo import ZoneInfo

import redis.asyncio as redis
import structlog

from cti.app.supervisor import Supervisor
from cti.calls.lease import Lease
from cti.config import Config
from cti.routing.table import RoutingTable
from cti.wallboard.engine import WallboardEngine
from cti.wallboard.figures import Figures, QueueTargets
from cti.wallboard.store import LEASE_KEY, WallboardStore

log = structlog.get_logger(__name__)

UTC = ZoneInfo("UTC")


def centre_timezone(config: Config, table: Callable[[], RoutingTable]) -> Callable[[], ZoneInfo]:
    if config.timezone:
        fixed = ZoneInfo(config.timezone)
        return lambda: fixed

    def from_plan() -> ZoneInfo:
        first = next(iter(table().numbers.values()), None)
        return first.timezone if first is not None else UTC

    return from_plan


def open_wallboard(
    supervisor: Supervisor,
    config: Config,
    *,
    redis_client: redis.Redis,
    open_reader: Callable[[], redis.Redis],
    owner: str,
    table: Callable[[], RoutingTable],
) -> WallboardEngine:
    timezone = centre_timezone(config, table)

    def targets(queue: str) -> QueueTargets:
        spec = table().queue(queue)
        if spec is None:
            return QueueTargets()
        return QueueTargets(spec.sl_threshold_s, spec.short_abandon_s)

    def pause_max(reason: str) -> float | None:
        found = next((r for r in table().pause_reasons if r.name == reason), None)
        return found.max_minutes if found is not None else None

    def changed(held: bool) -> None:
        log.info("wallboard lease " + ("acquired" if held else "lost"), owner=owner)

    ttl_s = config.ami_lease_ttl_s
    lease = Lease(
        redis_client, owner, key=LEASE_KEY, ttl_s=ttl_s, renew_s=ttl_s / 5, on_change=changed
    )
    figures = Figures(timezone(), targets, pause_max)
    engine = WallboardEngine(
        WallboardStore(redis_client, lease_key=LEASE_KEY),
        open_reader,
        owner,
        figures,
        is_leader=lambda: lease.held,
        timezone=timezone,
    )
    supervisor.background("wallboard-lease", lease.run)
    supervisor.background("wallboard", engine.run)
    return engine
