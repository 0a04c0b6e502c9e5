"""The version each read model holds of an aggregate: what anti-entropy compares with the write side.

Every per-aggregate state a projection keeps carries the last version applied in its `v` field
(lua/guard.lua, lua/cas.lua). The keys are named by `keyspace` alone, so this module keeps
working whatever shape the keyspace takes (buckets, hash tags).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from redis.asyncio import Redis

from readmodels.keyspace import CampaignKeys, StatsKeys, UserKeys, generation_base

# Which aggregate types each projection keeps a versioned state of.
VERSIONED_STATES: dict[str, frozenset[str]] = {
    "campaigns": frozenset({"campaign"}),
    "users": frozenset({"user"}),
    "stats": frozenset({"campaign", "user"}),
}


def state_key_of(
    prefix: str, generation: str, projection: str, aggregate_type: str, buckets: int = 1
) -> Callable[[str], str]:
    """The function naming one aggregate's state key in one projection's generation (keys in
    `buckets` buckets: `Settings.read_model_buckets`)."""
    base = generation_base(prefix, generation)
    if projection == "campaigns" and aggregate_type == "campaign":
        return CampaignKeys(base, buckets).campaign
    if projection == "users" and aggregate_type == "user":
        return UserKeys(base, buckets).user
    if projection == "stats" and aggregate_type == "campaign":
        return StatsKeys(base, buckets).campaign
    if projection == "stats" and aggregate_type == "user":
        return StatsKeys(base, buckets).user
    raise ValueError(f"the {projection} projection keeps no {aggregate_type} state")


def aggregate_state_key(
    prefix: str, generation: str, projection: str, aggregate_type: str, aggregate_id: str, buckets: int = 1
) -> str:
    """The key of one aggregate's state in one projection's generation."""
    return state_key_of(prefix, generation, projection, aggregate_type, buckets)(aggregate_id)


async def read_versions(
    redis: Redis,
    prefix: str,
    generation: str,
    projection: str,
    aggregate_type: str,
    aggregate_ids: Sequence[str],
    buckets: int = 1,
) -> list[int]:
    """The version of each aggregate in the projection's generation (0 where it has no state)."""
    if not aggregate_ids:
        return []
    key_of = state_key_of(prefix, generation, projection, aggregate_type, buckets)
    pipe = redis.pipeline(transaction=False)
    for aggregate_id in aggregate_ids:
        pipe.hget(key_of(aggregate_id), "v")
    replies = await pipe.execute()
    return [int(reply) if reply is not None else 0 for reply in replies]
