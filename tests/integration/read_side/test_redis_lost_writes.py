"""A Redis connection lost under a write, under uvloop (the services' loop), on the real server of
either topology: the command fails as a lost connection (redis-py's `ConnectionError`, which the
APIs answer 503 and the cluster client retries on a fresh slot map), never as the error the
loss happened to raise inside redis-py (a 500), and the next one is answered.

Both were seen in a Redis Cluster failover under traffic
(tests/chaos/test_redis_failover_under_traffic.py):
- a connection to the dying primary was opened, then closed by the server before its HELLO went
  out (uvloop's `RuntimeError`, "the handler is closed"). Closing the transport of an idle pooled
  connection is that moment, made deterministic;
- a connection was disconnected by another task (the cluster client dropping every connection of
  the node it found gone) while this one's write was on its way (`AttributeError`: redis-py 8.1
  had cleared the writer). The write is started, and the connection disconnected before the
  loop runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Coroutine
from typing import Any

import uvloop
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from service_runtime.redis_client import connect_redis
from service_runtime.settings import Settings


def _idle_connections(redis: Redis) -> list[Any]:
    """The connections the client holds open and idle (redis-py's pools: private attributes)."""
    if isinstance(redis, RedisCluster):
        return [c for node in redis.get_nodes() for c in node._free]
    return list(redis.connection_pool._available_connections)  # type: ignore[attr-defined]


@contextlib.asynccontextmanager
async def _kept_key(settings: Settings) -> AsyncIterator[tuple[Redis, str, list[Any]]]:
    """A client that has just written "kept" under a key of its own, and the connections it then
    holds idle."""
    redis = connect_redis(settings)
    key = f"{settings.redis_prefix}:lost-writes:{uuid.uuid4().hex}"
    try:
        await redis.set(key, "kept")
        idle = _idle_connections(redis)
        assert idle, "the client kept no idle connection to lose"
        yield redis, key, idle
    finally:
        await redis.delete(key)
        await redis.aclose()


async def _met(call: Awaitable[object]) -> object:
    """What the call answered, or the error it raised (what the caller met is the point)."""
    try:
        return await call
    except Exception as exc:
        return exc


def _on_uvloop(main: Coroutine[Any, Any, tuple[object, object]]) -> tuple[object, object]:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def _first_answer_after_the_loss(settings: Settings) -> tuple[object, object]:
    async with _kept_key(settings) as (redis, key, idle):
        for connection in idle:
            connection._writer.transport.close()
        await asyncio.sleep(0.05)  # the loop has closed them
        return await _met(redis.get(key)), await redis.get(key)


def test_a_write_on_a_connection_closed_under_it_is_a_lost_connection(settings: Settings) -> None:
    first, second = _on_uvloop(_first_answer_after_the_loss(settings))

    if settings.redis_cluster_addresses:
        assert first == b"kept", f"the cluster client did not retry on a fresh connection: {first!r}"
    else:
        # The plain client does not retry (as `connect_redis` makes it); the API answers 503.
        assert type(first) is RedisConnectionError, f"not a lost connection: {first!r}"
    assert second == b"kept"


async def _write_on_a_connection_disconnected_under_it(settings: Settings) -> tuple[object, object]:
    async with _kept_key(settings) as (redis, key, idle):
        connection = idle[0]
        # redis-py hands a write with a socket timeout to a task of its own: it runs after this.
        assert connection.socket_timeout, "the write would not wait for the loop: nothing to race"
        write = asyncio.create_task(
            connection.send_packed_command(connection.pack_command("GET", key), check_health=False)
        )
        await asyncio.sleep(0)  # the write has started and waits for its turn
        await connection.disconnect(nowait=True)  # another task's disconnect, as the cluster's
        return await _met(write), await redis.get(key)


def test_a_write_on_a_connection_disconnected_under_it_is_a_lost_connection(settings: Settings) -> None:
    met, next_answer = _on_uvloop(_write_on_a_connection_disconnected_under_it(settings))

    assert type(met) is RedisConnectionError, f"not a lost connection: {met!r}"
    assert next_answer == b"kept"
