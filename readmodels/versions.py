"""The version each read model holds of an aggregate: what anti-entropy compares with the write side.

Every per-aggregate state a projection keeps carries the last version applied: in the `v` field
of a hash of its own (campaigns, users: lua/cas.lua, lua/users.lua), or first in its field of a
hash its bucket shares (stats: `version|...`, lua/stats.lua). The keys are named by `keyspace`
alone, so this module keeps working whatever shape the keyspace takes (buckets, hash tags).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from readmodels.generations import layout_marker
from readmodels.keyspace import CampaignKeys, StatsKeys, UserKeys, generation_base
from readmodels.scripts import ScriptArg, pipelined

# Which aggregate types each projection keeps a versioned state of.
VERSIONED_STATES: dict[str, frozenset[str]] = {
    "campaigns": frozenset({"campaign"}),
    "users": frozenset({"user"}),
    "stats": frozenset({"campaign", "user"}),
}


@dataclass(frozen=True)
class StateLocation:
    """Where one aggregate's state is: a hash key of its own (`field` None, its version in `v`),
    or one field of a hash its bucket shares (its value starts with the version and `|`)."""

    key: str
    field: bytes | None = None

    def version(self, reply: bytes | str | None) -> int:
        """The version an HGET of `version_field` answered (0: no state)."""
        if reply is None:
            return 0
        raw = reply.encode() if isinstance(reply, str) else reply
        return int(raw.partition(b"|")[0]) if self.field is not None else int(raw)

    @property
    def version_field(self) -> str | bytes:
        """The hash field `version` reads."""
        return "v" if self.field is None else self.field


def state_location_of(
    prefix: str,
    generation: str,
    projection: str,
    aggregate_type: str,
    buckets: int = 1,
    layout: int | None = None,
) -> Callable[[str], StateLocation]:
    """The function locating one aggregate's state in one projection's generation (keys in
    `buckets` buckets: `Settings.read_model_buckets`; `layout`: the generation's key layout,
    None for this code's)."""
    base = generation_base(prefix, generation)
    if projection == "stats" and layout is not None and layout < 2:
        keys = StatsKeys(base, buckets)
        layout1 = keys.layout1_campaign if aggregate_type == "campaign" else keys.layout1_user
        return lambda aggregate_id: StateLocation(layout1(aggregate_id))
    if projection == "campaigns" and aggregate_type == "campaign":
        campaign = CampaignKeys(base, buckets).campaign
        return lambda aggregate_id: StateLocation(campaign(aggregate_id))
    if projection == "users" and aggregate_type == "user":
        user = UserKeys(base, buckets).user
        return lambda aggregate_id: StateLocation(user(aggregate_id))
    if projection == "stats" and aggregate_type == "campaign":
        stats_campaign = StatsKeys(base, buckets).campaign
        return lambda aggregate_id: StateLocation(*stats_campaign(aggregate_id))
    if projection == "stats" and aggregate_type == "user":
        stats_user = StatsKeys(base, buckets).user
        return lambda aggregate_id: StateLocation(*stats_user(aggregate_id))
    raise ValueError(f"the {projection} projection keeps no {aggregate_type} state")


def aggregate_state(
    prefix: str, generation: str, projection: str, aggregate_type: str, aggregate_id: str, buckets: int = 1
) -> StateLocation:
    """Where one aggregate's state is in one projection's generation."""
    return state_location_of(prefix, generation, projection, aggregate_type, buckets)(aggregate_id)


async def delete_state(redis: Redis, location: StateLocation) -> int:
    """Drop one aggregate's state (what a lost write or a hand at the console does; tests)."""
    if location.field is None:
        return int(await redis.delete(location.key))
    return int(await redis.hdel(location.key, location.field))


# `read_versions(layout=...)`: the generation's layout marker is to be read from Redis.
READ_LAYOUT = -1


async def read_versions(
    redis: Redis,
    prefix: str,
    generation: str,
    projection: str,
    aggregate_type: str,
    aggregate_ids: Sequence[str],
    buckets: int = 1,
    *,
    layout: int | None = READ_LAYOUT,
) -> list[int]:
    """The version of each aggregate in the projection's generation (0 where it has no state).

    `layout`: the generation's layout marker as `layout_marker` reads it (None: none), if the
    caller knows it (a generation keeps its marker for life); read here otherwise (stats only:
    the other projections' states have one layout)."""
    if not aggregate_ids:
        return []
    if projection != "stats":
        layout = None
    elif layout == READ_LAYOUT:
        # A generation with no marker is one a rebuild is filling: this code's layout.
        layout = await layout_marker(redis, prefix, generation)
    locate = state_location_of(prefix, generation, projection, aggregate_type, buckets, layout)
    locations = [locate(aggregate_id) for aggregate_id in aggregate_ids]
    # One hiredis-packed write (`pipelined`), not redis-py's pipeline: anti-entropy reads a page
    # of versions per projection a step, and redis-py's per-command packing and reply callbacks
    # were most of the pass's CPU (about 25 us a key). States that share a hash (stats keeps its
    # bucket's in one) are read with one HMGET a hash, not an HGET each.
    shared: dict[str, list[int]] = {}
    for position, location in enumerate(locations):
        if location.field is not None:
            shared.setdefault(location.key, []).append(position)
    own = [position for position, location in enumerate(locations) if location.field is None]
    commands: list[tuple[ScriptArg, ...]] = [("HGET", locations[p].key, "v") for p in own]
    commands += [("HMGET", key, *(locations[p].version_field for p in held)) for key, held in shared.items()]
    replies = await pipelined(redis, commands)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    versions = [0] * len(locations)
    for position, reply in zip(own, replies[: len(own)], strict=True):
        versions[position] = locations[position].version(reply)
    for held, values in zip(shared.values(), replies[len(own) :], strict=True):
        for position, reply in zip(held, values, strict=True):
            versions[position] = locations[position].version(reply)
    return versions
