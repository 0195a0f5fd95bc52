"""``asyncpg.connect`` for a URL listing several hosts: each host its own share of the time.

asyncpg's ``timeout`` covers every host of the list together, so a first host that
swallows packets (a machine that died hard, a firewall that drops) uses it all up and
the second host is never tried: after such a failover every new connection failed.
Here each host is tried alone, in turn, with ``timeout / len(hosts)``: the whole attempt
still ends within ``timeout``, as before, and a black hole costs only its share (2.5 s
of the pool's 5 s with two hosts). Hosts skipped lately are tried last
(:class:`cti.pg_hosts.SkippedHosts`), so the connections after the first go straight
to the host that worked.

Per host, asyncpg itself connects and checks ``target_session_attrs`` (a standby or a
``default_transaction_read_only`` server is refused for ``read-write``), with the URL's
other parameters as ever: we pass the whole URL and override only ``host``/``port``,
rather than rebuild a URL per host or call asyncpg's private parser. A URL with one
host goes to asyncpg untouched.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import structlog

from cti.pg_hosts import SkippedHosts, split_hosts

log = structlog.get_logger(__name__)

#: Errors that mean "this host, not the next": unreachable, refused, timed out, closed
#: on us, starting up or shutting down, or the wrong role for ``target_session_attrs``.
#: Any other error (a wrong password, no such database) is the same on every host and
#: is raised at once, as asyncpg does.
NEXT_HOST_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # TimeoutError, ConnectionRefusedError, socket.gaierror among them
    asyncpg.TargetServerAttributeNotMatched,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
)


class HostsConnect:
    """A drop-in for ``asyncpg.connect`` (and the pool's ``connect=``) that remembers
    which hosts were skipped lately; one per pool or per long-lived connection owner."""

    def __init__(self, skipped: SkippedHosts | None = None) -> None:
        self._skipped = skipped or SkippedHosts()

    # `timeout` is asyncpg's connect() signature, which the pool calls us with.
    async def __call__(self, dsn: str, *, timeout: float = 60, **kwargs: Any) -> Any:  # noqa: ASYNC109
        hosts = split_hosts(dsn)
        if hosts is None:
            return await asyncpg.connect(dsn, timeout=timeout, **kwargs)
        share = timeout / len(hosts)
        last_error: BaseException | None = None
        for host in self._skipped.order(hosts, time.monotonic()):
            try:
                conn = await asyncpg.connect(
                    dsn, host=host.host, port=host.port, timeout=share, **kwargs
                )
            except NEXT_HOST_ERRORS as exc:
                self._skipped.skipped(host, time.monotonic())
                log.warning(
                    "database host skipped", host=host.host, port=host.port, error=repr(exc)
                )
                last_error = exc
                continue
            self._skipped.connected(host)
            return conn
        assert last_error is not None  # split_hosts lists at least two
        raise last_error
