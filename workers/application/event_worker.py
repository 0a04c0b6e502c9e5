"""Kafka deliveries through a worker: skip other types early, decode, retry, dead-letter, count.

The workers consume in batches (one Kafka commit per batch, after every record in it is dealt
with) and most records are of types a worker does not handle: those are recognised by the
relay's `event_type` header and skipped without decoding the value. A record without that
header is decoded and judged as before (an undecodable one is dead-lettered).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from events import EventEnvelope, InvalidEvent, decode_event
from service_runtime.logs import correlation_id
from workers import metrics
from workers.application.retries import (
    AttemptsExhausted,
    Backoff,
    PermanentFailure,
    retry_with_backoff,
)

log = logging.getLogger(__name__)

DEAD_LETTERED = "dead_lettered"
IGNORED = "ignored"


@dataclass(frozen=True)
class Delivery:
    """One Kafka record as the worker received it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Mapping[str, str]

    @property
    def event_type(self) -> str | None:
        """The relay's `event_type` header (a copy of the envelope's), if the record has one."""
        return self.headers.get("event_type")


class DeadLetters(Protocol):
    async def publish(self, delivery: Delivery, *, reason: str, error: str, attempts: int) -> None: ...


class EventHandler(Protocol):
    """Does a worker's job for one event; returns an outcome label ("sent", "already_sent", ...)."""

    name: str
    handles: frozenset[str]

    async def __call__(self, event: EventEnvelope) -> str: ...


@dataclass
class WorkerStats:
    """What the heartbeat shows about one worker in this process."""

    name: str
    started_at: float = field(default_factory=time.time)
    outcomes: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    dead_letters: int = 0
    last_event_at: float | None = None
    last_error: str | None = None

    def snapshot(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "outcomes": dict(self.outcomes),
            "retries": self.retries,
            "dead_letters": self.dead_letters,
            "last_event_at": self.last_event_at,
            "last_error": self.last_error,
        }


class EventWorker:
    """Runs a handler on each delivery; whatever cannot be done goes to the dead-letter topic.

    Returns normally once the delivery is dealt with (done, skipped or dead-lettered), which is
    when the consumer commits its offset. It raises only if even the dead-letter publish failed,
    so the delivery is consumed again rather than lost.
    """

    def __init__(
        self, handler: EventHandler, dead_letters: DeadLetters, backoff: Backoff, stats: WorkerStats
    ) -> None:
        self.handler = handler
        self.dead_letters = dead_letters
        self.backoff = backoff
        self.stats = stats

    async def consume_batch(self, deliveries: Sequence[Delivery]) -> list[str]:
        """Each delivery in order (order per aggregate is kept: a partition's records stay in
        order), those of other types counted as ignored without being decoded. Returns once every
        one is dealt with, when the caller commits the batch; raises only if a dead-letter
        publish failed, and then the whole batch comes again (send records and version-guarded
        reports make the redelivered ones harmless)."""
        if not deliveries:
            return []
        self.stats.last_event_at = time.time()
        outcomes: list[str] = []
        ignored = 0
        handles = self.handler.handles
        for delivery in deliveries:
            hint = delivery.event_type
            if hint is not None and hint not in handles:
                ignored += 1
                outcomes.append(IGNORED)
                continue
            outcomes.append(await self._consume(delivery))
        if ignored:
            self._count(IGNORED, ignored)
        return outcomes

    async def consume(self, delivery: Delivery) -> str:
        self.stats.last_event_at = time.time()
        return await self._consume(delivery)

    async def _consume(self, delivery: Delivery) -> str:
        try:
            event = decode_event(delivery.value)
        except InvalidEvent as exc:
            await self._dead_letter(delivery, f"invalid event: {exc}", exc, attempts=0)
            return DEAD_LETTERED
        if event.event_type not in self.handler.handles:
            return self._count(IGNORED)
        token = correlation_id.set(event.correlation_id)
        try:
            outcome = await retry_with_backoff(
                lambda: self.handler(event), self.backoff, on_retry=self._on_retry
            )
        except PermanentFailure as exc:
            await self._dead_letter(delivery, f"permanent failure: {exc}", exc, attempts=1)
            return DEAD_LETTERED
        except AttemptsExhausted as exc:
            await self._dead_letter(delivery, str(exc), exc.last_error, attempts=exc.attempts)
            return DEAD_LETTERED
        finally:
            correlation_id.reset(token)
        return self._count(outcome)

    def _count(self, outcome: str, amount: int = 1) -> str:
        self.stats.outcomes[outcome] += amount
        metrics.EVENTS.labels(self.handler.name, outcome).inc(amount)
        return outcome

    def _on_retry(self, attempt: int, error: Exception) -> None:
        self.stats.retries += 1
        self.stats.last_error = f"{type(error).__name__}: {error}"
        metrics.RETRIES.labels(self.handler.name).inc()
        log.warning(
            "attempt failed, will retry",
            extra={
                "worker": self.handler.name,
                "attempt": attempt,
                "max_attempts": self.backoff.max_attempts,
                "error": self.stats.last_error,
            },
        )

    async def _dead_letter(
        self, delivery: Delivery, reason: str, error: BaseException, attempts: int
    ) -> None:
        await self.dead_letters.publish(
            delivery, reason=reason, error=type(error).__name__, attempts=attempts
        )
        self.stats.dead_letters += 1
        self.stats.last_error = reason
        self._count(DEAD_LETTERED)
        metrics.DEAD_LETTERS.labels(self.handler.name, delivery.topic).inc()
        log.error(
            "event dead-lettered",
            extra={
                "worker": self.handler.name,
                "topic": delivery.topic,
                "partition": delivery.partition,
                "offset": delivery.offset,
                "reason": reason,
            },
        )
