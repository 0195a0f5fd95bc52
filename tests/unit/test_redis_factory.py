"""The one Redis factory (cti.app.resources.create_redis): which password goes where.
Nothing connects here; the failover itself is tests/integration/test_redis_sentinel.py."""

from __future__ import annotations

from redis.asyncio.sentinel import SentinelConnectionPool

from cti.app.resources import create_redis
from cti.config import load_config


async def test_a_plain_url_makes_a_plain_client_and_no_sentinel() -> None:
    client, sentinel = create_redis(load_config({"CTI_REDIS_URL": "redis://:pw@127.0.0.1:1/3"}))
    try:
        assert sentinel is None
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["port"], kwargs["db"], kwargs["password"]) == (1, 3, "pw")
        assert kwargs["socket_connect_timeout"] == 0.5
    finally:
        await client.aclose()


async def test_the_sentinel_form_sends_each_password_to_its_own_servers() -> None:
    config = load_config(
        {
            "CTI_REDIS_URL": "redis+sentinel://app:master-pw@127.0.0.1:1,127.0.0.1:2/svc/4",
            "CTI_REDIS_SENTINEL_PASSWORD": "sentinel-pw",
        }
    )
    client, sentinel = create_redis(config)
    try:
        assert sentinel is not None
        pool = client.connection_pool
        assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "svc"
        master = pool.connection_kwargs
        assert (master["db"], master["username"], master["password"]) == (4, "app", "master-pw")
        assert master["socket_timeout"] == 2
        sentinels = [s.connection_pool.connection_kwargs for s in sentinel.sentinels]
        assert [(s["host"], s["port"]) for s in sentinels] == [("127.0.0.1", 1), ("127.0.0.1", 2)]
        assert {s.get("password") for s in sentinels} == {"sentinel-pw"}
        assert not any(s.get("username") for s in sentinels)
    finally:
        await client.aclose()
        if sentinel is not None:
            await sentinel.aclose()
