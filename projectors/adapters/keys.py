"""The Redis key layout of the read models: the one place (with the Lua scripts) that names keys.

Everything a projection writes lives under its generation's base, `{prefix}:{generation}`,
so a new generation can be built beside the live one and swapped in (see `generations`).
The Lua scripts derive index keys from the same base with the same suffixes as below.
"""

from __future__ import annotations

from dataclasses import dataclass


def generation_base(prefix: str, generation: str) -> str:
    return f"{prefix}:{generation}"


def events_channel(prefix: str) -> str:
    """Pub/sub channel: one JSON message per applied event (wakes `min_version`, feeds the monitor)."""
    return f"{prefix}:events"


def projector_status_key(prefix: str, projection: str) -> str:
    """Hash: heartbeat and counters of the projector of one projection (outside generations)."""
    return f"{prefix}:projector:{projection}"


def replay_lock_key(prefix: str, projection: str) -> str:
    """Lock held by the one rebuild of a projection that may run at a time (outside generations)."""
    return f"{prefix}:replay:lock:{projection}"


def parked_key(base: str, aggregate_type: str, aggregate_id: str) -> str:
    """Hash version -> packed change: events that arrived before a missing version."""
    return f"{base}:parked:{aggregate_type}:{aggregate_id}"


def parked_set_key(base: str) -> str:
    """Set of `{aggregate_type}:{id}` that have parked events (what an operator looks at)."""
    return f"{base}:parked"


@dataclass(frozen=True)
class CampaignKeys:
    base: str

    def campaign(self, campaign_id: str) -> str:
        """Hash: `doc` (ready-to-send JSON), `v`, `x:owner`; a deleted one keeps `deleted`, `x:owner`, `v`."""
        return f"{self.base}:campaign:{campaign_id}"

    def index(self, sort: str, dimension: str | None = None, value: str | None = None) -> str:
        """Sorted set, scores 0, members `sortvalue\\0id` in order: all campaigns or one filter value."""
        if dimension is None:
            return f"{self.base}:cidx:{sort}:all"
        return f"{self.base}:cidx:{sort}:{dimension}:{value}"

    def filtered_index(self, sort: str, where: tuple[str, str] | None) -> str:
        """`index` of a (dimension, value) filter, or of all campaigns for None."""
        return self.index(sort) if where is None else self.index(sort, *where)


@dataclass(frozen=True)
class UserKeys:
    base: str

    def user(self, user_id: str) -> str:
        """Hash: `doc` (ready-to-send JSON), `v`, JSON fragments of each field."""
        return f"{self.base}:user:{user_id}"


@dataclass(frozen=True)
class StatsKeys:
    base: str

    @property
    def counts(self) -> str:
        """Hash: campaigns.total, campaigns.deleted, status:<s>, channel:<c>, users.total."""
        return f"{self.base}:counts"

    @property
    def budget(self) -> str:
        """Hash: <currency>:units and <currency>:frac (ten-thousandths) of live campaigns."""
        return f"{self.base}:budget"

    @property
    def events_per_minute(self) -> str:
        """Hash: minute of occurred_at (YYYY-MM-DDTHH:MM, UTC) -> events applied."""
        return f"{self.base}:events_per_minute"

    def campaign(self, campaign_id: str) -> str:
        """Hash: the campaign's current contribution (status, channel, budget) and `v`."""
        return f"{self.base}:campaign:{campaign_id}"

    def user(self, user_id: str) -> str:
        return f"{self.base}:user:{user_id}"
