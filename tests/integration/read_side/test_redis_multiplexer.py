"""The read path's Redis transport on the real server: many reads in flight on one connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from query_api.adapters.redis_multiplexer import (
    ClusterMultiplexer,
    RedisCommandError,
    RedisMultiplexer,
    RedisUnavailable,
)
from service_runtime.settings import Settings
from tests.support.services import free_port


@pytest.fixture
async def multiplexer(
    settings: Settings, redis: Redis
) -> AsyncIterator[RedisMultiplexer | ClusterMultiplexer]:
    """What the query API reads through: one connection, or one per primary on a cluster."""
    mux: RedisMultiplexer | ClusterMultiplexer
    if isinstance(redis, RedisCluster):
        await redis.initialize()
        mux = ClusterMultiplexer(redis, settings.redis_url, timeout=2)
    else:
        mux = RedisMultiplexer(settings.redis_url, timeout=2)
    yield mux
    await mux.close()


async def server_of(settings: Settings, redis: Redis, key: str) -> tuple[RedisMultiplexer, Redis]:
    """A multiplexer and a client on the one server holding `key` (its primary on a cluster)."""
    if not isinstance(redis, RedisCluster):
        return RedisMultiplexer(settings.redis_url, timeout=2), redis
    await redis.initialize()
    node = redis.get_node_from_key(key)
    return RedisMultiplexer(f"redis://{node.host}:{node.port}/0", timeout=2), Redis(
        host=node.host, port=node.port
    )


async def test_concurrent_reads_each_get_their_own_reply(
    settings: Settings, redis: Redis, multiplexer: RedisMultiplexer | ClusterMultiplexer
) -> None:
    keys = [f"{settings.redis_prefix}:mux:{n}" for n in range(200)]
    pipe = redis.pipeline(transaction=False)
    for n, key in enumerate(keys):
        pipe.hset(key, mapping={"doc": f'{{"n":{n}}}' + "x" * (n * 50), "v": str(n)})
    await pipe.execute()

    replies = await asyncio.gather(*(multiplexer.execute("HMGET", key, "doc", "v", "absent") for key in keys))

    for n, (doc, version, absent) in enumerate(replies):
        assert doc.startswith(f'{{"n":{n}}}'.encode()) and len(doc) == len(f'{{"n":{n}}}') + n * 50
        assert (version, absent) == (str(n).encode(), None)
    assert replies == [await redis.hmget(key, ("doc", "v", "absent")) for key in keys]


async def test_an_error_reply_fails_only_its_own_command(
    settings: Settings, redis: Redis, multiplexer: RedisMultiplexer | ClusterMultiplexer
) -> None:
    key = f"{settings.redis_prefix}:mux:string"
    await redis.set(key, "not a hash")
    wrong, right = await asyncio.gather(
        multiplexer.execute("HMGET", key, "doc"), multiplexer.execute("GET", key), return_exceptions=True
    )
    assert isinstance(wrong, RedisCommandError) and "WRONGTYPE" in str(wrong)
    assert right == b"not a hash"


async def test_a_batch_gets_its_replies_in_order_among_single_reads_on_every_node(
    settings: Settings, redis: Redis, multiplexer: RedisMultiplexer | ClusterMultiplexer
) -> None:
    # Keys with distinct hash tags: on a cluster they sit on every primary.
    keys = [f"{settings.redis_prefix}:mux:{{b{n}}}" for n in range(40)]
    for n, key in enumerate(keys):
        await redis.hset(key, mapping={"doc": f"d{n}"})
    wrong = f"{settings.redis_prefix}:mux:{{string}}"
    await redis.set(wrong, "not a hash")
    commands: list[tuple[str, ...]] = [("HGET", key, "doc") for key in keys]
    commands.insert(7, ("HGET", wrong, "doc"))

    batch, *singles = await asyncio.gather(
        multiplexer.execute_many(commands), *(multiplexer.execute("HGET", key, "doc") for key in keys[:10])
    )

    assert isinstance(batch[7], RedisCommandError) and "WRONGTYPE" in str(batch[7])
    assert batch[:7] + batch[8:] == [f"d{n}".encode() for n in range(40)]
    assert singles == [f"d{n}".encode() for n in range(10)]
    assert await multiplexer.execute_many([]) == []


async def test_a_lost_connection_is_replaced_on_the_next_read(settings: Settings, redis: Redis) -> None:
    key = f"{settings.redis_prefix}:mux:k"
    await redis.set(key, "v")
    multiplexer, server = await server_of(settings, redis, key)
    try:
        own_id = await multiplexer.execute("CLIENT", "ID")
        await server.client_kill_filter(_id=str(own_id))
        await asyncio.sleep(0.05)
        assert await multiplexer.execute("GET", key) == b"v"
        assert await multiplexer.execute("CLIENT", "ID") != own_id
    finally:
        await multiplexer.close()


async def test_an_unreachable_server_is_reported_not_waited_on() -> None:
    mux = RedisMultiplexer(f"redis://127.0.0.1:{free_port()}/0", timeout=2)
    with pytest.raises(RedisUnavailable):
        await mux.execute("PING")


def test_only_plain_tcp_urls_are_taken() -> None:
    assert RedisMultiplexer.supports("redis://127.0.0.1:6379/0")
    assert not RedisMultiplexer.supports("rediss://example.com:6380/0")
    assert not RedisMultiplexer.supports("unix:///tmp/redis.sock")


async def test_a_server_that_stops_answering_fails_the_reads_in_flight_as_unavailable() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)  # takes the commands, never answers
        await asyncio.sleep(30)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    mux = RedisMultiplexer(f"redis://127.0.0.1:{port}/0", timeout=0.4)
    try:
        reads = asyncio.gather(mux.execute("GET", "a"), mux.execute("GET", "b"), return_exceptions=True)
        results = await asyncio.wait_for(reads, 10)  # the guard: never a read waiting forever
        assert all(isinstance(r, RedisUnavailable) for r in results), results
    finally:
        await mux.close()
        server.close()
