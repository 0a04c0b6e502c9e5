"""What the outbox relay tells the operator: its Prometheus metrics and the status it writes to
Redis for the monitor (backlog, lease holder and epoch, last publish, alerts)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import redis.asyncio as aioredis
from prometheus_client import Counter, Gauge
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError

from command_api.adapters.mongo_schema import QUARANTINED_INDEX, Document, IndexGate
from command_api.adapters.relay_lease import RelayLease
from events.envelope import utc_now, utc_text
from events.log import count_recorded_after
from readmodels.keyspace import relay_status_key

log = logging.getLogger(__name__)

STATUS_INTERVAL_SECONDS = 2.0

# Labelled, so nothing is created at import (prometheus multiprocess mode writes files then).
PUBLISHED = Counter(
    "relay_events_published_total", "Events the outbox relay published to Kafka", ["aggregate_type"]
)
PUBLISH_FAILURES = Counter(
    "relay_publish_failures_total", "Publish attempts Kafka did not acknowledge", ["relay"]
)
BACKLOG = Gauge(
    "relay_backlog_events", "Events in MongoDB not yet published", ["relay"], multiprocess_mode="livemax"
)
LEASE_HELD = Gauge(
    "relay_lease_held",
    "1 while this relay holds the publishing lease",
    ["relay"],
    multiprocess_mode="livemax",
)
FENCED = Counter(
    "relay_fenced_total", "Times a newer relay's producer fenced this relay's off Kafka", ["relay"]
)
HISTORY_LOST = Counter(
    "relay_change_stream_history_lost_total",
    "Times the change stream could not resume (history gone); the relay fell back to a full scan",
    ["relay"],
)
QUARANTINED = Counter(
    "relay_events_quarantined_total",
    "Outbox events that cannot be published (cannot be serialised, too large), set aside",
    ["reason"],
)
QUARANTINED_NOW = Gauge(
    "relay_quarantined_events",
    "Outbox events quarantined in MongoDB, waiting for an operator",
    ["relay"],
    multiprocess_mode="livemax",
)


@dataclass
class RelayProgress:
    """What this relay did, for its status: counters the publishing loop and the feed update."""

    published_total: int = 0
    last_published_at: datetime | None = None
    fenced_total: int = 0
    history_lost_total: int = 0
    history_lost_at: datetime | None = None
    history_lost_reason: str | None = None
    quarantined_total: int = 0


class RelayStatusReporter:
    """Every few seconds, while this relay holds the lease: its status into Redis (with an
    expiry, so a key no one renews says no relay publishes) and its gauges."""

    def __init__(
        self,
        *,
        lease: RelayLease,
        gate: IndexGate,
        events: AsyncCollection[Document],
        progress: RelayProgress,
        recorded_through: Callable[[], datetime | None],
        redis: aioredis.Redis | None,
        redis_prefix: str,
    ) -> None:
        self._lease = lease
        self._gate = gate
        self._events = events
        self._progress = progress
        self._recorded_through = recorded_through
        self._redis = redis
        self._key = relay_status_key(redis_prefix)

    async def status(self) -> dict[str, Any]:
        progress = self._progress
        lease = await self._lease.current()
        # The backlog: the events recorded after the newest one published (events of transactions
        # that committed late count from when they were recorded; a quarantined event past it
        # counts until a later one is published). Both counts hinted: the planner of the local
        # server (SecantusDB) does not pick an index by itself and read the whole events log for
        # each (every 2 s, a cost that grew with the log).
        backlog = await count_recorded_after(self._events, self._recorded_through())
        quarantined = await self._events.count_documents(
            {"quarantine": {"$exists": True}}, hint=QUARANTINED_INDEX
        )
        lost_at = progress.history_lost_at
        return {
            "relay": self._lease.holder,
            "holds_lease": self._lease.held,
            "lease_holder": str(lease["holder"]) if lease else None,
            "lease_epoch": int(lease.get("epoch", 0)) if lease else None,
            "backlog": backlog,
            "published_total": progress.published_total,
            "last_published_at": utc_text(progress.last_published_at) if progress.last_published_at else None,
            "fenced_total": progress.fenced_total,
            "quarantined": quarantined,
            # An alert: the change stream could not resume, so the relay scanned the whole
            # backlog instead (nothing is skipped); check the oplog's size against relay downtime.
            "change_stream_history_lost": (
                {
                    "total": progress.history_lost_total,
                    "last_at": utc_text(lost_at),
                    "reason": progress.history_lost_reason,
                }
                if lost_at
                else None
            ),
            "updated_at": utc_text(utc_now()),
        }

    async def run(self) -> None:
        holder = self._lease.holder
        while True:
            LEASE_HELD.labels(holder).set(1 if self._lease.held else 0)
            # Only the publishing relay reports; with none publishing, the key expires. Its counts
            # are served by indexes the relay creates once it holds the lease.
            if self._lease.held and self._gate.ready:
                try:
                    status = await self.status()
                    BACKLOG.labels(holder).set(status["backlog"])
                    QUARANTINED_NOW.labels(holder).set(status["quarantined"])
                    if self._redis is not None:
                        await self._redis.set(
                            self._key, orjson.dumps(status), ex=int(STATUS_INTERVAL_SECONDS * 3)
                        )
                except (PyMongoError, RedisError) as exc:
                    log.warning("relay status not reported: %s", exc)
                except Exception:
                    log.exception("unexpected error reporting the relay status")
            await asyncio.sleep(STATUS_INTERVAL_SECONDS)
