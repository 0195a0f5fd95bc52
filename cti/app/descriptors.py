"""The descriptor table at start-up: raised to the hard limit, and the connection caps
fitted to it (:func:`cti.net.admission.fit_caps`), so that idle HTTP connections can
never take the descriptors FastAGI needs to accept a call."""

from __future__ import annotations

import dataclasses
import resource

import structlog

from cti.config import Config
from cti.net.admission import fit_caps

log = structlog.get_logger(__name__)


def raise_descriptor_limit() -> int:
    """RLIMIT_NOFILE's soft limit raised to the hard one (services commonly start with a
    soft 1,024); the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= soft:
        log.info("descriptor limit", nofile=soft, hard=hard)
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("descriptor limit not raised", nofile=soft, hard=hard, error=repr(exc))
        return soft
    log.info("descriptor limit raised", nofile=hard, was=soft)
    return hard


def fit_to_descriptors(config: Config, *, routing: bool, sidebar: bool, descriptors: int) -> Config:
    """``config`` with its FastAGI and HTTP caps lowered to fit ``descriptors``; a
    warning says so when they are."""
    agi, http = fit_caps(
        descriptors,
        config.agi_max_connections if routing else None,
        config.http_max_connections if sidebar else None,
    )
    fitted = dataclasses.replace(
        config,
        agi_max_connections=agi if agi is not None else config.agi_max_connections,
        http_max_connections=http if http is not None else config.http_max_connections,
    )
    if fitted != config:
        log.warning(
            "connection caps lowered to fit the descriptor limit",
            nofile=descriptors,
            agi_max_connections=fitted.agi_max_connections if routing else None,
            http_max_connections=fitted.http_max_connections if sidebar else None,
            configured_agi=config.agi_max_connections,
            configured_http=config.http_max_connections,
        )
    return dataclasses.replace(
        fitted,
        agi_max_per_address=min(fitted.agi_max_per_address, fitted.agi_max_connections),
        http_max_per_address=_per_address_in_proportion(
            config.http_max_per_address, config.http_max_connections, fitted.http_max_connections
        ),
    )


def _per_address_in_proportion(per_address: int, configured: int, fitted: int) -> int:
    """The HTTP per-address cap keeps its share of a lowered global cap: 500 of 2,000
    becomes 60 of 240 (one address cannot hold every slot with requests in flight, which
    the idle eviction cannot free), while a reverse proxy's 2,000 of 2,000 becomes 240
    of 240. FastAGI's is only clamped: its one peer is usually the Asterisk host."""
    if fitted >= configured:
        return min(per_address, fitted)
    return max(1, min(fitted, -(-per_address * fitted // configured)))
