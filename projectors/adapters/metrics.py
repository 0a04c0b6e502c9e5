"""Prometheus metrics of the projectors (served by `campaigns serve projectors` on its metrics port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from projectors.application.consume import BatchReport

RECORDS = Counter(
    "projector_records_total", "Kafka records consumed by a projection, by outcome", ["projection", "outcome"]
)
BATCH_SECONDS = Histogram(
    "projector_batch_seconds",
    "Time to apply one batch (decode, Redis, dead letters), before the offset commit",
    ["projection"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
LAG = Gauge(
    "projector_lag_records",
    "Records between the projection's position and the partitions' end",
    ["projection"],
)

RETRIES = Counter(
    "projector_batch_retries_total",
    "Batches retried in place because a server refused them (never dead-lettered)",
    ["projection"],
)
GAPS_REPAIRED = Counter(
    "projector_gaps_repaired_total",
    "Missing versions read from the events log and applied (gap repairs)",
    ["projection"],
)
GAPS_UNFILLABLE = Counter(
    "projector_gaps_unfillable_total",
    "Gaps the events log could not fill: the parked events were dead-lettered",
    ["projection"],
)
REDIS_LOSS = Counter(
    "projector_redis_loss_detected_total",
    "Times the read models' sentinel was found gone (Redis flushed or replaced): projections rebuilt",
)
ANTI_ENTROPY_REPAIRS = Counter(
    "projector_anti_entropy_repairs_total",
    "Aggregates whose read model was found behind the write side and repaired from the events log",
    ["projection"],
)
LAYOUT_REBUILDS = Counter(
    "projector_layout_rebuilds_total",
    "Projections rebuilt at start because their live generation held an older key layout",
    ["projection"],
)
ANTI_ENTROPY_CHECKED = Counter(
    "projector_anti_entropy_keys_checked_total",
    "Read-model keys whose version anti-entropy compared with the write side's",
)
ANTI_ENTROPY_PACE = Gauge(
    "projector_anti_entropy_pace_keys_per_second",
    "The anti-entropy pass's key rate now: its full rate, less what the live consumers' events take",
)
ANTI_ENTROPY_SWEEPS = Counter(
    "projector_anti_entropy_sweeps_total",
    "Complete anti-entropy sweeps over every aggregate of the write side",
)
for _name in ("campaigns", "users", "stats"):
    ANTI_ENTROPY_REPAIRS.labels(_name)
    GAPS_REPAIRED.labels(_name)
    GAPS_UNFILLABLE.labels(_name)
    RETRIES.labels(_name)


def observe_batch(projection: str, report: BatchReport, seconds: float) -> None:
    BATCH_SECONDS.labels(projection).observe(seconds)
    for outcome, count in (
        ("applied", report.applied),
        ("duplicate", report.duplicates),
        ("parked", report.parked),
        ("dead_lettered", report.dead_lettered),
    ):
        if count:
            RECORDS.labels(projection, outcome).inc(count)


def observe_lag(projection: str, lag: int) -> None:
    LAG.labels(projection).set(lag)
