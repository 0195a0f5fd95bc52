"""Configuration from the environment (cti.config): the documented defaults, good
values, and a ConfigError naming the variable for every bad one."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from cti.config import Config, ConfigError, HostPort, load_config, redacted_url


def test_defaults_are_the_documented_ones() -> None:
    config = load_config({})
    assert config.database_url == "postgresql://postgres@127.0.0.1:5432/cti"
    assert config.redis_url == "redis://127.0.0.1:6379/0"
    assert config.agi_bind == HostPort("127.0.0.1", 4573)
    assert str(config.agi_bind) == "127.0.0.1:4573"
    assert config.http_bind == HostPort("127.0.0.1", 8080)
    assert str(config.http_bind) == "127.0.0.1:8080"
    assert config.route_budget_ms == 200
    assert config.route_budget_s == pytest.approx(0.2)
    assert config.default_queue == "default"
    assert config.default_region == "US"
    assert config.ami_port == 5038
    assert config.log_format == "console"
    assert config.log_level == "info"
    assert config.session_ttl_s == 43_200
    assert not config.http_enabled
    assert config.session_secret == ""
    assert [str(n) for n in config.agi_allow] == [
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "fc00::/7",
        "::1/128",
    ]
    assert (config.agi_max_per_address, config.agi_max_connections) == (500, 1000)
    assert (config.http_header_timeout_s, config.http_keepalive_s) == (10.0, 30.0)
    assert (config.http_max_per_address, config.http_max_connections) == (500, 2000)
    assert config.metrics_bind is None


def test_no_variables_gives_the_dataclass_defaults() -> None:
    assert load_config({}) == Config()


def test_empty_values_count_as_unset() -> None:
    env = {
        name: ""
        for name in (
            "CTI_DATABASE_URL",
            "CTI_REDIS_URL",
            "CTI_AGI_BIND",
            "CTI_HTTP_BIND",
            "CTI_AMI_PORT",
            "CTI_ROUTE_BUDGET_MS",
            "CTI_LOG_FORMAT",
            "CTI_DEFAULT_QUEUE",
            "CTI_DEFAULT_REGION",
        )
    }
    assert load_config(env) == Config()


def test_an_explicit_mapping_ignores_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CTI_ROUTE_BUDGET_MS", "not a number")
    assert load_config({}).route_budget_ms == 200
    with pytest.raises(ConfigError, match="CTI_ROUTE_BUDGET_MS"):
        load_config()


def test_the_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTI_ROUTE_BUDGET_MS", "350")
    assert load_config().route_budget_ms == 350


@pytest.mark.parametrize(
    ("name", "raw", "field", "value"),
    [
        pytest.param(
            "CTI_DATABASE_URL",
            "postgres://cti:secret@db.example:6432/prod",
            "database_url",
            "postgres://cti:secret@db.example:6432/prod",
            id="postgres-scheme",
        ),
        pytest.param(
            "CTI_DATABASE_URL",
            "postgresql:///cti?host=/run/postgresql",
            "database_url",
            "postgresql:///cti?host=/run/postgresql",
            id="postgres-socket",
        ),
        pytest.param(
            "CTI_REDIS_URL",
            "rediss://cache.example:6380/2",
            "redis_url",
            "rediss://cache.example:6380/2",
            id="rediss",
        ),
        pytest.param(
            "CTI_REDIS_URL",
            "unix:///run/redis.sock",
            "redis_url",
            "unix:///run/redis.sock",
            id="redis-socket",
        ),
        pytest.param(
            "CTI_AGI_BIND", "0.0.0.0:4574", "agi_bind", HostPort("0.0.0.0", 4574), id="agi-bind"
        ),
        pytest.param("CTI_AGI_BIND", "[::1]:4573", "agi_bind", HostPort("::1", 4573), id="ipv6"),
        pytest.param(
            "CTI_HTTP_BIND", "localhost:65535", "http_bind", HostPort("localhost", 65535), id="http"
        ),
        pytest.param("CTI_AMI_PORT", "1", "ami_port", 1, id="ami-port-1"),
        pytest.param("CTI_ROUTE_BUDGET_MS", "10", "route_budget_ms", 10, id="budget-min"),
        pytest.param("CTI_ROUTE_BUDGET_MS", "10000", "route_budget_ms", 10_000, id="budget-max"),
        pytest.param("CTI_LOG_FORMAT", "JSON", "log_format", "json", id="log-format-case"),
        pytest.param("CTI_LOG_LEVEL", " debug ", "log_level", "debug", id="log-level-spaces"),
        pytest.param("CTI_DEFAULT_QUEUE", "overflow", "default_queue", "overflow", id="queue"),
        pytest.param("CTI_DEFAULT_REGION", "gb", "default_region", "GB", id="region-case"),
        pytest.param("CTI_CALL_DATA_TTL_S", "60", "call_data_ttl_s", 60, id="ttl-min"),
        pytest.param("CTI_AMI_PING_S", "1", "ami_ping_s", 1, id="ami-ping"),
        pytest.param("CTI_AMI_LEASE_TTL_S", "60", "ami_lease_ttl_s", 60, id="lease-max"),
        pytest.param("CTI_CALL_DATA_AFTER_END_S", "0", "call_data_after_end_s", 0, id="after-end"),
        pytest.param("CTI_INSTANCE_ID", "cti-a", "instance_id", "cti-a", id="instance"),
        pytest.param("CTI_STREAM_RETENTION_S", "60", "stream_retention_s", 60, id="retention-min"),
        pytest.param(
            "CTI_STREAM_RETENTION_S", "604800", "stream_retention_s", 604_800, id="retention-max"
        ),
        pytest.param("CTI_SESSION_TTL_S", "60", "session_ttl_s", 60, id="session-ttl-min"),
        pytest.param("CTI_HTTP_ENABLED", "no", "http_enabled", False, id="http-off"),
        pytest.param("CTI_TIMEZONE", " Europe/Paris ", "timezone", "Europe/Paris", id="tz"),
        pytest.param(
            "CTI_AGI_ALLOW",
            "127.0.0.1, 10.20.0.0/16,fd00::/8",
            "agi_allow",
            (
                ipaddress.ip_network("127.0.0.1/32"),
                ipaddress.ip_network("10.20.0.0/16"),
                ipaddress.ip_network("fd00::/8"),
            ),
            id="agi-allow",
        ),
        pytest.param("CTI_AGI_MAX_PER_ADDRESS", "1", "agi_max_per_address", 1, id="per-address"),
        pytest.param("CTI_AGI_MAX_CONNECTIONS", "5000", "agi_max_connections", 5000, id="agi-max"),
        # HTTP admission
        pytest.param(
            "CTI_HTTP_HEADER_TIMEOUT_S", "2.5", "http_header_timeout_s", 2.5, id="header-timeout"
        ),
        pytest.param("CTI_HTTP_KEEPALIVE_S", "75", "http_keepalive_s", 75.0, id="keepalive"),
        pytest.param(
            "CTI_HTTP_MAX_CONNECTIONS", "10000", "http_max_connections", 10_000, id="http-max"
        ),
        pytest.param(
            "CTI_HTTP_MAX_PER_ADDRESS", "8", "http_max_per_address", 8, id="http-per-address"
        ),
        pytest.param(
            "CTI_METRICS_BIND",
            "0.0.0.0:9100",
            "metrics_bind",
            HostPort("0.0.0.0", 9100),
            id="metrics",
        ),
    ],
)
def test_good_values(name: str, raw: str, field: str, value: object) -> None:
    config = load_config({name: raw})
    assert getattr(config, field) == value
    others = {f.name for f in dataclasses.fields(Config)} - {field}
    assert all(getattr(config, f) == getattr(Config(), f) for f in others)


def test_an_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ConfigError, match="CTI_TIMEZONE"):
        load_config({"CTI_TIMEZONE": "Mars/Olympus"})


def test_an_ami_secret_turns_call_following_on() -> None:
    assert not load_config({}).ami_enabled
    config = load_config({"CTI_AMI_SECRET": "s3cret"})
    assert config.ami_secret == "s3cret" and config.ami_enabled
    assert not load_config({"CTI_AMI_SECRET": "s3cret", "CTI_AMI_ENABLED": "no"}).ami_enabled
    with pytest.raises(ConfigError, match="CTI_AMI_SECRET"):
        load_config({"CTI_AMI_ENABLED": "yes"})


SESSION_SECRET = "a-test-value-of-thirty-two-bytes-or-more"  # not a real secret


def test_a_session_secret_turns_the_http_api_on() -> None:
    config = load_config({"CTI_SESSION_SECRET": SESSION_SECRET})
    assert config.http_enabled and config.session_secret == SESSION_SECRET
    assert SESSION_SECRET not in repr(config)
    off = load_config({"CTI_SESSION_SECRET": SESSION_SECRET, "CTI_HTTP_ENABLED": "no"})
    assert not off.http_enabled
    assert load_config({"CTI_SESSION_SECRET": "é" * 16}).session_secret == "é" * 16  # 32 bytes


def test_the_http_api_needs_a_session_secret() -> None:
    with pytest.raises(ConfigError, match="CTI_SESSION_SECRET") as caught:
        load_config({"CTI_HTTP_ENABLED": "yes"})
    assert str(caught.value).startswith("CTI_HTTP_ENABLED=yes")
    assert load_config({"CTI_HTTP_ENABLED": "no"}) == Config()


def test_a_short_session_secret_is_refused_without_being_shown() -> None:
    short = "tiny-secret-value"
    with pytest.raises(ConfigError) as caught:
        load_config({"CTI_SESSION_SECRET": short})
    assert short not in str(caught.value)
    assert "32 bytes" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        # ports
        pytest.param("CTI_AGI_BIND", "127.0.0.1:99999", id="agi-port-too-big"),
        pytest.param("CTI_AGI_BIND", "127.0.0.1:0", id="agi-port-zero"),
        pytest.param("CTI_AGI_BIND", "127.0.0.1:-1", id="agi-port-negative"),
        pytest.param("CTI_AGI_BIND", "127.0.0.1:agi", id="agi-port-name"),
        pytest.param("CTI_AGI_BIND", "127.0.0.1:", id="agi-port-missing"),
        pytest.param("CTI_AGI_BIND", "4573", id="agi-host-missing"),
        pytest.param("CTI_AGI_BIND", ":4573", id="agi-host-empty"),
        pytest.param("CTI_HTTP_BIND", "127.0.0.1:65536", id="http-port-too-big"),
        pytest.param("CTI_HTTP_BIND", "localhost", id="http-no-port"),
        pytest.param("CTI_AMI_PORT", "manager", id="ami-port-name"),
        pytest.param("CTI_AMI_PORT", "70000", id="ami-port-too-big"),
        # route budget
        pytest.param("CTI_ROUTE_BUDGET_MS", "fast", id="budget-word"),
        pytest.param("CTI_ROUTE_BUDGET_MS", "200ms", id="budget-unit"),
        pytest.param("CTI_ROUTE_BUDGET_MS", "0.2", id="budget-float"),
        pytest.param("CTI_ROUTE_BUDGET_MS", "9", id="budget-too-small"),
        pytest.param("CTI_ROUTE_BUDGET_MS", "0", id="budget-zero"),
        pytest.param("CTI_ROUTE_BUDGET_MS", "-200", id="budget-negative"),
        pytest.param("CTI_ROUTE_BUDGET_MS", "10001", id="budget-too-big"),
        # logging
        pytest.param("CTI_LOG_FORMAT", "xml", id="log-format"),
        pytest.param("CTI_LOG_FORMAT", "text", id="log-format-text"),
        pytest.param("CTI_LOG_LEVEL", "trace", id="log-level"),
        # URLs
        pytest.param("CTI_DATABASE_URL", "mysql://root@127.0.0.1/cti", id="db-scheme"),
        pytest.param("CTI_DATABASE_URL", "127.0.0.1:5432", id="db-no-scheme"),
        pytest.param("CTI_DATABASE_URL", "postgresql://", id="db-nothing"),
        pytest.param("CTI_REDIS_URL", "http://127.0.0.1:6379", id="redis-scheme"),
        pytest.param("CTI_REDIS_URL", "127.0.0.1:6379", id="redis-no-scheme"),
        # region
        pytest.param("CTI_DEFAULT_REGION", "XX", id="region-unknown"),
        pytest.param("CTI_DEFAULT_REGION", "USA", id="region-three-letters"),
        pytest.param("CTI_DEFAULT_REGION", "001", id="region-non-geographic"),
        # queue and call data
        pytest.param("CTI_DEFAULT_QUEUE", "my queue", id="queue-space"),
        pytest.param("CTI_DEFAULT_QUEUE", "a,b", id="queue-comma"),
        pytest.param("CTI_DEFAULT_QUEUE", 'say"hi', id="queue-quote"),
        pytest.param("CTI_DEFAULT_QUEUE", "   ", id="queue-blank"),
        pytest.param("CTI_DEFAULT_QUEUE", "q" * 65, id="queue-too-long"),
        pytest.param("CTI_DEFAULT_QUEUE", "de\nfault", id="queue-newline"),
        pytest.param("CTI_DEFAULT_QUEUE", "de\tfault", id="queue-tab"),
        pytest.param("CTI_CALL_DATA_TTL_S", "59", id="ttl-too-small"),
        pytest.param("CTI_CALL_DATA_TTL_S", "1d", id="ttl-unit"),
        # the sidebar's sessions
        pytest.param("CTI_SESSION_SECRET", "s" * 31, id="session-secret-short"),
        pytest.param("CTI_SESSION_SECRET", "é" * 15, id="session-secret-short-bytes"),
        pytest.param("CTI_SESSION_TTL_S", "59", id="session-ttl-too-small"),
        pytest.param("CTI_SESSION_TTL_S", "12h", id="session-ttl-unit"),
        pytest.param("CTI_SESSION_TTL_S", "2592001", id="session-ttl-too-big"),
        pytest.param("CTI_STREAM_RETENTION_S", "59", id="retention-too-small"),
        pytest.param("CTI_STREAM_RETENTION_S", "604801", id="retention-too-big"),
        pytest.param("CTI_STREAM_RETENTION_S", "1h", id="retention-unit"),
        pytest.param("CTI_HTTP_ENABLED", "maybe", id="http-enabled-word"),
        # FastAGI admission
        pytest.param("CTI_AGI_ALLOW", "10.0.0.0/8,", id="agi-allow-trailing-comma"),
        pytest.param("CTI_AGI_ALLOW", "10.1.2.3/8", id="agi-allow-host-bits"),
        pytest.param("CTI_AGI_ALLOW", "asterisk.local", id="agi-allow-name"),
        pytest.param("CTI_AGI_ALLOW", "10.0.0.0/33", id="agi-allow-prefix"),
        pytest.param("CTI_AGI_MAX_PER_ADDRESS", "0", id="per-address-zero"),
        pytest.param("CTI_AGI_MAX_PER_ADDRESS", "many", id="per-address-word"),
        pytest.param("CTI_AGI_MAX_CONNECTIONS", "0", id="agi-max-zero"),
        pytest.param("CTI_AGI_MAX_CONNECTIONS", "100001", id="agi-max-too-big"),
        # HTTP admission
        pytest.param("CTI_HTTP_HEADER_TIMEOUT_S", "0", id="header-timeout-zero"),
        pytest.param("CTI_HTTP_HEADER_TIMEOUT_S", "nan", id="header-timeout-nan"),
        pytest.param("CTI_HTTP_HEADER_TIMEOUT_S", "10s", id="header-timeout-unit"),
        pytest.param("CTI_HTTP_KEEPALIVE_S", "3601", id="keepalive-too-long"),
        pytest.param("CTI_HTTP_MAX_CONNECTIONS", "0", id="http-max-zero"),
        pytest.param("CTI_HTTP_MAX_PER_ADDRESS", "-1", id="http-per-address-negative"),
        pytest.param("CTI_METRICS_BIND", "9100", id="metrics-no-host"),
        pytest.param("CTI_METRICS_BIND", "0.0.0.0:0", id="metrics-port-zero"),
    ],
)
def test_bad_values_name_the_variable(name: str, raw: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({name: raw})
    assert str(caught.value).startswith(f"{name}=")


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_config_is_frozen() -> None:
    config = load_config({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.route_budget_ms = 1  # type: ignore[misc]


def test_redis_through_sentinel_is_parsed_into_sentinels_service_and_db() -> None:
    raw = "redis+sentinel://:s%40cret@10.0.0.1:26379,sentinel-b,[::1]:26380/cti-master/3"
    config = load_config({"CTI_REDIS_URL": raw, "CTI_REDIS_SENTINEL_PASSWORD": "guard"})
    url = config.redis_sentinel
    assert url is not None
    assert url.sentinels == (("10.0.0.1", 26379), ("sentinel-b", 26379), ("::1", 26380))
    assert (url.service, url.db, url.username, url.password) == ("cti-master", 3, None, "s@cret")
    assert config.redis_sentinel_password == "guard"
    assert config.redis_url == raw
    assert "s@cret" not in repr(url) and "guard" not in repr(config)


def test_redis_sentinel_defaults_and_user() -> None:
    url = load_config({"CTI_REDIS_URL": "redis+sentinel://cti:pw@h1/mymaster"}).redis_sentinel
    assert url is not None
    assert (url.sentinels, url.service, url.db) == ((("h1", 26379),), "mymaster", 0)
    assert (url.username, url.password) == ("cti", "pw")


def test_a_plain_redis_url_has_no_sentinel() -> None:
    config = load_config({"CTI_REDIS_URL": "redis://127.0.0.1:6379/2"})
    assert config.redis_sentinel is None and config.redis_url == "redis://127.0.0.1:6379/2"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("redis+sentinel://:topsecret@h1:26379", id="no-service"),
        pytest.param("redis+sentinel://:topsecret@h1:26379/", id="empty-service"),
        pytest.param("redis+sentinel://:topsecret@h1:26379/my master", id="service-space"),
        pytest.param("redis+sentinel://:topsecret@h1:26379/m/x", id="db-not-number"),
        pytest.param("redis+sentinel://:topsecret@h1:26379/m/1/2", id="too-many-parts"),
        pytest.param("redis+sentinel://:topsecret@h1:0/m", id="port-zero"),
        pytest.param("redis+sentinel://:topsecret@h1:99999/m", id="port-too-big"),
        pytest.param("redis+sentinel://:topsecret@h1,,h2/m", id="empty-host"),
        pytest.param("redis+sentinel://:topsecret@/m", id="no-host"),
        pytest.param("redis+sentinel://:topsecret@h1/m?ssl=1", id="query"),
        pytest.param("redis+sentinel://:topsecret@" + ",".join(["h"] * 17) + "/m", id="17"),
    ],
)
def test_a_bad_sentinel_url_names_the_variable_not_the_password(raw: str) -> None:
    with pytest.raises(ConfigError, match="CTI_REDIS_URL") as caught:
        load_config({"CTI_REDIS_URL": raw})
    assert "topsecret" not in str(caught.value)


def test_a_sentinel_password_without_sentinel_is_refused() -> None:
    with pytest.raises(ConfigError, match="CTI_REDIS_SENTINEL_PASSWORD"):
        load_config({"CTI_REDIS_SENTINEL_PASSWORD": "x"})


def test_a_multi_host_database_url_is_accepted_as_is() -> None:
    raw = "postgresql://cti:pw@db1:5432,db2:5433/cti?target_session_attrs=read-write"
    assert load_config({"CTI_DATABASE_URL": raw}).database_url == raw


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://cti:pw@db1:5432,db2:5432/cti?x=1",
            "postgresql://cti:***@db1:5432,db2:5432/cti?x=1",
        ),
        ("redis+sentinel://:p%40w@h1,h2/m/0", "redis+sentinel://:***@h1,h2/m/0"),
        ("postgresql://postgres@127.0.0.1:5432/cti", "postgresql://postgres@127.0.0.1:5432/cti"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_redacted_url_hides_only_the_password(url: str, shown: str) -> None:
    assert redacted_url(url) == shown
