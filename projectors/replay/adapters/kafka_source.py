"""The Kafka topics as a replay source: read from their earliest offsets by a throwaway consumer.

No consumer group: the partitions are assigned by hand and nothing is committed, so the
projectors' groups never notice a replay. A pass reads every partition up to the end offsets
taken when the pass begins, one partition after another; a partition that reached its end is
paused until the next pass, so passes have clean boundaries. Each aggregate's events stay in
order: they share a partition (the key is the aggregate id). Only as complete as the topics'
retention: the MongoDB log is the authoritative source.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from events import EventEnvelope, InvalidEvent, decode_event
from projectors.replay.application.ports import ClosingBatch, SourceUnavailable
from projectors.replay.domain.plan import cut_into_shares

# Records per batch handed to the writers: a batch's decoded events and what the writers make of
# them are in memory together. 2,000 held ~10 MiB more a process past 10,000 campaigns than 500,
# which replay as fast (session 22).
FETCH_RECORDS = 500
FETCH_TIMEOUT_MS = 500

# A part of a pass: partition -> (first offset to read, end offset), for one process to read.
Share = dict[TopicPartition, tuple[int, int]]


@dataclass
class _KafkaPass:
    batches_of: AsyncIterator[Sequence[EventEnvelope]]
    expected: int | None

    def batches(self) -> AsyncIterator[Sequence[EventEnvelope]]:
        return self.batches_of


class KafkaEventSource:
    name = "kafka"

    def __init__(
        self, bootstrap: str, topics: Mapping[str, str], start: Mapping[TopicPartition, int] | None = None
    ) -> None:
        """`topics`: aggregate type -> topic; `start`: only these partitions, from these offsets
        (a process of a split pass), instead of every partition from its beginning."""
        self.bootstrap = bootstrap
        self.start = dict(start) if start is not None else None
        self.topics = dict(topics)
        self.invalid = 0
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
            # What the consumer prefetches stays in memory until read: 4 and 32 MiB held up to
            # ~30 MiB more at 100,000 campaigns than at 10,000 (whose topic is smaller than that)
            # in the replay's peak RSS; 1 and 4 MiB read as fast, and 256 KiB and 1 MiB saved
            # ~10 MiB more over two processes (session 22) at the same speed.
            max_partition_fetch_bytes=256 * 1024,
            fetch_max_bytes=1024 * 1024,
        )
        self.partitions: list[TopicPartition] = []
        # The offset of the next record to read, per partition (ours, not the consumer's).
        self.next_offset: dict[TopicPartition, int] = {}

    async def __aenter__(self) -> KafkaEventSource:
        self.partitions = sorted(self.start) if self.start is not None else await self._partitions()
        await self.consumer.start()
        try:
            self.consumer.assign(self.partitions)
            # Explicit seeks: with aiokafka 0.14, end_offsets() followed by seek_to_beginning()
            # leaves the consumer fetching nothing.
            beginnings = (
                self.start
                if self.start is not None
                else await self.consumer.beginning_offsets(self.partitions)
            )
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

    async def shares(self, ways: int) -> list[Share]:
        """This pass (each partition up to its end offset as of now) cut into up to `ways` parts
        of whole partitions, about equal in records, the largest first. An aggregate's events
        share a partition, so each part holds every event of its aggregates."""
        ends = await self.consumer.end_offsets(self.partitions)
        return cut_into_shares({tp: (self.next_offset[tp], end) for tp, end in ends.items()}, ways)

    def share_pass(self, share: Share) -> _KafkaPass:
        """Read only `share` (this process's part of a split pass), up to its ends."""
        remaining = {tp: end for tp, (_, end) in share.items()}
        return _KafkaPass(self._read(remaining), sum(end - first for first, end in share.values()))

    def positions(self) -> dict[TopicPartition, int]:
        """Where this source stands: the next offset to read, per partition."""
        return dict(self.next_offset)

    def moved(self, positions: Mapping[TopicPartition, int], invalid: int) -> None:
        """Another process read these partitions up to `positions` (skipping `invalid` records):
        the next pass starts there."""
        for tp, offset in positions.items():
            self.next_offset[tp] = offset
            self.consumer.seek(tp, offset)
        self.invalid += invalid

    async def _read(self, remaining: dict[TopicPartition, int]) -> AsyncIterator[Sequence[EventEnvelope]]:
        """Each partition of `remaining` read to its end, one partition at a time, its last batch
        a `ClosingBatch`: none of the aggregates read so far has an event left in this pass (an
        aggregate's events share a partition), so a writer may write out what it holds for them.
        A writer folding in memory then needs a window of one partition's aggregates, not of all
        those a process reads, to write each of them once."""
        consumer = self.consumer
        consumer.pause(*self.partitions)
        for partition, end in sorted(remaining.items()):
            if self.next_offset[partition] >= end:
                continue  # nothing of it in this pass (a share's empty partition)
            consumer.resume(partition)
            while self.next_offset[partition] < end:
                fetched = await consumer.getmany(
                    partition, timeout_ms=FETCH_TIMEOUT_MS, max_records=FETCH_RECORDS
                )
                records = fetched.get(partition, ())
                envelopes: list[EventEnvelope] = []
                for record in records:
                    try:
                        envelopes.append(decode_event(record.value or b""))
                    except InvalidEvent:
                        self.invalid += 1
                if records:
                    self.next_offset[partition] = records[-1].offset + 1
                else:
                    # Offsets can skip (transaction markers): ask where the consumer stands.
                    self.next_offset[partition] = max(
                        self.next_offset[partition], await consumer.position(partition)
                    )
                if self.next_offset[partition] >= end:
                    consumer.pause(partition)
                    yield ClosingBatch(envelopes)
                elif envelopes:
                    yield envelopes
