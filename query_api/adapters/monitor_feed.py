"""The monitor's live feed in one query API worker: one pub/sub subscription, fanned out to clients.

Every worker subscribes to the projectors' announcement channels (one shard channel per bucket)
and the lag sampler's monitor channel, so whichever worker a browser lands on sees every event.
Each client has a bounded queue: a client that does not keep up loses messages (counted, and
told how many) instead of holding up the others, and one that stays full for too long is flagged
so its connection can be closed (1013, try again later). The subscription is held only while at
least one client is connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson
from prometheus_client import Counter, Gauge
from redis.asyncio import Redis

from readmodels.keyspace import announcement_channels, monitor_channel
from service_runtime.background import STOP_SECONDS, cancel_and_wait
from service_runtime.redis_pubsub import Message, Subscription

log = logging.getLogger(__name__)

QUEUE_CAPACITY = 1000
# How long a client's queue may stay full before the client counts as too slow.
SLOW_CLIENT_SECONDS = 10.0
STATUS_SECONDS = 2.0
SUBSCRIBE_WAIT_SECONDS = 5.0

# Labelled by service, so nothing is created at import (prometheus multiprocess mode).
CLIENTS = Gauge(
    "monitor_clients", "Monitor WebSocket clients connected", ["service"], multiprocess_mode="livesum"
)
DROPPED = Counter("monitor_messages_dropped_total", "Monitor messages dropped for slow clients", ["service"])
SERVICE = "query-api"


def event_message(raw: bytes) -> str:
    """A projector's notice as the monitor's `event` message, with the delay to projection."""
    notice: dict[str, Any] = orjson.loads(raw)
    try:
        delay = datetime.fromisoformat(notice["projected_at"]) - datetime.fromisoformat(notice["occurred_at"])
        notice["delay_ms"] = round(delay.total_seconds() * 1000)
    except (KeyError, TypeError, ValueError):
        notice["delay_ms"] = None
    return orjson.dumps({"type": "event", **notice}).decode()


class Subscriber:
    """One client's bounded queue of outgoing messages (JSON text)."""

    def __init__(
        self,
        capacity: int = QUEUE_CAPACITY,
        patience: float = SLOW_CLIENT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue(capacity)
        self.patience = patience
        self.clock = clock
        self.dropped = 0  # since the client was last told
        self.dropped_total = 0
        self.too_slow = asyncio.Event()
        self._full_since: float | None = None

    def offer(self, message: str) -> None:
        try:
            self.queue.put_nowait(message)
            return
        except asyncio.QueueFull:
            pass
        self.dropped += 1
        self.dropped_total += 1
        DROPPED.labels(SERVICE).inc()
        now = self.clock()
        if self._full_since is None:
            self._full_since = now
        elif now - self._full_since > self.patience:
            self.too_slow.set()

    async def next(self) -> str:
        """The next message to send; first, if any were dropped, a `dropped` message counting them."""
        if self.dropped:
            count, self.dropped = self.dropped, 0
            return orjson.dumps({"type": "dropped", "count": count}).decode()
        message = await self.queue.get()
        if self.queue.qsize() <= self.queue.maxsize // 2:
            self._full_since = None  # caught up
        return message


class MonitorFeed:
    def __init__(
        self,
        redis: Redis,
        prefix: str,
        status: Callable[[], Awaitable[dict[str, Any]]],
        status_seconds: float = STATUS_SECONDS,
        capacity: int = QUEUE_CAPACITY,
        patience: float = SLOW_CLIENT_SECONDS,
        buckets: int = 1,
        stop_seconds: float = STOP_SECONDS,
    ) -> None:
        self.redis = redis
        self.stop_seconds = stop_seconds
        self.capacity = capacity
        self.patience = patience
        self.announcements = [channel.encode() for channel in announcement_channels(prefix, buckets)]
        self.samples = monitor_channel(prefix).encode()
        self.status = status
        self.status_seconds = status_seconds
        self.subscribers: set[Subscriber] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()

    async def join(self, subscriber: Subscriber | None = None) -> Subscriber:
        """Add a client; returns once the feed is subscribed (or after a bound, if Redis is away)."""
        subscriber = subscriber or Subscriber(self.capacity, self.patience)
        self.subscribers.add(subscriber)
        CLIENTS.labels(SERVICE).inc()
        if not self._tasks:
            self._subscribed.clear()
            self._tasks = [
                asyncio.create_task(self._listen(), name="monitor-feed"),
                asyncio.create_task(self._report_status(), name="monitor-status"),
            ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), SUBSCRIBE_WAIT_SECONDS)
        return subscriber

    def leave(self, subscriber: Subscriber) -> None:
        if subscriber in self.subscribers:
            self.subscribers.discard(subscriber)
            CLIENTS.labels(SERVICE).dec()
        if not self.subscribers:
            for task in self._tasks:
                task.cancel()
            self._tasks = []

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        # Bounded: a cancellation a Redis call swallows leaves its loop running (the loops here
        # start and stop with the clients, so they are not a BackgroundLoops').
        await cancel_and_wait(tasks, self.stop_seconds)

    def broadcast(self, message: str) -> None:
        for subscriber in list(self.subscribers):
            subscriber.offer(message)

    def _dispatch(self, message: Message) -> None:
        try:
            if message["channel"] != self.samples:
                self.broadcast(event_message(message["data"]))
            else:  # lag and throughput samples are already in the monitor's form
                self.broadcast(message["data"].decode())
        except (orjson.JSONDecodeError, UnicodeDecodeError, TypeError):
            log.warning("unreadable monitor message ignored")

    async def _listen(self) -> None:
        refresh = False
        while True:
            subscription = Subscription(
                self.redis, [self.samples], self.announcements, confirm_seconds=SUBSCRIBE_WAIT_SECONDS
            )
            try:
                # After a loss, learn the cluster's slot map again (a slot may have moved).
                await subscription.open(refresh=refresh)
                self._subscribed.set()
                await subscription.run(self._dispatch)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("monitor feed interrupted; resubscribing", exc_info=True)
                refresh = True
                await asyncio.sleep(0.5)
            finally:
                await subscription.aclose()

    async def _report_status(self) -> None:
        while True:
            await asyncio.sleep(self.status_seconds)
            try:
                services = await self.status()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("monitor status not read: %s", exc)
                continue
            self.broadcast(orjson.dumps({"type": "status", **services}).decode())
