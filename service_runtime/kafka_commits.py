"""Kafka offsets of fully handled batches, committed on an interval rather than per batch.

A live consumer reads mostly one-record batches, and FastStream commits after each one: at
100 events/s that is 100 OffsetCommit requests a second per consumer group (each a request
built, sent and parsed by aiokafka, and a write to `__consumer_offsets` in the broker), and the
consume loop waits for each before its next fetch. `IntervalCommits` takes FastStream's
acknowledgement of a batch (the handler returned: its writes are done) as "written up to here"
and commits what was written at most every `interval` seconds, from a task beside the loop.

What it keeps:
- an offset is committed only for a batch whose handler returned (FastStream acknowledges a
  batch only then; a batch whose handler raised is nacked: its partitions are seeked back and
  nothing of it is noted), so a batch in progress is never committed, whenever a commit runs;
- before a rebalance takes partitions away (`on_partitions_revoked`, awaited by aiokafka before
  it rejoins the group) their written offsets are committed, and forgotten;
- at stop, after the batch in progress ends and before the consumer leaves its group, what was
  written is committed (`commit_on_interval` wires this into the subscriber's stop).

A crash loses at most `interval` seconds of commits: those records are consumed again, which
the consumers' version guards make harmless (as for a crash between a write and its commit).
`interval` 0 commits each batch as it is acknowledged (FastStream's own behaviour).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition

from service_runtime.kafka_batches import _WakingBatchSubscriber

log = logging.getLogger(__name__)


class IntervalCommits(ConsumerRebalanceListener):  # type: ignore[misc]
    """One consumer group's written offsets (next offset to read per partition), committed at most
    every `interval` seconds. Also the subscriber's rebalance listener."""

    def __init__(self, interval: float, name: str = "") -> None:
        self.interval = interval
        self.name = name
        self.consumer: AIOKafkaConsumer | None = None
        self._written: dict[TopicPartition, int] = {}
        self._lock = asyncio.Lock()
        self._later: asyncio.Task[None] | None = None
        self.commits = 0  # commit requests sent (for tests and curiosity)

    @property
    def pending(self) -> dict[TopicPartition, int]:
        """Written and not yet committed."""
        return dict(self._written)

    def written(self, consumer: AIOKafkaConsumer, batch: Collection[ConsumerRecord[Any, Any]]) -> None:
        """`batch` is fully handled: its offsets may be committed.

        Called from the consume loop between batches (FastStream acknowledges a batch in the loop,
        before it polls again), when the consumer's positions are exactly what was handled: each
        partition's position is noted, as FastStream's own commit would have committed it. The
        position can be past the last record (a transaction's commit marker, aborted records),
        and a consumer committed at its last record's offset + 1 would count as one behind the
        end of a transactional topic forever."""
        self.consumer = consumer
        noted = self._written
        positions = consumed_positions(consumer)
        if not positions:  # no subscription state to read: the batch's own records tell
            positions = {}
            for record in batch:
                partition = TopicPartition(record.topic, record.partition)
                positions[partition] = max(positions.get(partition, -1), record.offset + 1)
        # A position is past every record of the batch on its partition, so the positions alone
        # say it (walking the records as well was a loop per record on the consume path).
        for partition, position in positions.items():
            if position > noted.get(partition, -1):
                noted[partition] = position

    async def acknowledged(
        self, consumer: AIOKafkaConsumer, batch: Collection[ConsumerRecord[Any, Any]]
    ) -> None:
        """FastStream's ack of `batch`: noted, and committed now (interval 0) or within `interval`."""
        self.written(consumer, batch)
        if self.interval <= 0:
            await self.flush(raise_errors=True)
        elif self._later is None or self._later.done():
            self._later = asyncio.create_task(self._flush_later(), name=f"{self.name}:commit")

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.interval)
        await self.flush()
        if self._written:  # a failed commit is tried again an interval later
            self._later = asyncio.create_task(self._flush_later(), name=f"{self.name}:commit")

    async def flush(
        self, only: Collection[TopicPartition] | None = None, *, raise_errors: bool = False
    ) -> None:
        """Commit what was written (of `only`'s partitions, if given). Partitions this consumer
        no longer holds are forgotten (the group's new owner consumes them again); a failed
        commit keeps its offsets for the next one, unless `raise_errors`."""
        async with self._lock:
            consumer = self.consumer
            if consumer is None or not self._written:
                return
            held = consumer.assignment()
            for partition in [p for p in self._written if p not in held]:
                del self._written[partition]
            offsets = {p: o for p, o in self._written.items() if only is None or p in only}
            if not offsets:
                return
            try:
                self.commits += 1
                await consumer.commit(offsets)
            except Exception:
                if raise_errors:
                    raise
                log.warning(
                    "offsets not committed; tried again (records are consumed again at worst)",
                    exc_info=True,
                    extra={"group": self.name},
                )
                return
            for partition, offset in offsets.items():
                if self._written.get(partition) == offset:
                    del self._written[partition]

    async def close(self) -> None:
        """Stop the pending timer, then commit what was written (the consumer still in its group)."""
        await self.discard()
        await self.flush()

    async def discard(self) -> None:
        """Stop the pending timer (the consumer is gone: nothing more can be committed)."""
        later, self._later = self._later, None
        if later is not None and not later.done():
            later.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await later

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Before the group is rejoined: the next owner starts where these partitions were written.
        await self.flush(only=revoked)
        for partition in revoked:
            self._written.pop(partition, None)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        return None

    def parser(
        self, parse: Callable[[Any, Callable[..., Awaitable[Any]]], Awaitable[Any]]
    ) -> Callable[[Any, Callable[..., Awaitable[Any]]], Awaitable[Any]]:
        """A FastStream batch parser as `parse`, whose message acknowledges through this."""

        async def parse_batch(
            batch: tuple[ConsumerRecord[Any, Any], ...], original: Callable[..., Awaitable[Any]]
        ) -> Any:
            message = await parse(batch, original)
            message.consumer = _Acknowledging(self, message.consumer, batch)
            return message

        return parse_batch


def consumed_positions(consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
    """The consumer's positions on its assigned partitions, as aiokafka's `commit()` without
    offsets takes them (its subscription state; nothing if that is not there)."""
    try:
        assignment = consumer._subscription.subscription.assignment
        consumed = assignment.all_consumed_offsets() if assignment is not None else {}
    except AttributeError:
        return {}
    return {partition: meta.offset for partition, meta in consumed.items()}


class _Acknowledging:
    """What FastStream's message calls to ack (`commit`) or nack (`seek`) one batch."""

    __slots__ = ("_batch", "_commits", "_consumer")

    def __init__(
        self,
        commits: IntervalCommits,
        consumer: AIOKafkaConsumer,
        batch: tuple[ConsumerRecord[Any, Any], ...],
    ) -> None:
        self._commits = commits
        self._consumer = consumer
        self._batch = batch

    async def commit(self) -> None:
        await self._commits.acknowledged(self._consumer, self._batch)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self._consumer.seek(partition, offset)


class _CommittingBatchSubscriber(_WakingBatchSubscriber):
    """The waking batch subscriber whose stop commits the written offsets before leaving the group."""

    __slots__ = ()

    async def stop(self) -> None:
        # As FastStream's stop: no new batch read, the one in progress waited for; then the
        # written offsets committed while the consumer still holds its partitions.
        self.running = False
        with contextlib.suppress(Exception):
            lock = self.lock
            wait_release = getattr(lock, "wait_release", None)
            if wait_release is not None:
                await wait_release(self._outer_config.graceful_timeout)
        commits: IntervalCommits | None = self.__dict__.get("interval_commits")
        if commits is not None and self.consumer is not None:
            try:
                await commits.close()
            except Exception:
                log.warning("offsets not committed at stop", exc_info=True, extra={"group": commits.name})
        await super().stop()
        if commits is not None:
            # A batch that ended after that commit is consumed again by the next owner.
            await commits.discard()


def commit_on_interval(subscriber: Any, commits: IntervalCommits) -> Any:
    """A subscriber made by `kafka_batches.wake_at_once`, whose stop also commits `commits`.

    The subscriber must have been created with `listener=commits` and
    `parser=commits.parser(...)`."""
    if type(subscriber) is not _WakingBatchSubscriber:
        raise TypeError(f"expected a wake_at_once subscriber, got {type(subscriber).__name__}")
    subscriber.__class__ = _CommittingBatchSubscriber
    subscriber.__dict__["interval_commits"] = commits
    return subscriber
