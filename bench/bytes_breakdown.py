"""Where a campaign's Redis bytes go, by kind of key (issue 21, item 4): the scale figure's load
applied in-process through the real campaigns and stats projections, then measured.

`python -m bench.bytes_breakdown [--campaigns 100000] [--redis-url URL] [--stats-layout 1]`:
the scale run's load (bench/event_load.py: created then activated, 500 owners) applied in
batches of 500 under a prefix of its own, `MEMORY USAGE key SAMPLES 0` summed by kind of key
(as bench/scale.py sums them, split), the Redis server's CPU (INFO cpu) and the client's over
the applies, then the keys deleted. No Kafka and no services: bytes do not depend on the
machine's load, and a private server (`--redis-url`) can be given other memory settings.
`--full-life` gives each campaign the projector figure's five events instead (more index moves
a campaign: the CPU per write). `--stats-layout 1` marks the stats generation with key layout 1
first, so it is written as code of that layout wrote it (a hash a campaign), for a before/after
from one code base.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import resource
import time
import uuid

import orjson
from redis.asyncio import Redis

from bench import event_load
from bench.event_load import LIFE as FULL_LIFE
from bench.event_load import campaign_events
from events import decode_event
from projectors.adapters.redis_projection import campaigns_projection, stats_projection
from readmodels.generations import initial_generation
from readmodels.keyspace import layout_key, prefix_pattern

LIFE = ("CampaignCreated", "CampaignActivated")
BATCH = 500

# Kind of key, by the first pattern its name (after the prefix) matches.
KINDS: tuple[tuple[str, re.Pattern[bytes]], ...] = (
    ("campaign hash", re.compile(rb"^campaigns\.[^:]+:(\{[^}]*\}:)?campaign:")),
    ("index, all campaigns", re.compile(rb":cidx:[a-z]+:all$")),
    ("index, owner's", re.compile(rb":cidx:[a-z]+:owner:")),
    ("id sets (status, channel, tag)", re.compile(rb":cset:")),
    ("stats states", re.compile(rb"^stats\.[^:]+:(\{[^}]*\}:)?(campaign|user)(_states|:)")),
    ("stats counters", re.compile(rb"^stats\.")),
)


def kind_of(relative: bytes) -> str:
    return next((kind for kind, pattern in KINDS if pattern.search(relative)), "other")


async def sizes_by_kind(redis: Redis, prefix: str) -> tuple[dict[str, int], dict[str, int]]:
    """(bytes, keys) by kind under `prefix`."""
    strip = len(prefix) + 1
    sizes: dict[str, int] = {}
    counts: dict[str, int] = {}
    batch: list[bytes] = []

    async def add(names: list[bytes]) -> None:
        pipe = redis.pipeline(transaction=False)
        for name in names:
            pipe.memory_usage(name, samples=0)
        for name, size in zip(names, await pipe.execute(), strict=True):
            kind = kind_of(name[strip:])
            sizes[kind] = sizes.get(kind, 0) + (size or 0)
            counts[kind] = counts.get(kind, 0) + 1

    async for key in redis.scan_iter(match=prefix_pattern(prefix), count=5000):
        batch.append(key)
        if len(batch) >= 2000:
            await add(batch)
            batch = []
    if batch:
        await add(batch)
    return sizes, counts


async def _redis_cpu(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def measure(
    redis_url: str, campaigns: int, stats_layout: int | None, life: tuple[str, ...] = LIFE
) -> dict[str, object]:
    redis = Redis.from_url(redis_url)
    prefix = f"bytes-{uuid.uuid4().hex[:8]}"
    projections = [campaigns_projection(prefix), stats_projection(prefix)]
    try:
        if stats_layout is not None:
            await redis.set(layout_key(prefix, initial_generation("stats")), stats_layout)
        envelopes = [decode_event(v) for _, v in campaign_events(len(life) * campaigns, life=life)]
        applied = {p.name: 0.0 for p in projections}
        cpu_before = await _redis_cpu(redis)
        for start in range(0, len(envelopes), BATCH):
            batch = envelopes[start : start + BATCH]
            for projection in projections:
                began = time.perf_counter()
                await projection.apply(redis, initial_generation(projection.name), batch, announce=False)
                applied[projection.name] += time.perf_counter() - began
        redis_cpu = await _redis_cpu(redis) - cpu_before
        await redis.delete(layout_key(prefix, initial_generation("stats")))
        sizes, counts = await sizes_by_kind(redis, prefix)
        config = await redis.config_get("*-max-listpack-*")
        return {
            "campaigns": campaigns,
            "events": len(envelopes),
            "owners": event_load.OWNERS,
            "stats_layout": stats_layout or "current",
            "bytes_per_campaign": round(sum(sizes.values()) / campaigns, 1),
            "by_kind_per_campaign": {k: round(v / campaigns, 1) for k, v in sorted(sizes.items())},
            "keys_by_kind": dict(sorted(counts.items())),
            "apply_seconds": {k: round(v, 2) for k, v in applied.items()},
            "redis_cpu_seconds": round(redis_cpu, 2),
            "client_max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
            "server_config": {str(k): str(v) for k, v in config.items()},
        }
    finally:
        keys = [key async for key in redis.scan_iter(match=prefix_pattern(prefix), count=5000)]
        for start in range(0, len(keys), 5000):
            await redis.unlink(*keys[start : start + 5000])
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaigns", type=int, default=100_000)
    parser.add_argument("--redis-url", default="redis://localhost:6379/0")
    parser.add_argument("--stats-layout", type=int, default=None)
    parser.add_argument(
        "--full-life",
        action="store_true",
        help="the projector figure's five events a campaign (bench/event_load.py), not the scale run's two",
    )
    parser.add_argument(
        "--owners", type=int, default=None, help="owners the campaigns are spread over (the load's 500)"
    )
    args = parser.parse_args()
    if args.owners:
        event_load.OWNERS = args.owners
    life = FULL_LIFE if args.full_life else LIFE
    result = asyncio.run(measure(args.redis_url, args.campaigns, args.stats_layout, life))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
