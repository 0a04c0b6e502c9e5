"""The read models' keys spread over every primary of a Redis Cluster (issue 16: after 300
campaigns, each primary holds at least 10% of the keys). On standalone Redis the one server
holds them all."""

from __future__ import annotations

from redis.asyncio import Redis

from projectors.adapters.redis_projection import all_projections
from service_runtime.settings import Settings
from tests.integration.read_side.workload import interleave, mixed_workload, new_user
from tests.support.redis_keys import keys_per_primary


async def test_after_300_campaigns_each_primary_holds_a_tenth_of_the_keys(
    settings: Settings, redis: Redis
) -> None:
    events = interleave(
        [*mixed_workload(300, [f"owner-{n}" for n in range(5)]), *(new_user() for _ in range(20))]
    )
    for projection in all_projections(settings.redis_prefix, settings.read_model_buckets):
        mine = [e for e in events if projection.accepts(e)]
        await projection.apply(redis, f"{projection.name}.1", mine, announce=False)

    spread = await keys_per_primary(redis, f"{settings.redis_prefix}:*")
    total = sum(spread.values())
    # Every campaign has its document at least (its stats state is a field of its bucket's hash
    # since stats key layout 2, so no longer a key of its own).
    assert total >= 300, spread
    # The cluster topology has 3 primaries (and 3 replicas); standalone Redis is one server.
    assert len(spread) == (3 if settings.redis_cluster_addresses else 1), spread
    assert all(count >= total / 10 for count in spread.values()), spread
