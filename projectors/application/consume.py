"""Consume one batch of records into a projection: decode, apply atomically, dead-letter the rest.

The caller (the Kafka subscriber) commits the batch's offsets only after `handle` returns,
i.e. after the Redis writes and the dead letters are acknowledged; if `handle` raises, nothing
is committed and the whole batch comes again, which the version guard makes harmless.

Each event's outcome is logged on one line carrying the event's correlation id (the id of the
HTTP request that caused it), so a request can be followed from the command API into here: at
INFO for live traffic, at DEBUG in batches of more than `PER_EVENT_INFO_UP_TO` records (a
catch-up or a backlog, where 100,000 lines would say less than one and were 13% of the
projector's CPU), which then get one INFO line with their counts. Duplicates are always DEBUG.
`CAMPAIGNS_LOG_LEVEL=DEBUG` shows every line.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis

from events import EventEnvelope, InvalidEvent, Topics, decode_event
from events.dead_letters import DeadLetterOrigin, dead_letter_headers
from projectors.application.ports import Projection
from projectors.domain.outcomes import ApplyResult, EventOutcome, Outcome
from readmodels.generations import GenerationClaim, GenerationMoved, claim_while_whole
from readmodels.json_form import json_time
from readmodels.status import record_batch
from service_runtime.logs import correlation_id

log = logging.getLogger(__name__)

PER_EVENT_INFO_UP_TO = 50


@dataclass(frozen=True)
class EventRecord:
    """The parts of a Kafka record a projection needs (keeps this layer free of the client library)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class DeadLetter:
    record: EventRecord
    reason: str
    error_type: str
    consumer_group: str

    def headers(self) -> dict[str, str]:
        """The original headers plus why and where it failed."""
        original = [(name, value.decode("utf-8", "replace")) for name, value in self.record.headers]
        origin = DeadLetterOrigin(
            self.record.topic, self.record.partition, self.record.offset, self.consumer_group
        )
        return dead_letter_headers(original, origin, reason=self.reason, error_type=self.error_type)


class DeadLetterSink(Protocol):
    async def send(self, letters: Sequence[DeadLetter]) -> None: ...


@dataclass(frozen=True)
class BatchReport:
    records: int
    applied: int
    duplicates: int
    parked: int
    dead_lettered: int
    generation: str


class SharedDecoding:
    """Each record decoded once per process rather than once per consumer group: the campaigns
    and stats groups (users and stats) read the same records in one process, and decoding
    (parse, validate, upcast) was the largest share of a projector's CPU per event after the
    lean index layout. The first group to decode a record keeps the envelope (immutable) until
    the other takes it; at most `size` are kept, oldest dropped first (a group far behind the
    other, or alone in this process, decodes for itself)."""

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self._kept: dict[bytes, EventEnvelope] = {}

    def decode(self, raw: bytes) -> EventEnvelope:
        envelope = self._kept.pop(raw, None)
        if envelope is not None:
            return envelope
        envelope = decode_event(raw)  # InvalidEvent is raised and nothing kept
        if len(self._kept) >= self.size:
            del self._kept[next(iter(self._kept))]
        self._kept[raw] = envelope
        return envelope


# The process's: every ProjectionConsumer of this process shares it.
SHARED_DECODING = SharedDecoding()


class ProjectionConsumer:
    """Feeds batches of one consumer group into one projection."""

    def __init__(
        self,
        projection: Projection,
        redis: Redis,
        dead_letters: DeadLetterSink,
        consumer_group: str,
        decoding: SharedDecoding = SHARED_DECODING,
    ) -> None:
        self.decoding = decoding
        self.projection = projection
        self.redis = redis
        self.dead_letters = dead_letters
        self.consumer_group = consumer_group
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self._pending_counters: Counter[str] = Counter()
        self._pending_fields: dict[str, str] = {}
        # The generation the last batch was applied to (claimed again with each batch's reads).
        self._generation: str | None = None

    async def flush_status(self) -> None:
        """Write the counters and fields of the batches handled since the last flush (if any) to
        the projector status. If the write fails they are kept for the next flush."""
        if not self._pending_fields:
            return
        counters, fields = self._pending_counters, self._pending_fields
        self._pending_counters, self._pending_fields = Counter(), {}
        try:
            await record_batch(self.redis, self.projection.prefix, self.projection.name, counters, fields)
        except BaseException:
            self._pending_counters = counters + self._pending_counters
            self._pending_fields = {**fields, **self._pending_fields}
            raise

    def _letter(self, record: EventRecord, reason: str, error_type: str) -> DeadLetter:
        return DeadLetter(record, reason, error_type, self.consumer_group)

    async def handle(self, records: Sequence[EventRecord]) -> BatchReport:
        envelopes: list[EventEnvelope] = []
        sources: list[EventRecord] = []
        letters: list[DeadLetter] = []
        for record in records:
            try:
                envelope = self.decoding.decode(record.value or b"")
            except InvalidEvent as exc:
                letters.append(self._letter(record, str(exc), type(exc).__name__))
                continue
            # Only from its own aggregate's topic: the stats projection reads both topics, and a
            # misrouted event must not count there while the other projections refuse it.
            if not self.projection.accepts(envelope) or not _on_its_topic(record.topic, envelope):
                reason = f"a {envelope.aggregate_type} event on {record.topic}"
                letters.append(self._letter(record, reason, "UnexpectedAggregate"))
                continue
            envelopes.append(envelope)
            sources.append(record)

        generation, result = await self._apply(envelopes)
        live = len(records) <= PER_EVENT_INFO_UP_TO
        for outcome, record, envelope in zip(result.outcomes, sources, envelopes, strict=True):
            if outcome.outcome is Outcome.FAILED:
                letters.append(self._letter(record, outcome.error or "apply failed", "ApplyFailed"))
            else:
                self._log_outcome(envelope, outcome, live=live)
        if letters:
            for letter in letters:
                token = correlation_id.set(_header(letter.record, "correlation_id"))
                try:
                    log.warning(
                        "dead-lettered a record",
                        extra={
                            "projection": self.projection.name,
                            "topic": letter.record.topic,
                            "partition": letter.record.partition,
                            "offset": letter.record.offset,
                            "reason": letter.reason,
                        },
                    )
                finally:
                    correlation_id.reset(token)
            await self.dead_letters.send(letters)
        if result.parked:
            log.warning(
                "events parked behind a missing version",
                extra={"projection": self.projection.name, "parked": result.parked},
            )

        report = BatchReport(
            records=len(records),
            applied=result.applied,
            duplicates=result.duplicates,
            parked=result.parked,
            dead_lettered=len(letters),
            generation=generation,
        )
        last = records[-1] if records else None
        log.log(
            logging.DEBUG if live else logging.INFO,
            "batch of %d: %d applied, %d duplicates, %d parked, %d dead-lettered",
            report.records,
            report.applied,
            report.duplicates,
            report.parked,
            report.dead_lettered,
            extra={"projection": self.projection.name, "generation": generation},
        )
        # The status (counters, last batch) is written by `flush_status`, on an interval rather
        # than per batch: three projections each writing it per one-event live batch was a
        # Redis round trip per event per projection for a monitor that refreshes once a second.
        pending = self._pending_counters
        pending["records_total"] += report.records
        pending["applied_total"] += report.applied
        pending["duplicates_total"] += report.duplicates
        pending["parked_total"] += report.parked
        pending["dead_lettered_total"] += report.dead_lettered
        self._pending_fields.update(
            {
                "generation": generation,
                "consumer_group": self.consumer_group,
                "instance": self.instance,
                "last_batch_at": f"{time.time():.3f}",
                **({"last_occurred_at": json_time(envelopes[-1].occurred_at)} if envelopes else {}),
                **({"last_topic": last.topic} if last else {}),
            }
        )
        return report

    async def _apply(self, envelopes: list[EventEnvelope]) -> tuple[str, ApplyResult]:
        """The batch applied to the live generation. On a Redis that lost the read models this
        raises (`ReadModelsLost`): the batch waits for the rebuild. Once a generation is known,
        its claim goes with the projection's first reads (one round trip fewer a batch); if
        another generation is live by then, nothing was written and it is claimed again."""
        prefix, name = self.projection.prefix, self.projection.name
        known = self._generation
        if known is not None:
            try:
                claim = GenerationClaim(prefix, name, known)
                return known, await self.projection.apply(self.redis, known, envelopes, claim=claim)
            except GenerationMoved:
                self._generation = None
        generation = await claim_while_whole(self.redis, prefix, name)
        result = await self.projection.apply(self.redis, generation, envelopes)
        self._generation = generation
        return generation, result

    def _log_outcome(self, envelope: EventEnvelope, outcome: EventOutcome, *, live: bool) -> None:
        # Duplicates (redeliveries, replays of a live stream) only at debug: they change nothing.
        level = logging.INFO if live and outcome.outcome is not Outcome.DUPLICATE else logging.DEBUG
        if not log.isEnabledFor(level):
            return
        token = correlation_id.set(envelope.correlation_id)
        try:
            log.log(
                level,
                "%s %s v%d %s",
                envelope.event_type,
                envelope.aggregate_id,
                envelope.aggregate_version,
                outcome.outcome.value,
                extra={
                    "projection": self.projection.name,
                    "event_type": envelope.event_type,
                    "event_id": str(envelope.event_id),
                    "aggregate_id": envelope.aggregate_id,
                    "aggregate_version": envelope.aggregate_version,
                    "outcome": outcome.outcome.value,
                },
            )
        finally:
            correlation_id.reset(token)


def _header(record: EventRecord, name: str) -> str | None:
    for key, value in record.headers:
        if key == name:
            return value.decode("utf-8", "replace")
    return None


def _on_its_topic(topic: str, envelope: EventEnvelope) -> bool:
    # Topic names are `<prefix><aggregate's topic>`, whatever the prefix.
    return topic.endswith(Topics().for_aggregate(envelope.aggregate_type))
