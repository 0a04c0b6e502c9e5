"""The one settings class: every address, port, secret and size, read from CAMPAIGNS_* variables."""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Where the cluster topology's servers listen unless told otherwise (README, "Topologies").
CLUSTER_REDIS_NODES = ",".join(f"127.0.0.1:{port}" for port in range(7000, 7006))
CLUSTER_KAFKA_BOOTSTRAP = ",".join(f"127.0.0.1:{port}" for port in (19092, 19093, 19094))
# The most `campaigns relay quarantined` lists at once (the setting's bound and `--limit`'s).
RELAY_QUARANTINED_LISTED_MAX = 10_000

_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
_HTTP_URL = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~/\-]*)?")


class DefaultSecretInProduction(RuntimeError):
    """Raised when APP_ENV=production and a key is missing, guessable or readable by others."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAMPAIGNS_", extra="ignore")

    app_env: Literal["development", "test", "production"] = Field(
        default="development", validation_alias="APP_ENV"
    )

    # Servers. `topology` picks what the local stack runs: "single" (one node of each, the
    # default) or "cluster" (a Redis Cluster of 3 primaries + 3 replicas and 3 Kafka nodes with
    # replication 3 and min ISR 2); in "cluster", the Redis nodes, the Kafka bootstrap list,
    # the replication factor and min ISR default to the cluster's unless set.
    topology: Literal["single", "cluster"] = "single"
    # A replica-set URL (no directConnection): the driver discovers the members from the one
    # seed and follows a failover. SecantusDB presents itself as the replica set `secantus`.
    mongo_url: str = "mongodb://127.0.0.1:27017/"
    mongo_db: str = "campaigns"
    # Command transactions one process runs at once; the commands that arrive while they run
    # queue in the process and go together in the next one, this many at most (group commit:
    # command_api/adapters/group_commit.py; 1 runs each command in a transaction of its own).
    # On the local SecantusDB a transaction costs about as much again as the documents it
    # writes, and every statement and commit walks the server's registry of all sessions under
    # one lock: 100 transactions in flight queued there behind each other's commits.
    mongo_transactions_in_flight: int = Field(default=4, ge=1, le=1000)
    mongo_group_commit_commands: int = Field(default=32, ge=1, le=1000)
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_partitions: int = Field(default=6, ge=1)
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_min_insync_replicas: int = Field(default=1, ge=1)
    # How often producers and consumers refresh the cluster's metadata: partitions added by
    # `campaigns kafka topics --reconcile` are written to and consumed within this (Kafka's own
    # default, 5 minutes, would leave them idle that long).
    kafka_metadata_max_age_seconds: float = Field(default=30.0, gt=0)
    # Consumer groups (projectors, workers): a member that sends no heartbeat for the session
    # timeout (a stalled process) is dropped and its partitions go to the others; heartbeats are
    # sent every heartbeat interval (the broker allows 6-300 s of session by default).
    kafka_session_timeout_seconds: float = Field(default=10.0, ge=1)
    kafka_heartbeat_interval_seconds: float = Field(default=3.0, gt=0)
    # How long a service waits at start for Kafka to answer its topic check (kafka_topics.py)
    kafka_topic_check_seconds: float = Field(default=60.0, gt=0)
    topic_prefix: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "rm"
    # "host:port,host:port,...": the Redis Cluster's seed nodes (empty: standalone `redis_url`).
    redis_cluster_nodes: str = ""
    # Buckets of the read models' keyspace (readmodels.keyspace): each aggregate belongs to one,
    # and a bucket's keys share one hash tag, so every script stays in one cluster slot while the
    # buckets spread over the primaries. 0 = the default: 1 on standalone Redis (no tags, one
    # index to page through), 32 on a Redis Cluster (README, "Redis Cluster"). Changing it
    # moves every key: rebuild the projections (`campaigns replay rebuild`) after a change.
    redis_buckets: int = Field(default=0, ge=0, le=1024)
    # The event loop of every service (the APIs' uvicorn, and the relay, scheduler, projectors
    # and workers) and of the replay and dlq tools: uvloop or the standard library's
    # (service_runtime/event_loop.py).
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    # Allocations between two young collections of the cyclic garbage collector in the services,
    # once they have started (Python's own: 700); 0 leaves Python's. What was imported at start
    # is frozen out of the collector's scans either way (service_runtime/event_loop.py).
    gc_young_threshold: int = Field(default=10_000, ge=0, le=1_000_000)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_sender: str = "campaigns@localhost"

    # HTTP
    command_api_host: str = "127.0.0.1"
    command_api_port: int = 8001
    query_api_host: str = "127.0.0.1"
    query_api_port: int = 8002
    # uvicorn workers per API. One by default: uvicorn then runs the app in its own process (no
    # supervisor, no resource tracker), 370 MiB idle for all five services against 620 with two
    # (issue 21's footprint goal is 500), and on two cores a second worker read no faster
    # (README, Performance). More where there are cores to spare.
    api_workers: int = Field(default=1, ge=1)
    # How long an API keeps an idle client connection open (uvicorn's timeout_keep_alive, 5 s by
    # default). Longer than the idle timeout of the clients and proxies in front of it: a client
    # that sends a request on a pooled connection just as the server closes it gets no answer,
    # and a POST is not retried (httpx keeps idle connections 5 s, as uvicorn did). nginx's 75 s.
    http_keep_alive_seconds: int = Field(default=75, ge=1, le=3600)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    max_json_depth: int = Field(default=32, ge=2)
    # Addresses or CIDR networks of the reverse proxies whose X-Forwarded-For is believed
    # (comma-separated). Empty: none, so the client address is always the TCP peer's.
    trusted_proxies: str = ""

    # Auth: Ed25519 access-token keys (service_runtime/keys.py). None has a default: without these
    # the per-install pair under <local_dir>/keys/ (generated by `campaigns stack up`) is used.
    jwt_private_key: SecretStr = SecretStr("")  # PEM (PKCS#8), command API only
    jwt_private_key_file: str = ""
    jwt_public_keys: str = ""  # one or more PEM public keys (two during a rotation)
    jwt_public_keys_file: str = ""
    jwt_issuer: str = "campaigns-cqrs"
    jwt_audience: str = "campaigns-api"
    access_token_ttl_seconds: int = Field(default=900, ge=1)
    refresh_token_ttl_seconds: int = Field(default=14 * 24 * 3600, ge=60)
    # Sessions (service_runtime/sessions.py): a refresh family's absolute lifetime from its login;
    # the window in which a second refresh of one token gets the first one's successor; how long
    # an API process trusts the per-user "valid after" instant it read (a logout, logout-all or
    # role change ends access tokens within about this long).
    refresh_family_max_seconds: int = Field(default=30 * 24 * 3600, ge=1)
    refresh_grace_seconds: float = Field(default=10.0, ge=0)
    session_check_seconds: float = Field(default=1.0, gt=0, le=30)
    # How many verified access tokens each command-API process remembers until their `exp`
    # (service_runtime/tokens.py VerifiedAccessTokens; 0: every request verifies its token again).
    access_token_cache_size: int = Field(default=10_000, ge=0)
    # Login throttling (command_api/adapters/login_throttle.py): failed logins per address group
    # (IPv4 address, IPv6 /64) per window across all accounts; guesses per account per window from
    # clients it does not know; failures a known client (device cookie or earlier address) may make.
    login_address_max_failures: int = Field(default=50, ge=1)
    login_address_window_seconds: int = Field(default=60, ge=1)
    login_account_max_guesses: int = Field(default=100, ge=1)
    login_account_window_seconds: int = Field(default=3600, ge=1)
    login_trusted_max_failures: int = Field(default=10, ge=1)
    device_cookie_seconds: int = Field(default=90 * 24 * 3600, ge=60)
    register_max_per_address: int = Field(default=10, ge=1)
    register_window_seconds: int = Field(default=3600, ge=1)
    # Password policy (NIST SP 800-63B §5.1.1.2), for registration and POST /auth/password: length
    # bounds (the ceiling keeps argon2 from being fed megabytes; request bodies allow 512) and the
    # distinct characters a password needs at least.
    password_min_length: int = Field(default=10, ge=8, le=64)
    password_max_length: int = Field(default=128, ge=64, le=512)
    password_min_distinct: int = Field(default=5, ge=1, le=16)

    # Prometheus endpoints (GET /metrics), on an internal listener of each process, never on an
    # API's public port: the APIs' listeners run in the uvicorn parent and read every worker's
    # series (prometheus_client multiprocess mode)
    metrics_host: str = "127.0.0.1"
    command_api_metrics_port: int = 9104
    query_api_metrics_port: int = 9105
    relay_metrics_port: int = 9101
    projectors_metrics_port: int = 9102
    workers_metrics_port: int = 9103
    scheduler_metrics_port: int = 9106
    # Instances of each scaled-out service `campaigns run` starts (topology cluster: 2 unless
    # set). Instance n (from 1) serves its metrics on the service's port + (n - 1) * step.
    relay_instances: int = Field(default=1, ge=1, le=9)
    projectors_instances: int = Field(default=1, ge=1, le=9)
    workers_instances: int = Field(default=1, ge=1, le=9)
    metrics_port_instance_step: int = Field(default=10, ge=1)

    # Pipeline
    relay_lease_seconds: float = Field(default=10.0, gt=0)
    relay_batch_size: int = Field(default=500, ge=1)
    # How long after a new event arrived the relay waits for the ones right behind it, so they share one
    # Kafka transaction (a transaction costs the relay and the broker about as much as its
    # records). Only while events keep coming (the new one arrived within this long of the one
    # before it: command_api/adapters/relay_linger.py), so a lone event never waits; 0: off.
    # 30 rather than 15: at 100 commands/s ~0.75 ms less CPU a command over the services and
    # ~0.7 ms less of the servers', freshness p50 ~7 ms longer and p99 no worse (bench/NOTES.md,
    # session 43); 40 and 50 added to freshness and took little more off.
    relay_linger_ms: float = Field(default=30.0, ge=0, le=1000)
    # The relay's Kafka transactional.id (prefixed with topic_prefix): stable across restarts, so
    # a relay that starts publishing fences any older one still alive (its transactions fail).
    relay_transactional_id: str = Field(default="campaigns-relay", min_length=1)
    # Off only to measure what the transactions cost (bench/relay_transactions.py): without them a
    # relay paused past its lease is not fenced, and a failed batch may leave part of itself
    # visible (the version guards make the resent duplicates harmless, but nothing stops the stale
    # relay). Keep it on.
    relay_transactions: bool = True
    # Largest record the relay sends (the producer's max.request.size; Kafka's default topic
    # limit is about 1 MiB). A larger event is quarantined, never retried forever.
    relay_max_message_bytes: int = Field(default=1024 * 1024, ge=1024)
    # When the change stream cannot resume from the relay's watermark (its history is gone from
    # the oplog), the relay republishes every event recorded since this long before the newest
    # it had published: longer than any transaction stays open (MongoDB's
    # transactionLifetimeLimitSeconds, 60 by default) plus the clocks' skew between the command
    # API's hosts, so no event committed after the watermark is missed (those before it inside the
    # margin go out again: duplicates, which every consumer ignores).
    relay_rescan_margin_seconds: float = Field(default=300.0, ge=60)
    # `campaigns relay quarantined` lists at most this many (each read whole, up to
    # relay_max_message_bytes and more, one cursor batch held at a time); `--limit` asks for
    # another number.
    relay_quarantined_listed: int = Field(default=100, ge=1, le=RELAY_QUARANTINED_LISTED_MAX)
    consumer_batch_size: int = Field(default=500, ge=1)
    # How long an idle consumer's poll waits before it polls again (FastStream's batch_timeout_ms).
    # Records are consumed as soon as they arrive whatever this is (service_runtime/kafka_batches.py),
    # so it only sets how often an idle consumer wakes.
    consumer_poll_ms: int = Field(default=500, ge=10, le=60_000)
    # Consumers whose readers need no sub-second freshness (the projections that announce nothing,
    # i.e. stats; both workers) fetch in batches: the broker answers once this many bytes are
    # ready or the wait passed (Kafka's fetch.min.bytes / fetch.max.wait.ms). At a steady rate
    # they then take tens of records per fetch, Kafka commit and Redis round trip rather than
    # one. 1 byte: every record at once, as the announcing projections always do.
    batch_fetch_min_bytes: int = Field(default=64 * 1024, ge=1)
    batch_fetch_wait_ms: int = Field(default=500, ge=0, le=10_000)
    # How often each projection writes its counters and last batch to its status hash (not per
    # batch: live batches are mostly one event, and the monitor refreshes once a second).
    projector_status_seconds: float = Field(default=0.5, gt=0, le=60)
    # How often each projection commits the Kafka offsets of the batches it has fully written
    # (service_runtime/kafka_commits.py), rather than after every batch: live batches are mostly
    # one event. Offsets are also committed before a rebalance takes partitions and at stop; a
    # crash re-consumes at most this much, which the version guards make harmless. 0: per batch.
    projector_commit_seconds: float = Field(default=0.25, ge=0, le=60)
    read_wait_seconds: float = Field(default=2.0, ge=0)
    # A batch the servers refused (Redis down, a timeout, a failover) is retried in place, holding
    # its partition, after pauses from `projector_retry_initial_seconds` doubling up to
    # `projector_retry_max_seconds`; after `projector_retry_hold_seconds` it is handed back to
    # Kafka (not committed) so the consumer keeps polling within max.poll.interval.ms.
    projector_retry_initial_seconds: float = Field(default=0.2, gt=0)
    projector_retry_max_seconds: float = Field(default=10.0, gt=0)
    projector_retry_hold_seconds: float = Field(default=120.0, gt=0)
    # How long an event parked behind a missing version waits before the missing versions are
    # read from the MongoDB events log; how often the parked aggregates are looked at.
    gap_repair_delay_seconds: float = Field(default=2.0, ge=0)
    gap_repair_scan_seconds: float = Field(default=1.0, gt=0)
    # Repairs (gap repairs, anti-entropy repairs) each projection keeps a line of, newest first,
    # for the console's gaps view.
    repairs_kept: int = Field(default=100, ge=1, le=10_000)
    # How often the projectors look for the read models' sentinel: a Redis that lost it (FLUSHALL,
    # a new empty server) is detected within twice this (two checks in a row must find it gone),
    # and every projection rebuilt from the log.
    redis_loss_check_seconds: float = Field(default=1.0, gt=0)
    # A live generation in an older key layout than this code reads (an upgrade across a layout
    # change) is rebuilt by the projectors at start; if the rebuild cannot run yet (another one
    # holds the lock) or fails, it is tried again this often. The replaced generation stays
    # readable this long after the swap before it is deleted.
    layout_check_seconds: float = Field(default=5.0, gt=0)
    layout_rebuild_grace_seconds: float = Field(default=15.0, ge=0, le=600)
    # How long a projectors stop waits for its consumers to finish their batch and leave their
    # groups (a loaded broker can take minutes to answer LeaveGroup).
    projectors_stop_seconds: float = Field(default=20.0, gt=0)
    # How long a service's stop waits for its background loops (heartbeats, status, the query
    # API's generation poll and notification listener) before it goes on without them
    # (service_runtime/background.py); the projectors' loops take projectors_stop_seconds.
    background_stop_seconds: float = Field(default=5.0, gt=0, le=300)
    # Anti-entropy (projectors/application/anti_entropy.py): the projectors walk the write side's
    # aggregates `anti_entropy_batch_size` at a time, reading at most
    # `anti_entropy_keys_per_second` read-model keys a second, and rest
    # `anti_entropy_interval_seconds` between two sweeps. The pass yields to the live consumers
    # (projectors/domain/pacing.py): each event a second they apply takes ten keys off its rate,
    # down to `anti_entropy_busy_keys_per_second` (set it to the full rate to never yield). A
    # read model still behind the write side after `anti_entropy_grace_seconds` (longer than an
    # event takes to be projected) is repaired from the events log; not while its consumers have
    # more than a batch to read.
    # A step costs ~2.5 ms of the process's CPU whatever its size (a getMore, a claim and a read
    # per projection) beside ~5 us a key, so larger pages cost the pass less (500: -25%); but runs
    # beside pages of 500 measured the commands' p50 latency at 100/s at 35-48 ms against 9, on a
    # local MongoDB (SecantusDB) that slowed run after run, which does not clear a getMore of 500
    # documents (bench/NOTES.md, session 31): 200 stays until a cleaner measurement.
    anti_entropy_enabled: bool = True
    anti_entropy_batch_size: int = Field(default=200, ge=1, le=10_000)
    anti_entropy_keys_per_second: float = Field(default=2000.0, gt=0)
    anti_entropy_busy_keys_per_second: float = Field(default=200.0, gt=0)
    anti_entropy_interval_seconds: float = Field(default=2.0, ge=0)
    anti_entropy_grace_seconds: float = Field(default=5.0, ge=0)
    # min_version reads held waiting at once, per user and per query-API worker (over: 429 at once)
    min_version_waiters_per_user: int = Field(default=10, ge=1)
    min_version_waiters_per_worker: int = Field(default=1000, ge=1)
    # A list page walks one sorted index and keeps what matches the other filters: a round of
    # script calls examines at most `list_scan_budget` index members, summed over the buckets
    # (bounds how long one call holds Redis), and a page short of its limit goes on from where the
    # round stopped, for `list_scan_calls` rounds at most (then the page is short, its cursor
    # continues the walk).
    list_scan_budget: int = Field(default=5000, ge=1, le=1_000_000)
    list_scan_calls: int = Field(default=200, ge=1, le=100_000)
    # The query API's in-process campaign cache (query_api/adapters/campaign_cache.py), per
    # worker: its memory bound (0 turns it off) and how long an entry may live at most.
    campaign_cache_bytes: int = Field(default=16 * 1024 * 1024, ge=0)
    campaign_cache_seconds: float = Field(default=1.0, gt=0)
    # Its pages of GET /campaigns (same entry lifetime; any announcement drops them all): their
    # memory bound per worker (0 turns them off).
    list_cache_bytes: int = Field(default=4 * 1024 * 1024, ge=0)
    freshness_limit_seconds: float = Field(default=60.0, gt=0)
    worker_max_attempts: int = Field(default=5, ge=1)
    worker_backoff_seconds: float = Field(default=0.5, gt=0)
    # Records a worker consumes at once (one Kafka commit per batch; each record still in order).
    worker_batch_size: int = Field(default=500, ge=1)

    # Scheduler: the one holding the scheduler's lease (renewed every quarter of its term; another
    # takes over at most lease_seconds after it dies, at once after it stops) reads the timers due
    # within the lookahead (batch_size a read) and fires them at their due time; an idle one polls.
    scheduler_lookahead_seconds: float = Field(default=1.0, gt=0, le=60)
    scheduler_poll_seconds: float = Field(default=0.25, gt=0, le=60)
    scheduler_lease_seconds: float = Field(default=5.0, gt=0)
    scheduler_batch_size: int = Field(default=500, ge=1)
    # While a burst keeps reads full, each reads from the previous one's latest due time; one
    # from the earliest (for timers left after a failed firing or written behind it) runs at
    # least this often.
    scheduler_sweep_seconds: float = Field(default=5.0, gt=0)
    # Transactions in flight, and timers fired together in one (those due at the same moment).
    # One at a time by default: concurrent large transactions stalled the local SecantusDB (a
    # burst of 10,000 stopped after 700 with 4 in flight, and 2 hit the firing timeout; with 1 all
    # fired; batches of 500 stalled it too, 125 firings/s against 381 at 200), and the batches
    # already carry a burst in few commits. A firing that takes longer than its timeout is
    # abandoned and its timers released for another try.
    scheduler_concurrency: int = Field(default=1, ge=1)
    scheduler_fire_batch: int = Field(default=200, ge=1)
    scheduler_firing_timeout_seconds: float = Field(default=10.0, gt=0)
    # The status report's timer queue (pending, overdue, next due) is read from MongoDB this often
    # (the report itself goes out every 2 s), pending and overdue each counted up to its limit
    # ("1000+"): counting every timer each report cost the local SecantusDB a share of a burst's
    # firing time (it reads every campaign it counts).
    scheduler_queue_seconds: float = Field(default=10.0, gt=0)
    # While the scheduler fires a backlog (timers it holds are due), the counts wait up to this
    # long since the last (shown meanwhile, with when they were taken): they took ~4% of a
    # burst's firings from the local SecantusDB.
    scheduler_queue_deferred_seconds: float = Field(default=60.0, gt=0)
    scheduler_overdue_count_limit: int = Field(default=1000, ge=1)
    scheduler_pending_count_limit: int = Field(default=10_000, ge=1)

    # Monitor: how often the projectors sample consumer lag, dead letters and throughput
    monitor_sample_seconds: float = Field(default=5.0, gt=0)
    # The monitor socket: its first (auth) message's size and deadline, and sockets per worker that
    # have not authenticated yet (more are refused before the handshake completes)
    monitor_first_frame_bytes: int = Field(default=64 * 1024, ge=1024)
    monitor_auth_seconds: float = Field(default=5.0, gt=0)
    monitor_preauth_sockets: int = Field(default=50, ge=1)

    # Abuse limits of the command API, per user: a token bucket of commands (refill per second,
    # burst), and campaigns neither deleted nor completed
    command_rate_per_second: float = Field(default=5.0, gt=0)
    command_burst: int = Field(default=30, ge=1)
    max_live_campaigns: int = Field(default=1000, ge=1)
    # How old an owner's live-campaign count may get before a create counts again, once the
    # command rate could have brought the owner to the cap since (at the cap it is counted every
    # time), and how many owners' tallies each process keeps (command_api/application/live_cap.py)
    live_campaigns_recount_seconds: float = Field(default=2.0, ge=0)
    live_campaigns_tracked_owners: int = Field(default=10_000, ge=1)

    # Dead-letter operations (`campaigns dlq`, deadletters/): records per page of a scan, per
    # re-driven batch, how many a replay may re-drive without a confirmation, and how many pending
    # records one replay plans at most (summaries only, a few hundred bytes each; run it again
    # for the rest).
    dlq_page_records: int = Field(default=500, ge=1)
    dlq_replay_batch_size: int = Field(default=100, ge=1)
    dlq_confirm_above: int = Field(default=100, ge=0)
    dlq_replay_max_records: int = Field(default=100_000, ge=1)

    # Operator console (the monitor page). The page logs in on the command API at its address as
    # a browser reaches it; the command API answers cross-origin requests (CORS) only from these
    # page origins, comma-separated (empty: from none). `campaigns run` sets the query API's own.
    command_api_public_url: str = "http://127.0.0.1:8001"
    console_origins: str = ""
    # Dead letters listed per topic, and audit lines shown, by the console's views.
    console_dead_letters_shown: int = Field(default=100, ge=1, le=1000)
    console_audit_shown: int = Field(default=100, ge=1, le=1000)
    # Console operations (a verify run by a projectors process): how long each one's state is
    # kept, and how many are listed.
    console_operation_ttl_seconds: int = Field(default=7 * 86400, ge=60)
    console_operations_shown: int = Field(default=20, ge=1, le=200)
    # The gaps view: aggregates with parked events listed per page (at most; a client asks for
    # fewer with `limit`), parked entries shown per aggregate, and repairs listed per projection.
    console_parked_page_max: int = Field(default=100, ge=1, le=1000)
    console_parked_entries_shown: int = Field(default=20, ge=1, le=1000)
    console_repairs_shown: int = Field(default=20, ge=1, le=10_000)
    # A rebuild started from the console: how long the replaced generation stays readable before
    # it is deleted (as `campaigns replay rebuild --grace-seconds`).
    console_rebuild_grace_seconds: float = Field(default=15.0, ge=0, le=600)

    # Replay (`campaigns replay rebuild/verify`): campaigns folded in memory before they are
    # written (each written once per window, however many of its events the window holds; 0
    # writes every event through the live projector's apply). The window being folded and what is
    # left of the one being written hold this many together, so memory grows with this, not with
    # the log: ~1.4 KiB of RSS a campaign (its document as stored and its new fields as JSON).
    # From Kafka, partitions are read one at a time and the window is written out at each one's
    # end, so a window of one partition's campaigns (of a process's share of it) folds them whole.
    # Then campaigns per pipelined write.
    replay_fold_campaigns: int = Field(default=10_000, ge=0)
    replay_write_campaigns: int = Field(default=500, ge=1)
    # The full pass from Kafka read by this many processes, each a part of the partitions (an
    # aggregate's events share one), when it holds at least `replay_parallel_min_events` records
    # (below that, starting a process costs more than it saves); the fold window is shared out
    # among them. 1: one process, as before. Each process is a core while the pass runs.
    replay_processes: int = Field(default=2, ge=1, le=64)
    replay_parallel_min_events: int = Field(default=20_000, ge=0)

    # Local stack
    local_dir: str = ".local"
    # Heap (-Xms = -Xmx) of each Kafka node of the cluster topology, in MiB
    kafka_cluster_heap_mb: int = Field(default=384, ge=128)
    # JVM options of every local Kafka node, split on spaces, after its heap. By default the quick
    # C1 compiler only: on the 2-core machine a node's start took 17.9 s of CPU with C2 and 10.3
    # without, its first idle minute 11.9 s and 4.7, and at 100 commands/s Kafka's share was
    # 4.0-5.2 ms of CPU a command with C2 against 3.0-3.3 with C1 (`BENCH_ONLY=cpu`).
    kafka_jvm_options: str = "-XX:TieredStopAtLevel=1"

    @property
    def kafka_metadata_max_age_ms(self) -> int:
        return int(self.kafka_metadata_max_age_seconds * 1000)

    @property
    def kafka_session_timeout_ms(self) -> int:
        return int(self.kafka_session_timeout_seconds * 1000)

    @property
    def kafka_heartbeat_interval_ms(self) -> int:
        return int(self.kafka_heartbeat_interval_seconds * 1000)

    @property
    def kafka_bootstrap_servers(self) -> list[str]:
        """`kafka_bootstrap` as a list: FastStream takes a string as one single address."""
        return [address.strip() for address in self.kafka_bootstrap.split(",") if address.strip()]

    @property
    def redis_cluster_addresses(self) -> list[str]:
        """The Redis Cluster's seed nodes; empty when Redis is the standalone `redis_url`."""
        return [address.strip() for address in self.redis_cluster_nodes.split(",") if address.strip()]

    @property
    def read_model_buckets(self) -> int:
        """`redis_buckets`, or its default for the topology of Redis in use."""
        if self.redis_buckets:
            return self.redis_buckets
        return 32 if self.redis_cluster_addresses else 1

    @field_validator("command_api_public_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not _HTTP_URL.fullmatch(value):
            raise ValueError("must be an http(s) URL such as http://127.0.0.1:8001")
        return value

    @field_validator("console_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        origins = [origin.strip().rstrip("/") for origin in value.split(",") if origin.strip()]
        for origin in origins:
            if not _ORIGIN.fullmatch(origin):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], no path, no wildcard)")
        return ",".join(origins)

    @property
    def console_origin_list(self) -> list[str]:
        return [origin for origin in self.console_origins.split(",") if origin]

    @model_validator(mode="after")
    def _cluster_topology_defaults(self) -> Settings:
        if self.topology == "cluster":
            given = self.model_fields_set
            if not self.redis_cluster_nodes:
                self.redis_cluster_nodes = CLUSTER_REDIS_NODES
            if "kafka_bootstrap" not in given:
                self.kafka_bootstrap = CLUSTER_KAFKA_BOOTSTRAP
            if "kafka_replication_factor" not in given:
                self.kafka_replication_factor = 3
            if "kafka_min_insync_replicas" not in given:
                self.kafka_min_insync_replicas = 2
            for count in ("relay_instances", "projectors_instances", "workers_instances"):
                if count not in given:
                    setattr(self, count, 2)
        if self.kafka_heartbeat_interval_seconds >= self.kafka_session_timeout_seconds:
            raise ValueError("kafka_heartbeat_interval_seconds must be below kafka_session_timeout_seconds")
        if self.redis_cluster_nodes and self.redis_buckets == 1:
            raise ValueError("redis_buckets must be at least 2 on a Redis Cluster (1 = untagged keys)")
        if self.kafka_min_insync_replicas > self.kafka_replication_factor:
            raise ValueError(
                "kafka_min_insync_replicas must not exceed kafka_replication_factor "
                f"({self.kafka_min_insync_replicas} > {self.kafka_replication_factor})"
            )
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, value: str) -> str:
        entries = [entry.strip() for entry in value.split(",") if entry.strip()]
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(
                    f"{entry!r} is not an IP address or network (and '*' is never allowed)"
                ) from exc
        return ",".join(entries)

    @model_validator(mode="after")
    def _refuse_weak_keys_in_production(self) -> Settings:
        if self.app_env == "production":
            from service_runtime.keys import production_problems

            problems = production_problems(self)
            if problems:
                raise DefaultSecretInProduction("; ".join(problems))
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
