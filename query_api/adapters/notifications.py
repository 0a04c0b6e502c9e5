"""Waking `min_version` reads: one pub/sub subscription per process, fanned out to waiting requests.

The same feed keeps the process's `CampaignCache` honest: each announcement drops the
aggregate's entry (before any waiter is woken), and the cache keeps nothing while the feed is
down.

The projectors publish one message per applied event, from inside the same atomic Redis script
that applied it, so when a message arrives the read model already holds that version. A
request registers what it waits for *before* each read, so a notification can never slip
between the read and the wait. The messages come on each bucket's shard channel
(`keyspace.announcement_channels`; on a cluster one connection per primary owning buckets, see
`service_runtime.redis_pubsub`), generation swaps on a classic channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import orjson
from redis.asyncio import Redis

from query_api.adapters.campaign_cache import CampaignCache
from readmodels.keyspace import announcement_channels, generations_channel
from service_runtime.background import STOP_SECONDS, BackgroundLoops
from service_runtime.redis_pubsub import Message, Subscription

log = logging.getLogger(__name__)


class VersionWaiters:
    """Requests waiting for an aggregate to reach a version, woken by notifications."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}

    @contextlib.contextmanager
    def watch(self, aggregate_id: str, min_version: int) -> Iterator[asyncio.Future[None]]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (min_version, future)
        self._waiting.setdefault(aggregate_id, []).append(entry)
        try:
            yield future
        finally:
            entries = self._waiting.get(aggregate_id)
            if entries is not None:
                with contextlib.suppress(ValueError):
                    entries.remove(entry)
                if not entries:
                    del self._waiting[aggregate_id]

    def notify(self, aggregate_id: str, version: int) -> None:
        for min_version, future in self._waiting.get(aggregate_id, ()):
            if version >= min_version and not future.done():
                future.set_result(None)

    def wake_all(self) -> None:
        """After a lost connection: every waiter reads again rather than trust a gap in the feed."""
        for entries in self._waiting.values():
            for _, future in entries:
                if not future.done():
                    future.set_result(None)

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._waiting.values())


class TooManyWaiters(Exception):
    """A `min_version` read over the quota (the argument says which)."""


class WaiterQuota:
    """Bounds `min_version` waits in this process: per user and in all. Over either, the request
    is refused at once (429) rather than held: a wait costs a task and a future for seconds."""

    def __init__(self, per_user: int, per_process: int) -> None:
        self.per_user = per_user
        self.per_process = per_process
        self._by_user: dict[str, int] = {}
        self._total = 0

    @contextlib.contextmanager
    def admit(self, user_id: str) -> Iterator[None]:
        held = self._by_user.get(user_id, 0)
        if held >= self.per_user or self._total >= self.per_process:
            raise TooManyWaiters("for this user" if held >= self.per_user else "in this worker")
        self._by_user[user_id] = held + 1
        self._total += 1
        try:
            yield
        finally:
            self._total -= 1
            left = self._by_user[user_id] - 1
            if left:
                self._by_user[user_id] = left
            else:
                del self._by_user[user_id]


class NotificationListener:
    """Reads every bucket's announcement channel and the generations channel for this process."""

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        waiters: VersionWaiters,
        on_generation_swap: Callable[[], Coroutine[Any, Any, None]],
        cache: CampaignCache | None = None,
        buckets: int = 1,
        stop_seconds: float = STOP_SECONDS,
    ) -> None:
        self.redis = redis
        self.announcements = frozenset(channel.encode() for channel in announcement_channels(prefix, buckets))
        self.generations = generations_channel(prefix).encode()
        self.waiters = waiters
        self.on_generation_swap = on_generation_swap
        self.cache = cache
        self._loops = BackgroundLoops(stop_seconds)
        self._refreshes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        try:
            subscription = await self._subscribe()
        except Exception:
            # Serve anyway: min_version reads then wait out their bound until the feed is back.
            log.warning("notification feed not subscribed at start; retrying", exc_info=True)
            self._loops.start(self._listen_after_resubscribe(), "notification-listener")
            return
        self._feed_up()
        self._loops.start(self._listen(subscription), "notification-listener")

    async def _listen_after_resubscribe(self) -> None:
        subscription = await self._resubscribe()
        self._feed_up()
        self.waiters.wake_all()
        await self._listen(subscription)

    async def stop(self) -> None:
        if self.cache is not None:
            self.cache.feed_down()
        await self._loops.stop()

    async def _subscribe(self, refresh: bool = False) -> Subscription:
        subscription = Subscription(self.redis, [self.generations], sorted(self.announcements))
        # Every confirmation read: from here on no published message can be missed.
        await subscription.open(refresh=refresh)
        return subscription

    async def _listen(self, subscription: Subscription) -> None:
        while self._loops.running:
            try:
                await subscription.run(self._dispatch)
            except asyncio.CancelledError:
                await subscription.aclose()
                raise
            except Exception:
                if not self._loops.running:
                    await subscription.aclose()
                    return
                log.warning("notification feed interrupted; resubscribing", exc_info=True)
                if self.cache is not None:
                    self.cache.feed_down()
                await subscription.aclose()
                self.waiters.wake_all()
                subscription = await self._resubscribe()
                # Whatever was published while away is lost: every waiter reads again.
                self._feed_up()
                self.waiters.wake_all()

    async def _resubscribe(self) -> Subscription:
        while True:
            if not await self._loops.pause(0.5):
                raise asyncio.CancelledError  # stopped while away
            try:
                # A slot may have moved: learn the cluster's slot map again.
                return await self._subscribe(refresh=True)
            except Exception:
                log.warning("pub/sub resubscription failed; retrying", exc_info=True)

    def _feed_up(self) -> None:
        if self.cache is not None:
            self.cache.feed_up()

    def _dispatch(self, message: Message) -> None:
        channel = message["channel"]
        if channel in self.announcements:
            try:
                event = orjson.loads(message["data"])
                aggregate_id = str(event["aggregate_id"])
                version = int(event["aggregate_version"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                log.warning("unreadable notification ignored")
                if self.cache is not None:
                    self.cache.clear()  # whichever entry it was about
                return
            if self.cache is not None:
                owner = event.get("owner_id")
                self.cache.invalidate(
                    aggregate_id,
                    owner if isinstance(owner, str) else None,
                    lists=event.get("aggregate_type") != "user",
                )
            self.waiters.notify(aggregate_id, version)
        elif channel == self.generations:
            task = asyncio.create_task(self.on_generation_swap())
            self._refreshes.add(task)
            task.add_done_callback(self._refresh_done)

    def _refresh_done(self, task: asyncio.Task[None]) -> None:
        self._refreshes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("generation refresh failed", exc_info=task.exception())
