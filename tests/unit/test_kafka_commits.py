"""Offsets committed on an interval (service_runtime/kafka_commits.py): only what was fully
handled, before a rebalance takes partitions, and at stop; against a fake aiokafka consumer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.consumer.subscription_state import SubscriptionState
from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaAckableMessage
from faststream.kafka.parser import AioKafkaBatchParser

from service_runtime.kafka_batches import first_record_headers, wake_at_once
from service_runtime.kafka_commits import IntervalCommits, commit_on_interval

P0 = TopicPartition("t", 0)
P1 = TopicPartition("t", 1)


class Consumer:
    """What IntervalCommits uses of aiokafka's consumer, its positions kept in aiokafka's own
    subscription state. The position runs ahead of what was handled once a batch is handed out,
    as a real consumer's does: a commit without offsets (aiokafka's default, FastStream's
    per-batch ack) commits the positions."""

    def __init__(self, assigned: set[TopicPartition] | None = None) -> None:
        self.assigned = assigned if assigned is not None else {P0, P1}
        self._subscription = SubscriptionState()
        self._subscription.assign_from_user(self.assigned)
        for partition in self.assigned:
            self._subscription.seek(partition, 0)
        self.committed: dict[TopicPartition, int] = {}
        self.requests: list[dict[TopicPartition, int]] = []
        self.seeks: dict[TopicPartition, int] = {}
        self.failing = 0
        self.stopped = False

    @property
    def positions(self) -> dict[TopicPartition, int]:
        consumed = self._subscription.subscription.assignment.all_consumed_offsets()
        return {tp: meta.offset for tp, meta in consumed.items()}

    def move_to(self, partition: TopicPartition, position: int) -> None:
        self._subscription.subscription.assignment.state_value(partition).consumed_to(position)

    def hand_out(
        self, batch: tuple[ConsumerRecord[bytes, bytes], ...]
    ) -> tuple[ConsumerRecord[bytes, bytes], ...]:
        for record in batch:
            tp = TopicPartition(record.topic, record.partition)
            self.move_to(tp, max(self.positions[tp], record.offset + 1))
        return batch

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    async def commit(self, offsets: dict[TopicPartition, int] | None = None) -> None:
        if self.failing:
            self.failing -= 1
            raise RuntimeError("coordinator not available")
        offsets = dict(self.positions) if offsets is None else dict(offsets)
        self.requests.append(offsets)
        self.committed.update(offsets)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks[partition] = offset
        self._subscription.seek(partition, offset)

    async def stop(self) -> None:
        self.stopped = True


def _batch(partition: int, *offsets: int) -> tuple[ConsumerRecord[bytes, bytes], ...]:
    return tuple(ConsumerRecord("t", partition, o, 1000 + o, 0, b"k", b"{}", None, 1, 2, []) for o in offsets)


async def _message(commits: IntervalCommits, consumer: Consumer, batch: tuple[Any, ...]) -> Any:
    parser = AioKafkaBatchParser(KafkaAckableMessage, None)
    parser._setup(consumer)  # type: ignore[arg-type]
    return await commits.parser(first_record_headers)(consumer.hand_out(batch), parser.parse_batch)


async def test_acknowledged_batches_are_committed_once_an_interval_later() -> None:
    consumer = Consumer()
    commits = IntervalCommits(0.05)
    for offset in range(5):
        await (await _message(commits, consumer, _batch(0, offset))).ack()
    await (await _message(commits, consumer, _batch(1, 9))).ack()
    assert consumer.requests == []  # nothing committed per batch
    await asyncio.sleep(0.12)
    assert consumer.requests == [{P0: 5, P1: 10}]
    assert commits.pending == {}


async def test_a_batch_in_progress_is_not_committed() -> None:
    consumer = Consumer({P0})
    commits = IntervalCommits(0.05)
    await (await _message(commits, consumer, _batch(0, 0, 1))).ack()
    # Handed out and still being written when the interval ends: its offsets are not committed.
    in_progress = await _message(commits, consumer, _batch(0, 2, 3))
    await asyncio.sleep(0.12)
    assert consumer.committed == {P0: 2}
    # It fails: rewound, still not committed, whatever else commits.
    await in_progress.nack()
    assert consumer.seeks == {P0: 2}
    await commits.flush()
    await commits.on_partitions_revoked({P0})
    assert consumer.committed == {P0: 2}


async def test_the_position_past_a_transactions_marker_is_committed() -> None:
    # A transactional topic: after the last record, its commit marker. The consumer's position
    # is past it once the batch is handed out; committed at the last record + 1 instead, the
    # group would count one behind the end of the topic forever.
    consumer = Consumer({P0})
    commits = IntervalCommits(60)
    message = await _message(commits, consumer, _batch(0, 3, 4))
    consumer.move_to(P0, 6)  # the marker at offset 5, skipped by the fetcher
    await message.ack()
    await commits.flush()
    assert consumer.committed == {P0: 6}


async def test_a_rebalance_commits_the_revoked_partitions_first_and_forgets_them() -> None:
    consumer = Consumer()
    commits = IntervalCommits(60)
    await (await _message(commits, consumer, _batch(0, 4))).ack()
    await (await _message(commits, consumer, _batch(1, 7))).ack()
    await commits.on_partitions_revoked({P0})
    assert consumer.requests == [{P0: 5}]
    assert commits.pending == {P1: 8}
    consumer.assigned = {P1}
    await commits.close()
    assert consumer.requests == [{P0: 5}, {P1: 8}]


async def test_partitions_no_longer_held_are_not_committed() -> None:
    consumer = Consumer()
    commits = IntervalCommits(60)
    await (await _message(commits, consumer, _batch(0, 4))).ack()
    await (await _message(commits, consumer, _batch(1, 7))).ack()
    consumer.assigned = {P1}  # P0 went to another member without a revocation seen here
    await commits.flush()
    assert consumer.requests == [{P1: 8}]
    assert commits.pending == {}


async def test_a_failed_commit_is_tried_again_an_interval_later() -> None:
    consumer = Consumer({P0})
    consumer.failing = 1
    commits = IntervalCommits(0.03)
    await (await _message(commits, consumer, _batch(0, 4))).ack()
    await asyncio.sleep(0.05)
    assert consumer.committed == {}
    assert commits.pending == {P0: 5}
    await asyncio.sleep(0.06)
    assert consumer.committed == {P0: 5}
    await commits.discard()


async def test_interval_zero_commits_each_batch_as_it_is_acknowledged() -> None:
    consumer = Consumer({P0})
    commits = IntervalCommits(0)
    await (await _message(commits, consumer, _batch(0, 0, 1))).ack()
    assert consumer.requests == [{P0: 2}]
    consumer.failing = 1
    with pytest.raises(RuntimeError):  # as FastStream's own ack: the error is the handler's
        await (await _message(commits, consumer, _batch(0, 2))).ack()


async def test_the_subscribers_stop_commits_what_was_written_before_the_consumer_leaves() -> None:
    broker = KafkaBroker("127.0.0.1:1")
    commits = IntervalCommits(60)
    subscriber = broker.subscriber(
        "t", group_id="g", batch=True, listener=commits, parser=commits.parser(first_record_headers)
    )
    subscriber = commit_on_interval(wake_at_once(subscriber), commits)
    consumer = Consumer({P0})
    await (await _message(commits, consumer, _batch(0, 4))).ack()
    order: list[str] = []
    stop = consumer.stop

    async def stopping() -> None:
        order.append(f"stop after commits {consumer.requests}")
        await stop()

    consumer.stop = stopping  # type: ignore[method-assign]
    subscriber.consumer = consumer
    await subscriber.stop()
    assert order == [f"stop after commits {[{P0: 5}]}"]
    assert consumer.stopped


def test_commit_on_interval_needs_a_waking_batch_subscriber() -> None:
    broker = KafkaBroker("127.0.0.1:1")
    with pytest.raises(TypeError):
        commit_on_interval(broker.subscriber("t", group_id="g", batch=True), IntervalCommits(1))
