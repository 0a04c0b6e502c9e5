"""The Redis keyspace: every key and pub/sub channel any process uses, named here and nowhere else.

Everything a projection writes lives under its generation's base, `{prefix}:{generation}`,
so a new generation can be built beside the live one and swapped in (see `generations`).
The Lua scripts build no key names: every key they touch (or, for keys found while they run,
the key's beginning) is passed to them from here. Outside the generations live the pointers,
the processes' status and heartbeats, the monitor's feed, the workers' records and the
command side's login throttle.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def generation_base(prefix: str, generation: str) -> str:
    return f"{prefix}:{generation}"


_GLOB_SPECIALS = "\\*?[]"


def generation_pattern(prefix: str, generation: str) -> str:
    """SCAN MATCH pattern of every key of one generation (what is special to a glob escaped)."""
    base = generation_base(prefix, generation)
    return "".join("\\" + c if c in _GLOB_SPECIALS else c for c in base) + ":*"


def events_channel(prefix: str) -> str:
    """Pub/sub channel: one JSON message per applied event (wakes `min_version`, feeds the monitor)."""
    return f"{prefix}:events"


def projector_status_key(prefix: str, projection: str) -> str:
    """Hash: heartbeat and counters of the projector of one projection (outside generations)."""
    return f"{prefix}:projector:{projection}"


def pointer_key(prefix: str, projection: str) -> str:
    """String: the live generation of a projection (see `generations`)."""
    return f"{prefix}:gen:{projection}"


def sentinel_key(prefix: str) -> str:
    """String: present while the read models under `prefix` are whole (see `generations`). Written
    by the projectors beside the generation pointers; gone after a FLUSHALL, a new empty server or
    the prefix's keys deleted, which is how such a loss is told from a fresh start."""
    return f"{prefix}:sentinel"


def rebuilding_key(prefix: str) -> str:
    """String: present while the projectors rebuild the read models after a loss."""
    return f"{prefix}:rebuilding"


def generations_channel(prefix: str) -> str:
    """Pub/sub channel announcing a swap, so readers drop their cached pointer at once."""
    return f"{prefix}:generations"


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
        return f"{self.campaign_key_start}{campaign_id}"

    @property
    def campaign_key_start(self) -> str:
        """What every `campaign` key begins with (a script that finds ids as it runs appends them)."""
        return f"{self.base}:campaign:"

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

    @property
    def counters(self) -> tuple[str, str, str]:
        """The keys every stats apply increments (lua/stats.lua's KEYS[4..6], in this order)."""
        return (self.counts, self.budget, self.events_per_minute)

    def campaign(self, campaign_id: str) -> str:
        """Hash: the campaign's current contribution (status, channel, budget) and `v`."""
        return f"{self.base}:campaign:{campaign_id}"

    def user(self, user_id: str) -> str:
        return f"{self.base}:user:{user_id}"


# ---------------------------------------------------------------- the monitor's feed


def monitor_channel(prefix: str) -> str:
    """Pub/sub channel: `{"type": "lag"|"throughput", ...}` samples, beside the events channel."""
    return f"{prefix}:monitor"


def lag_sample_key(prefix: str) -> str:
    """String: the latest lag sample (JSON), what GET /monitor/state shows."""
    return f"{prefix}:monitor:lag"


def throughput_history_key(prefix: str) -> str:
    """List: throughput samples (JSON), newest first, trimmed to the chart's window."""
    return f"{prefix}:monitor:throughput"


def sampler_slot_key(prefix: str) -> str:
    """String with a TTL: the projectors instance that samples this interval (one sample per interval)."""
    return f"{prefix}:monitor:sampler"


# ---------------------------------------------------------------- process status


def relay_status_key(prefix: str) -> str:
    """String: the publishing relay's status (JSON, expires), written by the command side's relay."""
    return f"{prefix}:status:relay"


def worker_status_key(prefix: str, worker: str) -> str:
    """String: one worker's heartbeat (JSON, expires)."""
    return f"{prefix}:status:worker:{worker}"


def scheduler_status_key(prefix: str) -> str:
    """Hash: each running scheduler's status (JSON, field = instance), written by the command
    side's scheduler (`command_api.adapters.scheduler_status`)."""
    return f"{prefix}:status:scheduler"


# ---------------------------------------------------------------- the workers' records


def report_key(prefix: str, campaign_id: str) -> str:
    """Hash: a campaign's report, `version`, `owner_id`, `report` (JSON); version-guarded."""
    return f"{prefix}:report:{campaign_id}"


def send_record_key(prefix: str, kind: str, event_id: str) -> str:
    """Hash: one e-mail send of an event, "sending" (claimed, expiring) or "sent" (kept)."""
    return f"{prefix}:send:{kind}:{event_id}"


# ---------------------------------------------------------------- the command side


def throttle_digest(value: str) -> str:
    """What an e-mail, address or device is called in a key name: key names show up in
    monitoring, and neither e-mails nor addresses appear in them."""
    return hashlib.sha256(value.encode()).hexdigest()[:32]


class ThrottleKeys:
    """Every Redis key of the throttles (plain keys, no hash tags)."""

    def __init__(self, prefix: str) -> None:
        self._base = f"{prefix}:throttle"

    def address_failures(self, group: str) -> str:
        return f"{self._base}:login:address:{throttle_digest(group)}"

    def account_guesses(self, account: str) -> str:
        return f"{self._base}:login:account:{account}"

    def device(self, device: str) -> str:
        """The account digest a device cookie was issued to."""
        return f"{self._base}:device:{throttle_digest(device)}"

    def known_addresses(self, account: str) -> str:
        """Sorted set: address-group digests this account logged in from, scored by time."""
        return f"{self._base}:known:{account}"

    def trusted_failures(self, account: str, client_id: str) -> str:
        return f"{self._base}:login:trusted:{account}:{client_id}"

    def registrations(self, group: str) -> str:
        return f"{self._base}:register:{throttle_digest(group)}"


def console_operations_queue(prefix: str) -> str:
    """List: operation requests from the console (JSON), pushed by the query API and claimed
    (BRPOP, so by one process) by a projectors process."""
    return f"{prefix}:console:operations:queue"


def console_operations_recent(prefix: str) -> str:
    """List: the ids of the newest console operations, newest first (capped)."""
    return f"{prefix}:console:operations:recent"


def console_operation_key(prefix: str, operation_id: str) -> str:
    """String: one console operation's state as JSON (request, progress, result), with a TTL."""
    return f"{prefix}:console:operation:{operation_id}"
