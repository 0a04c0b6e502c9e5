"""The dead-letter topics read by a consumer without a group, and the producer that re-drives them.

No consumer group: partitions are assigned by hand and nothing is committed, so reading a
dead-letter topic is invisible to everyone else. A scan reads every partition from where it
should start up to the end offsets taken when it begins (records arriving meanwhile wait for the
next scan), one page of at most `page_records` records at a time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from deadletters.application.ports import UnknownTopic
from deadletters.domain.records import DeadLetter, RecordRef

FETCH_TIMEOUT_MS = 500
# A fetch that comes back empty this many times in a row means the offset is not there (a
# transaction marker, or removed by retention).
EMPTY_FETCHES = 4
# How long the broker may hold the consumer's background fetch when there is nothing new. The
# broker answers one connection's requests in order, so a metadata or offsets request (the next
# dead-letter topic's partitions) queues behind that fetch: at Kafka's default of 500 ms every
# console dead-letters listing (two topics) waited ~0.5 s for nothing (0.48 s a request, 119 s
# of the query API's 193 s schemathesis run, on the 2-core host). Reads still wait up to
# FETCH_TIMEOUT_MS for records; only the broker's hold of an idle fetch is shorter.
IDLE_FETCH_WAIT_MS = 20


def _letter(record: Any) -> DeadLetter:
    """From aiokafka's ConsumerRecord."""
    return DeadLetter(
        RecordRef(record.topic, record.partition, record.offset),
        record.key,
        record.value,
        tuple(record.headers),
        record.timestamp,
    )


class KafkaDeadLetterLog:
    def __init__(self, bootstrap: str, page_records: int) -> None:
        self.bootstrap = bootstrap
        self.page_records = page_records
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: dict[str, list[TopicPartition]] = {}

    async def __aenter__(self) -> KafkaDeadLetterLog:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def _consumer_for(self, topic: str) -> tuple[AIOKafkaConsumer, list[TopicPartition]]:
        added = topic not in self._partitions
        if added:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                (described,) = await admin.describe_topics([topic])
            finally:
                await admin.close()
            if described["error_code"] or not described["partitions"]:
                raise UnknownTopic(f"topic {topic} does not exist")
            self._partitions[topic] = sorted(
                TopicPartition(topic, p["partition"]) for p in described["partitions"]
            )
        if self._consumer is None:
            self._consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_partition_fetch_bytes=4 * 1024 * 1024,
                fetch_max_wait_ms=IDLE_FETCH_WAIT_MS,
            )
            await self._consumer.start()
            added = True
        if added:
            # Every partition of every topic used so far stays assigned (assigning again forgets
            # the positions); each read seeks and names the partition it wants.
            self._consumer.assign([tp for tps in self._partitions.values() for tp in tps])
        return self._consumer, self._partitions[topic]

    async def end_offsets(self, topic: str) -> dict[int, int]:
        consumer, partitions = await self._consumer_for(topic)
        ends = await consumer.end_offsets(partitions)
        return {tp.partition: offset for tp, offset in ends.items()}

    async def scan(self, topic: str, start: Mapping[int, int]) -> AsyncIterator[Sequence[DeadLetter]]:
        consumer, partitions = await self._consumer_for(topic)
        beginnings = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            position = max(beginnings[tp], start.get(tp.partition, 0))
            if position >= ends[tp]:
                continue
            # One partition at a time, in offset order: pages never hold more than one fetch.
            consumer.seek(tp, position)
            empty = 0
            while position < ends[tp] and empty < EMPTY_FETCHES:
                fetched = await consumer.getmany(
                    tp, timeout_ms=FETCH_TIMEOUT_MS, max_records=self.page_records
                )
                records = [r for r in fetched.get(tp, []) if r.offset < ends[tp]]
                if not records:
                    # Offsets can skip (transaction markers): ask where the consumer stands.
                    moved = await consumer.position(tp)
                    empty = 0 if moved > position else empty + 1
                    position = max(position, moved)
                    continue
                empty = 0
                position = records[-1].offset + 1
                yield [_letter(r) for r in records]

    async def fetch(self, refs: Collection[RecordRef]) -> dict[RecordRef, DeadLetter]:
        found: dict[RecordRef, DeadLetter] = {}
        by_partition: dict[TopicPartition, list[int]] = {}
        for ref in refs:
            by_partition.setdefault(TopicPartition(ref.topic, ref.partition), []).append(ref.offset)
        for tp, offsets in by_partition.items():
            consumer, partitions = await self._consumer_for(tp.topic)
            if tp not in partitions:
                continue
            wanted = sorted(set(offsets))
            end = (await consumer.end_offsets([tp]))[tp]
            wanted = [o for o in wanted if o < end]
            while wanted:
                consumer.seek(tp, wanted[0])
                records = []
                for _ in range(EMPTY_FETCHES):
                    fetched = await consumer.getmany(
                        tp, timeout_ms=FETCH_TIMEOUT_MS, max_records=self.page_records
                    )
                    records = fetched.get(tp, [])
                    if records:
                        break
                if not records:
                    break  # nothing readable from here: the rest are gone
                last = records[-1].offset
                for record in records:
                    if record.offset in wanted:
                        found[RecordRef(tp.topic, tp.partition, record.offset)] = _letter(record)
                # Offsets up to the last one read are settled, found or not (a marker, retention).
                wanted = [o for o in wanted if o > last]
        return found


class KafkaRedriver:
    """An idempotent producer (acks=all): records go back in the order given, each acknowledged."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> KafkaRedriver:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def produce(self, letters: Sequence[DeadLetter]) -> None:
        if not letters:
            return
        if self._producer is None:
            # Started on first use: list, show and dry runs never open a producer.
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True)
            await producer.start()
            self._producer = producer
        sent = [
            await self._producer.send(
                letter.origin.topic,
                value=letter.value,
                key=letter.key,
                headers=letter.original_headers(),
            )
            for letter in letters
        ]
        for delivery in sent:
            await delivery
