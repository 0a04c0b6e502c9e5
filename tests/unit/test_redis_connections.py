"""A new Redis connection costs no metadata read: the driver's name and version are learnt once."""

from __future__ import annotations

import pytest
import redis.utils

from service_runtime import redis_client
from service_runtime.redis_client import connect_redis
from service_runtime.settings import Settings


async def test_new_connections_do_not_read_the_package_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = []
    real = redis.utils.get_lib_version

    def counted() -> str:
        reads.append(1)
        return str(real())

    monkeypatch.setattr(redis.utils, "get_lib_version", counted)
    redis_client._driver_info.cache_clear()
    client = connect_redis(Settings(app_env="test"))
    connections = [client.connection_pool.make_connection() for _ in range(5)]
    assert len(reads) == 1  # the process's one DriverInfo
    info = connections[0].driver_info
    assert info is not None and info.formatted_name == "redis-py" and info.lib_version == real()
    await client.aclose()
