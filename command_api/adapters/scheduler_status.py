"""The scheduler's metrics and its status report for the monitor.

Each scheduler instance writes its report as one field of a Redis hash (`{prefix}:status:scheduler`,
field = instance), refreshed every few seconds; the monitor shows the instances whose report is
fresh. A report carries the timer queue (pending, overdue, next due time; read from MongoDB every
`scheduler_queue_seconds`, see `MongoDueTransitions.queue`) and this instance's firings and
lateness (from memory, every report).
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge, Histogram

from command_api.adapters.due_transitions import TimerQueue
from command_api.domain.campaign import DueTimer
from readmodels.keyspace import scheduler_status_key

# Reports older than this are dropped from the hash by the next scheduler that reports.
FORGET_AFTER_SECONDS = 60.0
# The recent lateness the report summarises (max and p99 over the last firings).
RECENT_FIRINGS = 1000

TIMERS_PENDING = Gauge(
    "scheduler_timers_pending", "Durable timers waiting to fire", ["scheduler"], multiprocess_mode="livemax"
)
TIMERS_OVERDUE = Gauge(
    "scheduler_timers_overdue",
    "Durable timers whose due time has passed and that have not fired yet",
    ["scheduler"],
    multiprocess_mode="livemax",
)
FIRED = Counter("scheduler_transitions_fired_total", "Transitions the scheduler fired", ["action"])
SKIPPED = Counter(
    "scheduler_firings_skipped_total",
    "Timers that fired nothing (stale: the campaign moved on, or fired already)",
    ["action"],
)
FAILED = Counter(
    "scheduler_firings_failed_total",
    "Firings that failed (their timers are read and fired again)",
    ["action"],
)
LATENESS = Histogram(
    "scheduler_firing_lateness_seconds",
    "How long after its due time each transition fired",
    ["action"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0),
)


@dataclass
class SchedulerReport:
    """This instance's firings, as metrics and as the numbers of its status report."""

    instance: str
    fired_total: int = 0
    skipped_total: int = 0
    failed_total: int = 0
    last_fired_at: datetime | None = None
    last_lateness_ms: int | None = None
    recent_lateness_ms: deque[int] = field(default_factory=lambda: deque(maxlen=RECENT_FIRINGS))

    def fired(self, timer: DueTimer, lateness: timedelta) -> None:
        FIRED.labels(timer.action).inc()
        LATENESS.labels(timer.action).observe(lateness.total_seconds())
        millis = lateness // timedelta(milliseconds=1)
        self.fired_total += 1
        self.last_fired_at = timer.due_at + lateness
        self.last_lateness_ms = millis
        self.recent_lateness_ms.append(millis)

    def skipped(self, timer: DueTimer) -> None:
        SKIPPED.labels(timer.action).inc()
        self.skipped_total += 1

    def failed(self, timer: DueTimer, error: BaseException) -> None:
        FAILED.labels(timer.action).inc()
        self.failed_total += 1

    def status(self, queue: TimerQueue, now: datetime, *, leading: bool = True) -> dict[str, Any]:
        """The report; `leading`: this instance holds the scheduler's lease (it fires; the
        others stand by)."""
        TIMERS_PENDING.labels(self.instance).set(queue.pending)
        TIMERS_OVERDUE.labels(self.instance).set(queue.overdue)
        recent = sorted(self.recent_lateness_ms)
        p99 = recent[min(len(recent) - 1, int(len(recent) * 0.99))] if recent else None
        return {
            "scheduler": self.instance,
            "state": "running",
            "leading": leading,
            "pending": queue.pending,
            "pending_capped": queue.pending_capped,
            "overdue": queue.overdue,
            "overdue_capped": queue.overdue_capped,
            "next_due_at": _iso(queue.next_due_at) if queue.next_due_at else None,
            "counted_at": _iso(queue.counted_at) if queue.counted_at else None,
            "counts_deferred": queue.deferred,
            "fired_total": self.fired_total,
            "skipped_total": self.skipped_total,
            "failed_total": self.failed_total,
            "last_fired_at": _iso(self.last_fired_at) if self.last_fired_at else None,
            "last_lateness_ms": self.last_lateness_ms,
            "recent_max_lateness_ms": recent[-1] if recent else None,
            "recent_p99_lateness_ms": p99,
            "updated_at": _iso(now),
        }


@dataclass
class QueueReading:
    """The timer queue for the status report: read (`read(now, next_due_at)`) at most every
    `every` seconds, the last reading reused in between; the next due time is the scheduler's
    own (the earliest timer it holds) whenever it holds one, so it stays current between reads.

    While the scheduler works through a backlog (`behind`: timers it holds are due and wait for a
    firing), the counts wait, up to `deferred` seconds since the last: on SecantusDB a count reads
    every campaign it counts, and counting up to 10,000 pending timers every 10 s took about 4%
    of a burst's firings from the database (bench/NOTES.md, session 42). The last counts are shown
    meanwhile, with when they were taken (`counted_at`)."""

    read: Callable[[datetime, datetime | None], Awaitable[TimerQueue]]
    every: float
    deferred: float = 60.0
    monotonic: Callable[[], float] = time.monotonic
    _last: TimerQueue | None = field(default=None, init=False)
    _read_at: float = field(default=float("-inf"), init=False)

    async def current(
        self, now: datetime, held_next_due_at: datetime | None, *, behind: bool = False
    ) -> TimerQueue:
        age = self.monotonic() - self._read_at
        if self._last is None or age >= max(self.every, self.deferred if behind else 0.0):
            reading = await self.read(now, held_next_due_at)
            self._last = dataclasses.replace(reading, counted_at=now)
            self._read_at = self.monotonic()
            age = 0.0
        return dataclasses.replace(
            self._last,
            next_due_at=held_next_due_at or self._last.next_due_at,
            deferred=age >= self.every,
        )


class RedisSchedulerStatus:
    def __init__(self, redis: aioredis.Redis, redis_prefix: str) -> None:
        self._redis = redis
        self._key = scheduler_status_key(redis_prefix)

    async def publish(self, instance: str, status: dict[str, Any]) -> None:
        await self._redis.hset(self._key, instance, orjson.dumps(status))
        # Forget instances gone for good (a restarted scheduler reports under a new name).
        reports = await self._redis.hgetall(self._key)
        cutoff = time.time() - FORGET_AFTER_SECONDS
        gone = [name for name, raw in reports.items() if _reported_at(raw) < cutoff]
        if gone:
            await self._redis.hdel(self._key, *gone)

    async def withdraw(self, instance: str) -> None:
        await self._redis.hdel(self._key, instance)


def _reported_at(raw: bytes | str) -> float:
    try:
        updated = orjson.loads(raw).get("updated_at")
        return datetime.fromisoformat(updated).timestamp() if isinstance(updated, str) else 0.0
    except (orjson.JSONDecodeError, ValueError, AttributeError):
        return 0.0


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
