"""The hosts of a multi-host ``CTI_DATABASE_URL``, and which to try first (pure: no sockets).

asyncpg reads ``postgresql://h1:5432,h2:5432/cti?target_session_attrs=read-write``
itself and tries the hosts in order, but its connect timeout covers them all together:
a first host that drops packets without an answer uses it up and the second is never
tried. :mod:`cti.db.connect` therefore hands asyncpg one host at a time, each with its
own share of the time; this module says which hosts a URL lists and in which order to
try them.

Only the host list is read here, in the two spellings libpq and asyncpg share: in the
authority (``h1:5432,[::1]:5433,h3``, percent-encoded) or, when that is empty, in the
query (``?host=h1,/run/postgresql&port=5432,5433``). Everything else (user, password,
database, ``sslmode``, ``target_session_attrs``...) stays in the URL for asyncpg to read,
as before: each attempt passes the whole URL with ``host=``/``port=`` overriding its
hosts. A host without a port gets ``None``: asyncpg's own default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

#: How long a host that was skipped (unreachable, timed out, or the wrong role: a
#: standby for ``read-write``) goes to the back of the list. pgjdbc's
#: ``hostRecheckSeconds`` does the same (10 s there); ours is longer because each
#: retry of a black-holed host costs a new connection its share of the timeout.
RECHECK_S = 30.0


@dataclass(frozen=True, slots=True)
class DatabaseHost:
    """One entry of the list: a name, an address (IPv6 without brackets) or a Unix
    socket directory; ``port`` ``None`` is asyncpg's default (``PGPORT`` or 5432)."""

    host: str
    port: int | None


def split_hosts(url: str) -> tuple[DatabaseHost, ...] | None:
    """The hosts to try one by one, in the URL's order; ``None`` when the URL is to be
    handed to asyncpg whole, as before: a single host (or none: ``PGHOST``, the local
    socket), a form we do not read (a service file, mismatched ports: asyncpg reports
    those), or ``target_session_attrs=prefer-standby``, which needs every host seen
    together (it falls back to a primary only when no host is a standby)."""
    try:
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        authority = parts.netloc.partition("@")[2] if "@" in parts.netloc else parts.netloc
        hosts = _hosts(authority, query)
    except ValueError:
        return None
    if hosts is None or len(hosts) < 2 or query.get("target_session_attrs") == "prefer-standby":
        return None
    return hosts


def _hosts(authority: str, query: dict[str, str]) -> tuple[DatabaseHost, ...] | None:
    if authority:
        return tuple(_host(spec, unquote_it=True) for spec in authority.split(","))
    if not query.get("host"):
        return None
    specs = query["host"].split(",")
    if "port" not in query:
        return tuple(_host(spec, unquote_it=False) for spec in specs)
    ports = [int(p) for p in query["port"].split(",")]
    if len(ports) == 1:
        ports *= len(specs)
    if len(ports) != len(specs):
        return None
    return tuple(
        DatabaseHost(_host(spec, unquote_it=False).host, port)
        for spec, port in zip(specs, ports, strict=True)
    )


def _host(spec: str, *, unquote_it: bool) -> DatabaseHost:
    """One ``host[:port]``, ``[v6]:port`` or ``/socket/dir``, as asyncpg splits it."""
    if not spec:
        raise ValueError("empty host")
    if spec.startswith("/"):
        return DatabaseHost(spec, None)
    if spec.startswith("["):
        address, bracket, rest = spec[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid IPv6 host {spec!r}")
        port = rest[1:]
    else:
        address, _, port = spec.partition(":")
    if unquote_it:
        address, port = unquote(address), unquote(port)
    return DatabaseHost(address, int(port) if port else None)


@dataclass(slots=True)
class SkippedHosts:
    """Hosts skipped lately, tried after the others for :data:`RECHECK_S`: once the
    first host has been found dead (or a standby), the next connections go straight to
    the one that worked instead of paying for the dead one again each time."""

    recheck_s: float = RECHECK_S
    _since: dict[DatabaseHost, float] = field(default_factory=dict)

    def order(self, hosts: tuple[DatabaseHost, ...], now: float) -> tuple[DatabaseHost, ...]:
        """``hosts`` with the ones skipped within ``recheck_s`` moved to the back, each
        group in the URL's order (the operator's preference)."""
        recent = {h for h, at in self._since.items() if now - at < self.recheck_s}
        return tuple(h for h in hosts if h not in recent) + tuple(h for h in hosts if h in recent)

    def skipped(self, host: DatabaseHost, now: float) -> None:
        self._since[host] = now

    def connected(self, host: DatabaseHost) -> None:
        self._since.pop(host, None)
