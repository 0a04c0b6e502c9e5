"""What the monitor shows besides the events: the processes' own reports and the lag samples in Redis.

Projectors, workers, the relay and the schedulers each write their status to Redis; the
projectors' lag sampler writes lag, dead letters and throughput. This reads them as they are
*now*, so a process that stopped reporting shows up as stale or down rather than as its last
good report.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from redis.asyncio import Redis

from events.envelope import utc_text
from readmodels.keyspace import (
    lag_sample_key,
    relay_status_key,
    scheduler_status_key,
    throughput_history_key,
    worker_status_key,
)
from readmodels.status import heartbeat_age, read_status

# Projectors beat every 2 s, workers every 5 s: a few missed beats and the process is "stale".
STALE_AFTER_SECONDS = 15.0

_COUNTERS = {
    "records_total",
    "applied_total",
    "duplicates_total",
    "parked_total",
    "dead_lettered_total",
    "lag",
    "partitions",
    "aggregates_with_parked_events",
    "gaps_repaired_total",
    "gaps_unfillable_total",
    "anti_entropy_repairs_total",
}


def liveness(age: float | None) -> str:
    """running | stale | down, from the seconds since the last report (None: no report)."""
    if age is None:
        return "down"
    return "running" if age <= STALE_AFTER_SECONDS else "stale"


def with_liveness(view: dict[str, Any], age: float | None) -> dict[str, Any]:
    """`view` with its `state` (`liveness`) and `heartbeat_age_seconds` from the report's age."""
    view["state"] = liveness(age)
    view["heartbeat_age_seconds"] = None if age is None else round(age, 1)
    return view


def projector_view(status: Mapping[str, str], now: float) -> dict[str, Any]:
    view: dict[str, Any] = {
        name: int(value) if name in _COUNTERS and value.lstrip("-").isdigit() else value
        for name, value in status.items()
    }
    return with_liveness(view, heartbeat_age(status, now))


def worker_view(raw: bytes | None, now: float) -> dict[str, Any]:
    if raw is None:  # the heartbeat expired: no instance is running
        return {"state": "down", "heartbeat_age_seconds": None}
    status: dict[str, Any] = orjson.loads(raw)
    age = now - float(status.get("updated_at", 0))
    if status.get("state") == "running":
        status["state"] = liveness(age)
    status["heartbeat_age_seconds"] = round(age, 1)
    return status


def seconds_since(instant: object, now: float) -> float | None:
    """How long before `now` (epoch seconds) a report's ISO instant was; None if it has none."""
    return now - datetime.fromisoformat(instant).timestamp() if isinstance(instant, str) else None


def relay_view(raw: bytes | None, now: float) -> dict[str, Any]:
    if raw is None:  # only the publishing relay reports, and its report expires
        return {"state": "down", "backlog": None}
    status: dict[str, Any] = orjson.loads(raw)
    return with_liveness(status, seconds_since(status.get("updated_at"), now))


def scheduler_view(reports: Mapping[bytes, bytes], now: float) -> dict[str, Any]:
    """The schedulers as one process: the freshest report's timer queue (it is the same queue
    for all), each instance's firings and lateness, and running | stale | down."""
    instances: dict[str, dict[str, Any]] = {}
    for name, raw in reports.items():
        status: dict[str, Any] = orjson.loads(raw)
        instances[name.decode()] = with_liveness(status, seconds_since(status.get("updated_at"), now))
    if not instances:
        return {"state": "down", "pending": None, "next_due_at": None, "instances": {}}
    freshest = min(instances.values(), key=lambda s: s["heartbeat_age_seconds"] or 0.0)
    running = [s for s in instances.values() if s["state"] == "running"]
    counted_age = seconds_since(freshest.get("counted_at"), now)
    lateness = [s["last_lateness_ms"] for s in running if s.get("last_lateness_ms") is not None]
    return {
        "state": freshest["state"],
        "heartbeat_age_seconds": freshest["heartbeat_age_seconds"],
        "pending": freshest.get("pending"),
        "pending_capped": bool(freshest.get("pending_capped")),
        "overdue": freshest.get("overdue"),
        # The counts wait while the scheduler fires a backlog (scheduler_status.py): how old.
        "counts_deferred": bool(freshest.get("counts_deferred")),
        "counted_age_seconds": None if counted_age is None else round(counted_age, 1),
        "next_due_at": freshest.get("next_due_at"),
        "fired_total": sum(s.get("fired_total") or 0 for s in running),
        "last_lateness_ms": max(lateness) if lateness else None,
        "recent_p99_lateness_ms": max(
            (s["recent_p99_lateness_ms"] for s in running if s.get("recent_p99_lateness_ms") is not None),
            default=None,
        ),
        "instances": instances,
    }


class MonitorState:
    def __init__(self, redis: Redis, prefix: str, projections: Sequence[str], workers: Sequence[str]) -> None:
        self.redis = redis
        self.prefix = prefix
        self.projections = list(projections)
        self.workers = list(workers)

    async def services(self) -> dict[str, Any]:
        """The state of each projector, worker, of the relay and of the scheduler."""
        projectors = await read_status(self.redis, self.prefix, self.projections)
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(relay_status_key(self.prefix))
        pipe.hgetall(scheduler_status_key(self.prefix))
        for worker in self.workers:
            pipe.get(worker_status_key(self.prefix, worker))
        relay, schedulers, *workers = await pipe.execute()
        now = time.time()
        return {
            "at": utc_text(datetime.now(UTC)),
            "relay": relay_view(relay, now),
            "scheduler": scheduler_view(schedulers, now),
            "projectors": {name: projector_view(status, now) for name, status in projectors.items()},
            "workers": {name: worker_view(raw, now) for name, raw in zip(self.workers, workers, strict=True)},
        }

    async def samples(self) -> dict[str, Any]:
        """The latest lag sample (lag per group and partition, dead letters) and the throughput history."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(lag_sample_key(self.prefix))
        pipe.lrange(throughput_history_key(self.prefix), 0, -1)
        lag_raw, history = await pipe.execute()
        sample: dict[str, Any] = orjson.loads(lag_raw) if lag_raw else {}
        return {
            "lag": {
                "sampled_at": sample.get("sampled_at"),
                "interval_seconds": sample.get("interval_seconds"),
                "groups": sample.get("groups", []),
            },
            "dead_letters": sample.get("dead_letters", {}),
            "throughput": [orjson.loads(entry) for entry in reversed(history)],
        }
