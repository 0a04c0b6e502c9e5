"""The Redis keyspace: every key and pub/sub channel any process uses, named here and nowhere else.

Everything a projection writes lives under its generation's base, `{prefix}:{generation}`,
so a new generation can be built beside the live one and swapped in (see `generations`).
Outside the generations live the pointers, the processes' status and heartbeats, the monitor's
feed, the workers' records and the command side's login throttle.

Buckets (Redis Cluster). Each aggregate belongs to one of B buckets (`bucket_of`: CRC-32 of its
id, mod B). Every key of a bucket carries the bucket's hash tag right after the generation's
base — `{prefix}:{generation}:{b7.40}:campaign:<id>` — so an aggregate's document, its parked
events, its bucket's indexes, parked set, stats counters and announcement channel hash to one
slot: every script and
atomic write touches one slot, while the B slots spread over the primaries. The generation sits
outside the tag, so a rebuilt generation's keys land on the same slots and a swap moves nothing.
Each tag is chosen so that its slot falls in the bucket's own 1/B share of the 16384 slots: any
contiguous split of the slots between primaries (what `redis-cli --cluster create` and most
managed services do) gives each primary its share of buckets. With one bucket (standalone Redis's
default) the segment is empty and the keys are the untagged ones of before.

The Lua scripts build no key names: every key they touch is declared in KEYS.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from functools import cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from readmodels.campaigns import packed_id


@cache
def bucket_segments(buckets: int) -> tuple[str, ...]:
    """Each bucket's key segment, `{tag}:` ('' for a single bucket: untagged keys)."""
    if buckets <= 1:
        return ("",)
    segments = []
    for bucket in range(buckets):
        low = bucket * REDIS_CLUSTER_HASH_SLOTS // buckets
        high = (bucket + 1) * REDIS_CLUSTER_HASH_SLOTS // buckets
        n = 0
        while not low <= key_slot(f"b{bucket}.{n}".encode()) < high:
            n += 1
        segments.append(f"{{b{bucket}.{n}}}:")
    return tuple(segments)


def bucket_of(aggregate_id: str, buckets: int) -> int:
    """The bucket an aggregate belongs to (stable: it decides where its keys live)."""
    if buckets <= 1:
        return 0
    return zlib.crc32(aggregate_id.encode()) % buckets


def bucket_segment(aggregate_id: str, buckets: int) -> str:
    return bucket_segments(buckets)[bucket_of(aggregate_id, buckets)]


def generation_base(prefix: str, generation: str) -> str:
    return f"{prefix}:{generation}"


_GLOB_SPECIALS = "\\*?[]"


def generation_pattern(prefix: str, generation: str) -> str:
    """SCAN MATCH pattern of every key of one generation (what is special to a glob escaped)."""
    base = generation_base(prefix, generation)
    return "".join("\\" + c if c in _GLOB_SPECIALS else c for c in base) + ":*"


def prefix_pattern(prefix: str) -> str:
    """SCAN MATCH pattern of every key under `prefix`: its generations and what lives beside them
    (what a measurement sums over, whatever the layout inside)."""
    return "".join("\\" + c if c in _GLOB_SPECIALS else c for c in prefix) + ":*"


def announcement_channel(prefix: str, buckets: int = 1, bucket: int = 0) -> str:
    """Shard pub/sub channel of one bucket (SPUBLISH/SSUBSCRIBE): one JSON message per applied
    event of the bucket's aggregates, published by the projection script that applied it (it
    wakes `min_version` reads and feeds the monitor). It carries the bucket's hash tag, so it is
    in the slot of the bucket's keys: the script declares it in KEYS, and on a cluster a message
    stays within the shard (primary and replicas) owning that slot instead of being relayed to
    every node. Outside the generations (a swap changes no channel). One bucket: `{prefix}:events`."""
    return f"{prefix}:{bucket_segments(buckets)[bucket]}events"


def announcement_channel_of(prefix: str, aggregate_id: str, buckets: int = 1) -> str:
    """The announcement channel of the aggregate's bucket."""
    return announcement_channel(prefix, buckets, bucket_of(aggregate_id, buckets))


def announcement_channels(prefix: str, buckets: int = 1) -> list[str]:
    """Every bucket's announcement channel: what a reader of all announcements subscribes to."""
    return [announcement_channel(prefix, buckets, bucket) for bucket in range(buckets)]


def projector_status_key(prefix: str, projection: str) -> str:
    """Hash: heartbeat and counters of the projector of one projection (outside generations)."""
    return f"{prefix}:projector:{projection}"


def repairs_key(prefix: str, projection: str) -> str:
    """List: the projector's newest repairs of one projection (gap repairs, anti-entropy
    repairs; JSON), newest first, capped (outside generations: it describes the process)."""
    return f"{prefix}:projector:{projection}:repairs"


def pointer_key(prefix: str, projection: str) -> str:
    """String: the live generation of a projection (see `generations`)."""
    return f"{prefix}:gen:{projection}"


def layout_key(prefix: str, generation: str) -> str:
    """String: the key layout version of one generation (`generations.LAYOUT_VERSIONS`), written
    before the generation is swapped in (or on a fresh start); none: version 1. Beside the
    pointers, outside the generation, so a generation's digest is its data's alone."""
    return f"{prefix}:layout:{generation}"


def sentinel_key(prefix: str) -> str:
    """String: present while the read models under `prefix` are whole (see `generations`). Written
    by the projectors beside the generation pointers; gone after a FLUSHALL, a new empty server or
    the prefix's keys deleted, which is how such a loss is told from a fresh start."""
    return f"{prefix}:sentinel"


def rebuilding_key(prefix: str) -> str:
    """String: present while the projectors rebuild the read models after a loss."""
    return f"{prefix}:rebuilding"


def generations_channel(prefix: str) -> str:
    """Classic pub/sub channel announcing a swap, so readers drop their cached pointer at once."""
    return f"{prefix}:generations"


def replay_lock_key(prefix: str, projection: str) -> str:
    """Lock held by the one rebuild of a projection that may run at a time (outside generations)."""
    return f"{prefix}:replay:lock:{projection}"


def parked_key(base: str, aggregate_type: str, aggregate_id: str, buckets: int = 1) -> str:
    """Hash version -> packed change: events that arrived before a missing version."""
    return f"{base}:{bucket_segment(aggregate_id, buckets)}parked:{aggregate_type}:{aggregate_id}"


def parked_set_key(base: str, buckets: int = 1, bucket: int = 0) -> str:
    """Set of `{aggregate_type}:{id}` of one bucket that have parked events (what an operator
    looks at: `parked_set_keys` are all of them)."""
    return f"{base}:{bucket_segments(buckets)[bucket]}parked"


def parked_set_key_of(base: str, aggregate_id: str, buckets: int = 1) -> str:
    """The parked set of the aggregate's bucket (in the slot of its parked hash)."""
    return parked_set_key(base, buckets, bucket_of(aggregate_id, buckets))


def parked_set_keys(base: str, buckets: int = 1) -> list[str]:
    return [parked_set_key(base, buckets, bucket) for bucket in range(buckets)]


@dataclass(frozen=True)
class CampaignKeys:
    base: str
    buckets: int = 1

    def bucket_of(self, campaign_id: str) -> int:
        return bucket_of(campaign_id, self.buckets)

    def campaign(self, campaign_id: str) -> str:
        """Hash: `doc` (ready-to-send JSON), `v`, `x:owner`; a deleted one keeps `deleted`, `x:owner`, `v`."""
        return f"{self.base}:{bucket_segment(campaign_id, self.buckets)}campaign:{campaign_id}"

    def parked(self, campaign_id: str) -> str:
        return parked_key(self.base, "campaign", campaign_id, self.buckets)

    def parked_set(self, bucket: int) -> str:
        return parked_set_key(self.base, self.buckets, bucket)

    def index(
        self, sort: str, dimension: str | None = None, value: str | None = None, bucket: int = 0
    ) -> str:
        """Sorted set of one bucket, scores 0, members `sortvalue\\0id` in order: all its campaigns
        or those of one value of a sorted dimension (the owner's; readmodels.campaigns)."""
        segment = bucket_segments(self.buckets)[bucket]
        if dimension is None:
            return f"{self.base}:{segment}cidx:{sort}:all"
        return f"{self.base}:{segment}cidx:{sort}:{dimension}:{value}"

    def filtered_index(self, sort: str, where: tuple[str, str] | None, bucket: int = 0) -> str:
        """`index` of a (dimension, value) filter, or of all campaigns for None, in one bucket."""
        return self.index(sort, bucket=bucket) if where is None else self.index(sort, *where, bucket=bucket)

    def filter_set(self, dimension: str, value: str, bucket: int = 0) -> str:
        """Set of one bucket: the ids of its campaigns of one status, channel or tag (intersected
        with a sorted index at read time)."""
        return f"{self.base}:{bucket_segments(self.buckets)[bucket]}cset:{dimension}:{value}"


@dataclass(frozen=True)
class UserKeys:
    base: str
    buckets: int = 1

    def user(self, user_id: str) -> str:
        """Hash: `doc` (ready-to-send JSON), `v`, JSON fragments of each field."""
        return f"{self.base}:{bucket_segment(user_id, self.buckets)}user:{user_id}"


@dataclass(frozen=True)
class StatsKeys:
    """The stats counters are sharded per bucket (an event increments its aggregate's bucket's,
    in the slot of the aggregate's state) and summed on read."""

    base: str
    buckets: int = 1

    def _in(self, bucket: int) -> str:
        return f"{self.base}:{bucket_segments(self.buckets)[bucket]}"

    def counts(self, bucket: int = 0) -> str:
        """Hash: campaigns.total, campaigns.deleted, status:<s>, channel:<c>, users.total."""
        return f"{self._in(bucket)}counts"

    def budget(self, bucket: int = 0) -> str:
        """Hash: <currency>:units and <currency>:frac (ten-thousandths) of live campaigns."""
        return f"{self._in(bucket)}budget"

    def events_per_minute(self, bucket: int = 0) -> str:
        """Hash: minute of occurred_at (YYYY-MM-DDTHH:MM, UTC) -> events applied."""
        return f"{self._in(bucket)}events_per_minute"

    def counters(self, aggregate_id: str) -> tuple[str, str, str]:
        """The keys an event of this aggregate increments (lua/stats.lua's KEYS[4..6], in this order)."""
        bucket = bucket_of(aggregate_id, self.buckets)
        return (self.counts(bucket), self.budget(bucket), self.events_per_minute(bucket))

    def campaign_states(self, bucket: int = 0) -> str:
        """Hash of one bucket (key layout 2 of stats): packed campaign id (`readmodels.campaigns.
        packed_id`) -> the campaign's last applied version and current contribution,
        `v|status|channel|currency|units|frac|deleted` (lua/stats.lua). One field a campaign
        rather than a hash key of its own: a key costs ~100 B of overhead beside its ~30 B of state."""
        return f"{self._in(bucket)}campaign_states"

    def user_states(self, bucket: int = 0) -> str:
        """Hash of one bucket: packed user id -> the user's last applied version."""
        return f"{self._in(bucket)}user_states"

    def campaign(self, campaign_id: str) -> tuple[str, bytes]:
        """Where the campaign's state is: its bucket's `campaign_states` and its field."""
        return self.campaign_states(bucket_of(campaign_id, self.buckets)), packed_id(campaign_id)

    def user(self, user_id: str) -> tuple[str, bytes]:
        """Where the user's state is: its bucket's `user_states` and its field."""
        return self.user_states(bucket_of(user_id, self.buckets)), packed_id(user_id)

    def layout1_campaign(self, campaign_id: str) -> str:
        """Key layout 1: a hash a campaign (status, channel, currency, units, frac, deleted, `v`)."""
        return f"{self.base}:{bucket_segment(campaign_id, self.buckets)}campaign:{campaign_id}"

    def layout1_user(self, user_id: str) -> str:
        """Key layout 1: a hash a user (`v`)."""
        return f"{self.base}:{bucket_segment(user_id, self.buckets)}user:{user_id}"


# ---------------------------------------------------------------- the monitor's feed


def monitor_channel(prefix: str) -> str:
    """Classic pub/sub channel: `{"type": "lag"|"throughput", ...}` samples and console operations,
    beside the announcement channels (a few messages a second: any node relays them)."""
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
    """Every Redis key of the throttles, under one hash tag: a login reserves an address budget
    and an account budget in one script, so all of them share one slot (one primary carries the
    throttle; logins are few beside reads)."""

    def __init__(self, prefix: str) -> None:
        self._base = f"{prefix}:{{throttle}}"

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


# The console's operation keys share one hash tag: a request is queued, listed and stored in one
# MULTI.


def console_operations_queue(prefix: str) -> str:
    """List: operation requests from the console (JSON), pushed by the query API and claimed
    (BRPOP, so by one process) by a projectors process."""
    return f"{prefix}:{{console}}:operations:queue"


def console_operations_recent(prefix: str) -> str:
    """List: the ids of the newest console operations, newest first (capped)."""
    return f"{prefix}:{{console}}:operations:recent"


def console_operation_key(prefix: str, operation_id: str) -> str:
    """String: one console operation's state as JSON (request, progress, result), with a TTL."""
    return f"{prefix}:{{console}}:operation:{operation_id}"
