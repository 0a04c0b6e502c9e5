"""Batch subscribers consume a record as soon as it arrives after a quiet spell
(service_runtime/kafka_batches.py), on a FastStream subscriber that is never started."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest
from aiokafka import ConsumerRecord, TopicPartition
from fast_depends import inject
from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaAckableMessage
from faststream.kafka.parser import AioKafkaBatchParser
from faststream.kafka.subscriber.usecase import BatchSubscriber
from faststream.params import NoCast as faststream_no_cast

from service_runtime import kafka_batches
from service_runtime.kafka_batches import NoCast, first_record_headers, wake_at_once

POLL_MS = 400


class QuietThenRecords:
    """A consumer whose first poll waits out its whole timeout and brings nothing, as an idle
    topic does, and whose second poll brings a record."""

    def __init__(self) -> None:
        self.polls: list[float] = []

    async def getmany(self, *, timeout_ms: float, max_records: int | None) -> dict[Any, list[str]]:
        self.polls.append(timeout_ms)
        if len(self.polls) == 1:
            return {}
        return {TopicPartition("t", 0): ["record"]}


def _subscriber() -> Any:
    broker = KafkaBroker("127.0.0.1:1")
    return broker.subscriber("t", group_id="g", batch=True, batch_timeout_ms=POLL_MS, max_records=7)


async def test_an_empty_poll_that_waited_is_not_followed_by_a_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    subscriber = wake_at_once(_subscriber())
    consumer = QuietThenRecords()
    clock = iter([0.0, POLL_MS / 1000, 10.0, 10.001])  # the first poll took its whole timeout
    monkeypatch.setattr(kafka_batches, "_clock", lambda: next(clock))
    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(kafka_batches, "_pause", pause)
    assert await subscriber.get_msg(consumer) == ()
    assert await subscriber.get_msg(consumer) == ("record",)
    assert pauses == []
    assert consumer.polls == [POLL_MS, POLL_MS]


async def test_faststreams_own_subscriber_pauses_after_an_empty_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    # What wake_at_once removes: the poll's length again, before the next poll.
    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(anyio, "sleep", pause)
    assert await BatchSubscriber.get_msg(_subscriber(), QuietThenRecords()) == ()
    assert pauses == [POLL_MS / 1000]


async def test_an_empty_poll_that_returned_at_once_pauses_briefly_rather_than_spin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    subscriber = wake_at_once(_subscriber())
    clock = iter([0.0, 0.0])
    monkeypatch.setattr(kafka_batches, "_clock", lambda: next(clock))
    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(kafka_batches, "_pause", pause)
    assert await subscriber.get_msg(QuietThenRecords()) == ()
    assert pauses == [kafka_batches.SPIN_PAUSE_SECONDS]


def test_wake_at_once_keeps_the_subscriber_and_its_batch_settings() -> None:
    subscriber = _subscriber()
    assert wake_at_once(subscriber) is subscriber
    assert isinstance(subscriber, BatchSubscriber)
    assert (subscriber.batch_timeout_ms, subscriber.max_records) == (POLL_MS, 7)


def test_wake_at_once_refuses_what_is_not_a_batch_subscriber() -> None:
    broker = KafkaBroker("127.0.0.1:1")
    with pytest.raises(TypeError):
        wake_at_once(broker.subscriber("t", group_id="g"))


async def test_records_arriving_during_the_poll_end_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # The poll is aiokafka's getmany: it returns when the first records arrive, not at its timeout.
    subscriber = wake_at_once(_subscriber())
    arrived = asyncio.Event()

    class Waiting:
        async def getmany(self, *, timeout_ms: float, max_records: int | None) -> dict[Any, list[str]]:
            await arrived.wait()
            return {TopicPartition("t", 0): ["a", "b"]}

    polling = asyncio.create_task(subscriber.get_msg(Waiting()))
    await asyncio.sleep(0)
    arrived.set()
    assert await polling == ("a", "b")


def _record(partition: int, offset: int, headers: list[tuple[str, bytes]]) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("t", partition, offset, 1000 + offset, 0, b"k", b"{}", None, 1, 2, headers)


class Seeks:
    def __init__(self) -> None:
        self.seeks: dict[TopicPartition, int] = {}

    def seek(self, *, partition: TopicPartition, offset: int) -> None:
        self.seeks[partition] = offset


async def test_first_record_headers_parses_the_first_record_and_keeps_the_whole_batch() -> None:
    parser = AioKafkaBatchParser(KafkaAckableMessage, None)
    consumer = Seeks()
    parser._setup(consumer)  # type: ignore[arg-type]
    batch = (
        _record(0, 7, [("correlation_id", b"c-1")]),
        _record(1, 3, [("correlation_id", b"\xff not utf-8")]),
        _record(0, 8, [("correlation_id", b"c-3")]),
    )
    message = await first_record_headers(batch, parser.parse_batch)
    assert message.raw_message == batch
    assert message.correlation_id == "c-1"
    assert message.message_id == "7-8-1007"
    # An error rewinds every partition of the batch to its earliest record, not the first's only.
    await message.nack()
    assert consumer.seeks == {TopicPartition("t", 0): 7, TopicPartition("t", 1): 3}


async def test_first_record_headers_of_a_first_record_with_bad_headers() -> None:
    parser = AioKafkaBatchParser(KafkaAckableMessage, None)
    batch = (_record(0, 1, [("h", b"\xff")]), _record(0, 2, []))
    message = await first_record_headers(batch, parser.parse_batch)
    assert message.raw_message == batch
    assert message.headers == {"h": "\ufffd"}


def _handler(annotation: Any) -> Any:
    """A handler as FastStream's dependency injection calls it (fast_depends' `inject`)."""

    async def handle(records: annotation) -> Any:  # type: ignore[valid-type]
        return records

    return inject(handle)


async def test_no_cast_hands_the_batch_over_as_it_is_without_a_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hops: list[object] = []

    async def to_thread(func: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(func)
        return func(*args)

    monkeypatch.setattr(anyio.to_thread, "run_sync", to_thread)
    batch = ["not an int", 2]  # uncast: not validated against the annotation
    assert await _handler(NoCast[list[int]])(records=batch) is batch
    assert hops == []
    # FastStream's own NoCast passes the batch through a worker thread (what this one avoids).
    assert await _handler(faststream_no_cast[list[int]])(records=batch) is batch
    assert len(hops) == 1
