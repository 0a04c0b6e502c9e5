"""The Kafka topics as a replay source: read from their earliest offsets by a throwaway consumer.

No consumer group: the partitions are assigned by hand and nothing is committed, so the
projectors' groups never notice a replay. A pass reads every partition up to the end offsets
taken when the pass begins; a partition that reached its end is paused until the next pass, so
passes have clean boundaries. Each aggregate's events stay in order: they share a partition
(the key is the aggregate id). Only as complete as the topics' retention: the MongoDB log is
the authoritative source.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from events import EventEnvelope, InvalidEvent, decode_event
from projectors.replay.application.ports import SourceUnavailable

FETCH_RECORDS = 2000
FETCH_TIMEOUT_MS = 500


@dataclass
class _KafkaPass:
    batches_of: AsyncIterator[Sequence[EventEnvelope]]
    expected: int | None

    def batches(self) -> AsyncIterator[Sequence[EventEnvelope]]:
        return self.batches_of


class KafkaEventSource:
    name = "kafka"

    def __init__(self, bootstrap: str, topics: Mapping[str, str]) -> None:
        """`topics`: aggregate type -> topic."""
        self.bootstrap = bootstrap
        self.topics = dict(topics)
        self.invalid = 0
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            # What the consumer prefetches stays in memory until read: 4 and 32 MiB held up to
            # ~30 MiB more at 100,000 campaigns than at 10,000 (whose topic is smaller than that)
            # in the replay's peak RSS; 1 and 4 MiB read as fast.
            max_partition_fetch_bytes=1024 * 1024,
            fetch_max_bytes=4 * 1024 * 1024,
        )
        self.partitions: list[TopicPartition] = []
        # The offset of the next record to read, per partition (ours, not the consumer's).
        self.next_offset: dict[TopicPartition, int] = {}

    async def __aenter__(self) -> KafkaEventSource:
        self.partitions = await self._partitions()
        await self.consumer.start()
        try:
            self.consumer.assign(self.partitions)
            # Explicit seeks: with aiokafka 0.14, end_offsets() followed by seek_to_beginning()
            # leaves the consumer fetching nothing.
            beginnings = await self.consumer.beginning_offsets(self.partitions)
            for partition, offset in beginnings.items():
                self.consumer.seek(partition, offset)
                self.next_offset[partition] = offset
        except BaseException:
            await self.consumer.stop()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.consumer.stop()

    async def _partitions(self) -> list[TopicPartition]:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            described = await admin.describe_topics(sorted(self.topics.values()))
        finally:
            await admin.close()
        partitions = []
        for topic in described:
            if topic["error_code"] or not topic["partitions"]:
                raise SourceUnavailable(f"topic {topic['topic']} does not exist")
            partitions += [TopicPartition(topic["topic"], p["partition"]) for p in topic["partitions"]]
        return sorted(partitions)

    async def sizes(self) -> dict[str, int]:
        """Records per aggregate type between the earliest and the end offsets (duplicates included)."""
        beginnings = await self.consumer.beginning_offsets(self.partitions)
        ends = await self.consumer.end_offsets(self.partitions)
        by_topic = {topic: kind for kind, topic in self.topics.items()}
        sizes = dict.fromkeys(self.topics, 0)
        for partition in self.partitions:
            sizes[by_topic[partition.topic]] += ends[partition] - beginnings[partition]
        return sizes

    async def next_pass(self, exact: bool = True) -> _KafkaPass:
        """Every pass is exact: it reads each partition up to its end offset as of now."""
        ends = await self.consumer.end_offsets(self.partitions)
        remaining = {tp: end for tp, end in ends.items() if self.next_offset[tp] < end}
        expected = sum(end - self.next_offset[tp] for tp, end in remaining.items())
        return _KafkaPass(self._read(remaining), expected)

    async def _read(self, remaining: dict[TopicPartition, int]) -> AsyncIterator[Sequence[EventEnvelope]]:
        consumer = self.consumer
        consumer.pause(*[tp for tp in self.partitions if tp not in remaining])
        consumer.resume(*remaining)
        while remaining:
            fetched = await consumer.getmany(
                *remaining, timeout_ms=FETCH_TIMEOUT_MS, max_records=FETCH_RECORDS
            )
            envelopes: list[EventEnvelope] = []
            for partition, records in fetched.items():
                for record in records:
                    try:
                        envelopes.append(decode_event(record.value or b""))
                    except InvalidEvent:
                        self.invalid += 1
                if records:
                    self.next_offset[partition] = records[-1].offset + 1
            if not fetched:
                # Offsets can skip (transaction markers): ask where the consumer stands.
                for partition in remaining:
                    self.next_offset[partition] = max(
                        self.next_offset[partition], await consumer.position(partition)
                    )
            for partition in [tp for tp, end in remaining.items() if self.next_offset[tp] >= end]:
                consumer.pause(partition)
                del remaining[partition]
            if envelopes:
                yield envelopes
