"""Configuration, read once from the environment into a frozen dataclass.

Nothing else in the package reads ``os.environ``: the composition root calls
:func:`load_config` and passes the result down. A bad value stops start-up with a
message that names the variable, because a daemon that guesses at its own
configuration misroutes calls quietly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import phonenumbers

from cti.agi.admission import DEFAULT_ALLOW, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_PER_ADDRESS
from cti.net.admission import Network, parse_networks
from cti.pbx import DEFAULT_PBX, Pbx, parse_pbxes
from cti.redis_sentinel import SentinelUrl, is_sentinel_url, parse_sentinel_url
from cti.routing.hours import HoursError, zone
from cti.routing.plan import NAME
from cti.screenpop.connections import (
    DEFAULT_HEADER_TIMEOUT_S,
    DEFAULT_KEEPALIVE_S,
)
from cti.screenpop.connections import DEFAULT_MAX_CONNECTIONS as DEFAULT_HTTP_MAX_CONNECTIONS
from cti.screenpop.connections import DEFAULT_MAX_PER_ADDRESS as DEFAULT_HTTP_MAX_PER_ADDRESS

DEFAULT_PLAN_CACHE = str(Path.home() / ".cache" / "cti" / "routing-plan.toml")
MIN_SESSION_SECRET_BYTES = 32


class ConfigError(ValueError):
    """A configuration variable has a value we cannot use."""


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Config:
    database_url: str = "postgresql://postgres@127.0.0.1:5432/cti"
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: ``redis_url`` parsed, when it is the Sentinel form (``redis+sentinel://``).
    redis_sentinel: SentinelUrl | None = None
    #: The sentinels' own password (sentinel.conf ``requirepass``), not the master's.
    redis_sentinel_password: str = field(default="", repr=False)
    agi_bind: HostPort = HostPort("127.0.0.1", 4573)
    #: FastAGI peers outside these networks are refused at accept: Asterisk sits on the
    #: same host or a private network (default: loopback and the private ranges).
    agi_allow: tuple[Network, ...] = DEFAULT_ALLOW
    #: FastAGI sessions one address may hold at once, and all addresses together.
    agi_max_per_address: int = DEFAULT_MAX_PER_ADDRESS
    agi_max_connections: int = DEFAULT_MAX_CONNECTIONS
    http_bind: HostPort = HostPort("127.0.0.1", 8080)
    #: A connection whose first request's headers are not complete this long after
    #: accept is closed; a kept-alive connection idle this long is closed.
    http_header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    http_keepalive_s: float = DEFAULT_KEEPALIVE_S
    #: HTTP connections at once, all addresses together, and from one address.
    http_max_connections: int = DEFAULT_HTTP_MAX_CONNECTIONS
    http_max_per_address: int = DEFAULT_HTTP_MAX_PER_ADDRESS
    #: Serve /metrics (and /healthz) on this address of its own, not on ``http_bind``.
    metrics_bind: HostPort | None = None
    ami_host: str = "127.0.0.1"
    ami_port: int = 5038
    ami_username: str = "cti"
    ami_secret: str = field(default="", repr=False)
    #: The PBXes followed (``CTI_PBXES``); empty: the one PBX of ``ami_host`` and
    #: friends. Read it through :meth:`pbx_list`, which covers both.
    pbxes: tuple[Pbx, ...] = ()
    route_budget_ms: int = 200
    log_format: str = "console"
    log_level: str = "info"
    default_queue: str = "default"
    default_region: str = "US"
    call_data_ttl_s: int = 86_400
    #: How long a call's data stays in Redis after the call ended (PostgreSQL keeps it).
    call_data_after_end_s: int = 3_600
    #: How long the call-event streams keep an event (supervisors' and agents'): a
    #: sidebar away for less than this resumes where it left off.
    stream_retention_s: int = 3_600
    #: Follow calls over AMI. Off when no AMI secret is configured (routing only).
    ami_enabled: bool = False
    #: This instance's name in the AMI lease (default: host:pid:random).
    instance_id: str = ""
    #: The AMI lease expires this long after its holder stopped renewing it: the time a
    #: standby instance waits before it takes over from a dead leader.
    ami_lease_ttl_s: int = 5
    #: A Ping every this many seconds; no Pong within the same time = half-open socket.
    ami_ping_s: int = 5
    #: Last routing plan read from PostgreSQL, so that a daemon (re)started while the
    #: database is down still knows each number's default queue. Empty: no cache.
    plan_cache: str = DEFAULT_PLAN_CACHE
    #: Serve the sidebar's HTTP API on ``http_bind`` (cti.screenpop). Needs the secret.
    http_enabled: bool = False
    #: Signs the sidebar's session tokens; from the environment only, never logged.
    session_secret: str = field(default="", repr=False)
    #: A session token expires this long after login.
    session_ttl_s: int = 43_200
    #: The centre's time zone: the wallboard's "today" (IANA name). Empty: the first
    #: dialled number's time zone in the routing plan (UTC without one).
    timezone: str = ""

    @property
    def route_budget_s(self) -> float:
        return self.route_budget_ms / 1000

    def pbx_list(self) -> tuple[Pbx, ...]:
        """Every PBX followed, the home PBX first (:mod:`cti.pbx`)."""
        if self.pbxes:
            return self.pbxes
        return (Pbx(DEFAULT_PBX, self.ami_host, self.ami_port, self.ami_username, self.ami_secret),)


def _host_port(name: str, raw: str) -> HostPort:
    host, sep, port = raw.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{name}={raw!r}: expected HOST:PORT")
    return HostPort(host.strip("[]"), _port(name, port))


def _port(name: str, raw: str) -> int:
    port = _int(name, raw)
    if not 0 < port < 65536:
        raise ConfigError(f"{name}={raw!r}: port must be between 1 and 65535")
    return port


def _int(name: str, raw: str, minimum: int | None = None, maximum: int | None = None) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected an integer") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={raw!r}: must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={raw!r}: must be at most {maximum}")
    return value


def _seconds(name: str, raw: str, minimum: float, maximum: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: expected a number of seconds") from None
    if not minimum <= value <= maximum:  # False for nan too
        raise ConfigError(f"{name}={raw!r}: must be between {minimum:g} and {maximum:g} seconds")
    return value


def _url(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in schemes or (not parts.hostname and not parts.path):
        raise ConfigError(f"{name}={raw!r}: expected a URL starting with {' or '.join(schemes)}://")
    return raw


def _redis(raw: str, fields: dict[str, object]) -> None:
    """A plain Redis URL (redis-py reads it) or the Sentinel form (:mod:`cti.redis_sentinel`)."""
    if not is_sentinel_url(raw):
        fields["redis_url"] = _url("CTI_REDIS_URL", raw, ("redis", "rediss", "unix"))
        return
    try:
        fields["redis_sentinel"] = parse_sentinel_url(raw)
    except ValueError as exc:
        shown = raw.split("://", 1)[1].rpartition("@")[2]  # never the password
        raise ConfigError(
            f"CTI_REDIS_URL=redis+sentinel://{shown}: {exc}; expected "
            "redis+sentinel://[:password@]host1:26379,host2:26379/<service>[/<db>]"
        ) from None
    fields["redis_url"] = raw


def redacted_url(url: str) -> str:
    """``url`` for a message or a log: its password (if any) replaced by ``***``. Works
    for every form we accept, several hosts included."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:***@{hosts}{slash}{tail}"


def _networks(name: str, raw: str) -> tuple[Network, ...]:
    try:
        return parse_networks(raw)
    except ValueError as exc:
        raise ConfigError(
            f"{name}={raw!r}: {exc}; expected addresses or networks, comma-separated, "
            "e.g. 127.0.0.1,10.0.0.0/8"
        ) from None


def _choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise ConfigError(f"{name}={raw!r}: expected one of {', '.join(choices)}")
    return value


def _queue_name(name: str, raw: str) -> str:
    value = raw.strip()
    if not NAME.match(value):
        raise ConfigError(
            f"{name}={raw!r}: expected a queue name (letters, digits, _ . -; up to 64)"
        )
    return value


def _region(name: str, raw: str) -> str:
    value = raw.strip().upper()
    if value not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(f"{name}={raw!r}: expected a two-letter region such as US or GB")
    return value


def _session(get: Callable[[str], str | None], fields: dict[str, object]) -> None:
    """The sidebar's API: on by default when a session secret is given."""
    if (raw := get("CTI_SESSION_SECRET")) is not None:
        size = len(raw.encode())
        if size < MIN_SESSION_SECRET_BYTES:
            raise ConfigError(
                f"CTI_SESSION_SECRET=(hidden, {size} bytes): must be at least "
                f"{MIN_SESSION_SECRET_BYTES} bytes; make one with `openssl rand -base64 48`"
            )
        fields["session_secret"] = raw
    if (raw := get("CTI_SESSION_TTL_S")) is not None:
        fields["session_ttl_s"] = _int("CTI_SESSION_TTL_S", raw, minimum=60, maximum=30 * 86_400)
    if (raw := get("CTI_HTTP_ENABLED")) is not None:
        fields["http_enabled"] = _choice("CTI_HTTP_ENABLED", raw, ("yes", "no")) == "yes"
    else:
        fields["http_enabled"] = bool(fields.get("session_secret"))
    if fields["http_enabled"] and not fields.get("session_secret"):
        raise ConfigError(
            "CTI_HTTP_ENABLED=yes needs CTI_SESSION_SECRET (at least "
            f"{MIN_SESSION_SECRET_BYTES} random bytes, e.g. `openssl rand -base64 48`)"
        )


def _http_limits(get: Callable[[str], str | None], fields: dict[str, object]) -> None:
    if (raw := get("CTI_HTTP_HEADER_TIMEOUT_S")) is not None:
        fields["http_header_timeout_s"] = _seconds("CTI_HTTP_HEADER_TIMEOUT_S", raw, 0.1, 300)
    if (raw := get("CTI_HTTP_KEEPALIVE_S")) is not None:
        fields["http_keepalive_s"] = _seconds("CTI_HTTP_KEEPALIVE_S", raw, 0.1, 3600)
    if (raw := get("CTI_HTTP_MAX_CONNECTIONS")) is not None:
        fields["http_max_connections"] = _int("CTI_HTTP_MAX_CONNECTIONS", raw, 1, 1_000_000)
    if (raw := get("CTI_HTTP_MAX_PER_ADDRESS")) is not None:
        fields["http_max_per_address"] = _int("CTI_HTTP_MAX_PER_ADDRESS", raw, 1, 1_000_000)
    if (raw := get("CTI_METRICS_BIND")) is not None:
        fields["metrics_bind"] = _host_port("CTI_METRICS_BIND", raw)


def _pbxes(raw: str, get: Callable[[str], str | None], fields: dict[str, object]) -> None:
    """``CTI_PBXES``: each PBX's AMI user and secret from ``CTI_AMI_USERNAME_<NAME>`` and
    ``CTI_AMI_SECRET_<NAME>``, else the unsuffixed ones. AMI is on when every PBX has a
    secret (unless ``CTI_AMI_ENABLED`` says otherwise)."""
    try:
        listed = parse_pbxes(raw)
    except ValueError as exc:
        raise ConfigError(
            f"CTI_PBXES={raw[:200]!r}: {exc}; e.g. a=10.0.0.1:5038,b=10.0.0.2:5038"
        ) from None
    pbxes: list[Pbx] = []
    for index, (name, host, port) in enumerate(listed):
        suffix = "_" + name.upper()
        username = get("CTI_AMI_USERNAME" + suffix) or str(fields.get("ami_username", "cti"))
        secret = get("CTI_AMI_SECRET" + suffix) or str(fields.get("ami_secret", ""))
        pbxes.append(Pbx(name, host, port, username, secret, home=index == 0))
    fields["pbxes"] = tuple(pbxes)
    if get("CTI_AMI_ENABLED") is None:
        fields["ami_enabled"] = all(pbx.secret for pbx in pbxes)
    missing = [pbx.name for pbx in pbxes if not pbx.secret]
    if fields["ami_enabled"] and missing:
        names = ", ".join(f"CTI_AMI_SECRET_{name.upper()}" for name in missing)
        raise ConfigError(
            f"CTI_PBXES: no AMI secret for {', '.join(missing)}: set {names} or CTI_AMI_SECRET"
        )


def load_config(env: Mapping[str, str] | None = None) -> Config:
    """Build the configuration from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env

    def get(name: str) -> str | None:
        value = env.get(name)
        return None if value is None or value == "" else value

    fields: dict[str, object] = {}
    if (raw := get("CTI_DATABASE_URL")) is not None:
        fields["database_url"] = _url("CTI_DATABASE_URL", raw, ("postgresql", "postgres"))
    if (raw := get("CTI_REDIS_URL")) is not None:
        _redis(raw, fields)
    if (raw := get("CTI_REDIS_SENTINEL_PASSWORD")) is not None:
        if fields.get("redis_sentinel") is None:
            raise ConfigError(
                "CTI_REDIS_SENTINEL_PASSWORD needs CTI_REDIS_URL=redis+sentinel://..."
            )
        fields["redis_sentinel_password"] = raw
    if (raw := get("CTI_AGI_BIND")) is not None:
        fields["agi_bind"] = _host_port("CTI_AGI_BIND", raw)
    if (raw := get("CTI_AGI_ALLOW")) is not None:
        fields["agi_allow"] = _networks("CTI_AGI_ALLOW", raw)
    if (raw := get("CTI_AGI_MAX_CONNECTIONS")) is not None:
        fields["agi_max_connections"] = _int("CTI_AGI_MAX_CONNECTIONS", raw, 1, 100_000)
    if (raw := get("CTI_AGI_MAX_PER_ADDRESS")) is not None:
        fields["agi_max_per_address"] = _int("CTI_AGI_MAX_PER_ADDRESS", raw, 1, 100_000)
    if (raw := get("CTI_HTTP_BIND")) is not None:
        fields["http_bind"] = _host_port("CTI_HTTP_BIND", raw)
    _http_limits(get, fields)
    if (raw := get("CTI_AMI_HOST")) is not None:
        fields["ami_host"] = raw
    if (raw := get("CTI_AMI_PORT")) is not None:
        fields["ami_port"] = _port("CTI_AMI_PORT", raw)
    if (raw := get("CTI_AMI_USERNAME")) is not None:
        fields["ami_username"] = raw
    if (raw := get("CTI_AMI_SECRET")) is not None:
        fields["ami_secret"] = raw
    if (raw := get("CTI_AMI_ENABLED")) is not None:
        fields["ami_enabled"] = _choice("CTI_AMI_ENABLED", raw, ("yes", "no")) == "yes"
    else:
        fields["ami_enabled"] = bool(fields.get("ami_secret"))
    if (raw := get("CTI_PBXES")) is not None:
        _pbxes(raw, get, fields)
    elif fields["ami_enabled"] and not fields.get("ami_secret"):
        raise ConfigError("CTI_AMI_ENABLED=yes needs CTI_AMI_SECRET (the AMI user's secret)")
    if (raw := get("CTI_INSTANCE_ID")) is not None:
        fields["instance_id"] = raw[:64]
    if (raw := get("CTI_AMI_PING_S")) is not None:
        fields["ami_ping_s"] = _int("CTI_AMI_PING_S", raw, minimum=1, maximum=300)
    if (raw := get("CTI_AMI_LEASE_TTL_S")) is not None:
        fields["ami_lease_ttl_s"] = _int("CTI_AMI_LEASE_TTL_S", raw, minimum=2, maximum=60)
    if (raw := get("CTI_ROUTE_BUDGET_MS")) is not None:
        fields["route_budget_ms"] = _int("CTI_ROUTE_BUDGET_MS", raw, minimum=10, maximum=10_000)
    if (raw := get("CTI_LOG_FORMAT")) is not None:
        fields["log_format"] = _choice("CTI_LOG_FORMAT", raw, ("json", "console"))
    if (raw := get("CTI_LOG_LEVEL")) is not None:
        fields["log_level"] = _choice("CTI_LOG_LEVEL", raw, ("debug", "info", "warning", "error"))
    if (raw := get("CTI_DEFAULT_QUEUE")) is not None:
        fields["default_queue"] = _queue_name("CTI_DEFAULT_QUEUE", raw)
    if (raw := get("CTI_DEFAULT_REGION")) is not None:
        fields["default_region"] = _region("CTI_DEFAULT_REGION", raw)
    if (raw := get("CTI_CALL_DATA_TTL_S")) is not None:
        fields["call_data_ttl_s"] = _int("CTI_CALL_DATA_TTL_S", raw, minimum=60)
    if (raw := get("CTI_CALL_DATA_AFTER_END_S")) is not None:
        fields["call_data_after_end_s"] = _int("CTI_CALL_DATA_AFTER_END_S", raw, minimum=0)
    if (raw := get("CTI_TIMEZONE")) is not None:
        try:
            fields["timezone"] = zone(raw.strip()).key
        except HoursError as exc:
            raise ConfigError(f"CTI_TIMEZONE: {exc}") from None
    if (raw := get("CTI_STREAM_RETENTION_S")) is not None:
        fields["stream_retention_s"] = _int(
            "CTI_STREAM_RETENTION_S", raw, minimum=60, maximum=7 * 86_400
        )
    _session(get, fields)

    if (raw := env.get("CTI_PLAN_CACHE")) is not None:
        fields["plan_cache"] = raw

    # Each value was made by the parser for its own field above; mypy cannot follow a
    # name-keyed dict into dataclasses.replace, so the dict is typed as Any at that one call.
    return replace(Config(), **cast(dict[str, Any], fields))
