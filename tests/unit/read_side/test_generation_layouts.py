"""The layout markers a projection or anti-entropy keeps (a fake Redis that counts its reads)."""

from __future__ import annotations

from typing import cast

from redis.asyncio import Redis

from readmodels.generations import GenerationLayouts
from readmodels.keyspace import layout_key


class CountingRedis:
    def __init__(self, values: dict[str, bytes]) -> None:
        self.values = values
        self.reads: list[str] = []

    async def get(self, key: str) -> bytes | None:
        self.reads.append(key)
        return self.values.get(key)

    @property
    def client(self) -> Redis:
        return cast(Redis, self)


async def test_a_marker_once_read_is_kept() -> None:
    redis = CountingRedis({layout_key("t", "stats.3"): b"1"})
    layouts = GenerationLayouts()

    assert await layouts.of(redis.client, "t", "stats.3", unmarked=2) == 1
    assert await layouts.of(redis.client, "t", "stats.3", unmarked=2) == 1
    assert await layouts.of(redis.client, "t", "stats.3") == 1
    assert redis.reads == [layout_key("t", "stats.3")]


async def test_a_writer_keeps_the_layout_it_gives_an_unmarked_generation() -> None:
    redis = CountingRedis({})
    layouts = GenerationLayouts()

    assert await layouts.of(redis.client, "t", "campaigns.2", unmarked=4) == 4
    redis.values[layout_key("t", "campaigns.2")] = b"4"  # the swap marks it with the same
    assert await layouts.of(redis.client, "t", "campaigns.2", unmarked=4) == 4
    assert redis.reads == [layout_key("t", "campaigns.2")]


async def test_without_a_layout_for_unmarked_an_unmarked_generation_is_read_again() -> None:
    redis = CountingRedis({})
    layouts = GenerationLayouts()

    assert await layouts.of(redis.client, "t", "stats.5") is None
    redis.values[layout_key("t", "stats.5")] = b"2"
    assert await layouts.of(redis.client, "t", "stats.5") == 2
    assert await layouts.of(redis.client, "t", "stats.5") == 2
    assert redis.reads == [layout_key("t", "stats.5")] * 2


async def test_each_generation_has_its_own_marker() -> None:
    redis = CountingRedis({layout_key("t", "stats.1"): b"1", layout_key("t", "stats.2"): b"2"})
    layouts = GenerationLayouts()

    seen = [await layouts.of(redis.client, "t", g, unmarked=2) for g in ("stats.1", "stats.2", "stats.1")]
    assert seen == [1, 2, 1]
    assert len(redis.reads) == 2
