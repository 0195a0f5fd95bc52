"""``CTI_REDIS_URL`` in its Sentinel form, parsed (pure: no sockets).

redis-py reads ``redis://``, ``rediss://`` and ``unix://`` URLs itself but has no URL
for Sentinel; :class:`redis.asyncio.sentinel.Sentinel` takes a list of sentinels and
:meth:`~redis.asyncio.sentinel.Sentinel.master_for` a service name. Our form carries
the same, in the spelling Celery and Kombu also read::

    redis+sentinel://[[username]:password@]host1:26379,host2:26379/<service>[/<db>]

* the hosts are the **sentinels** (port 26379 if left out; ``[::1]:26379`` for IPv6);
* ``<service>`` is the name the sentinels monitor (``sentinel monitor <service> ...``);
* ``<db>`` is the database number on the master (0 if left out);
* the user and password are the **master's** (``requirepass``/ACL of the Redis data
  nodes), percent-encoded like any URL's. The sentinels' own password, if they have one
  (``requirepass`` in sentinel.conf), is a separate variable,
  ``CTI_REDIS_SENTINEL_PASSWORD``: the two are often different.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

SCHEME = "redis+sentinel"
DEFAULT_SENTINEL_PORT = 26379
MAX_SENTINELS = 16
#: What ``sentinel monitor`` accepts in practice, and nothing that needs quoting.
SERVICE = re.compile(r"^[A-Za-z0-9._-]{1,64}\Z")
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]{1,253})(?::(\d{1,5}))?\Z")


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    """Where the sentinels are, which master to ask them for, and how to log in to it."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def is_sentinel_url(raw: str) -> bool:
    return raw.lower().startswith(SCHEME + "://")


def parse_sentinel_url(raw: str) -> SentinelUrl:
    """Parse the form above; :class:`ValueError` says what is wrong (never the password)."""
    if not is_sentinel_url(raw):
        raise ValueError(f"expected {SCHEME}://")
    rest = raw[len(SCHEME) + 3 :]
    if "?" in rest or "#" in rest:
        raise ValueError("no query or fragment is read; options go in their own variables")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username: str | None = None
    password: str | None = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
        if not colon:  # redis://secret@host is read as a password by redis-py too
            username, password = None, unquote(user)
    sentinels = tuple(_sentinel(h) for h in hosts.split(","))
    if len(sentinels) > MAX_SENTINELS:
        raise ValueError(f"at most {MAX_SENTINELS} sentinels")
    parts = path.split("/") if path else []
    if not parts or not SERVICE.match(parts[0]):
        raise ValueError("expected /<service name> after the sentinels (letters, digits, _ . -)")
    if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError("expected /<service name>/<database number>")
    db = int(parts[1]) if len(parts) == 2 else 0
    if db > 65_535:
        raise ValueError("database number too large")
    return SentinelUrl(sentinels, parts[0], db, username, password)


def _sentinel(raw: str) -> tuple[str, int]:
    match = _HOST.match(raw.strip())
    if not match:
        raise ValueError(f"sentinel {raw!r}: expected host:port")
    port = int(match.group(2)) if match.group(2) else DEFAULT_SENTINEL_PORT
    if not 0 < port < 65536:
        raise ValueError(f"sentinel {raw!r}: port must be between 1 and 65535")
    return match.group(1).strip("[]"), port
