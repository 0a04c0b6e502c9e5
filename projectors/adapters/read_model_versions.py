"""Anti-entropy's view of the Redis read models (`projectors.application.anti_entropy.ReadModelVersions`)."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from projectors.application.anti_entropy import AntiEntropyRepair
from projectors.application.ports import Projection
from readmodels.generations import GenerationLayouts, claim_while_whole
from readmodels.status import REPAIRS_KEPT, record_batch
from readmodels.versions import read_versions


class RedisReadModelVersions:
    def __init__(self, redis: Redis, buckets: int, repairs_kept: int = REPAIRS_KEPT) -> None:
        self.redis = redis
        self.buckets = buckets
        self.repairs_kept = repairs_kept
        # The stats generations' layout markers (one without is read again at each step).
        self._layouts = GenerationLayouts()

    async def live_generation(self, projection: Projection) -> str:
        return await claim_while_whole(self.redis, projection.prefix, projection.name)

    async def versions(
        self, projection: Projection, generation: str, aggregate_type: str, aggregate_ids: Sequence[str]
    ) -> list[int]:
        layout: int | None = None
        if projection.name == "stats":  # the only projection with more than one layout of states
            layout = await self._layouts.of(self.redis, projection.prefix, generation)
        return await read_versions(
            self.redis,
            projection.prefix,
            generation,
            projection.name,
            aggregate_type,
            aggregate_ids,
            self.buckets,
            layout=layout,
        )

    async def record_repair(self, projection: Projection, repair: AntiEntropyRepair) -> None:
        to = repair.to_version
        await record_batch(
            self.redis,
            projection.prefix,
            projection.name,
            counters={"anti_entropy_repairs_total": 1},
            fields={"last_anti_entropy_repair": f"{repair.aggregate} v{repair.from_version} -> v{to}"},
            repair={
                "kind": "anti-entropy",
                "aggregate": repair.aggregate,
                "from_version": repair.from_version,
                "to_version": repair.to_version,
            },
            repairs_kept=self.repairs_kept,
        )
