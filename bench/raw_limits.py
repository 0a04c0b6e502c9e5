"""The limits the services are measured against: the least code that does the same I/O.

`raw_consume`: consume a topic with aiokafka (`getmany`), parse each event and write its key to
Redis with pipelining (HSET of the document bytes and the version); the projector's and the
replay's limit. `raw_transactions`: the command API's MongoDB transaction (state document plus
event insert) in a loop at a fixed concurrency; the command side's limit.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer

from bench.environment import topic_partitions
from command_api.adapters.mongo_documents import campaign_document
from command_api.adapters.mongo_schema import CAMPAIGNS, EVENTS, ensure_indexes, mongo_client
from command_api.adapters.mongo_unit_of_work import _envelope
from command_api.domain.campaign import Campaign, CampaignDetails
from events import to_log_document
from events.envelope import utc_now
from service_runtime.settings import Settings

FETCH_MAX_RECORDS = 500


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


async def raw_consume(settings: Settings, topic: str, key_prefix: str) -> Rate:
    """Read `topic` from the start to its current end; one pipelined HSET per record."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    redis = aioredis.from_url(settings.redis_url)
    await consumer.start()
    try:
        partitions = await topic_partitions(consumer, topic)
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        remaining = {tp: end for tp, end in ends.items() if end > 0}
        total = 0
        started = time.perf_counter()
        while remaining:
            batches = await consumer.getmany(timeout_ms=1000, max_records=FETCH_MAX_RECORDS)
            pipe = redis.pipeline(transaction=False)
            for tp, records in batches.items():
                for record in records:
                    event = orjson.loads(record.value)
                    pipe.hset(
                        f"{key_prefix}:campaign:{record.key.decode()}",
                        mapping={"doc": record.value, "v": event["aggregate_version"]},
                    )
                total += len(records)
                if tp in remaining and records and records[-1].offset + 1 >= remaining[tp]:
                    del remaining[tp]
            if len(pipe):
                await pipe.execute()
        return Rate(total, time.perf_counter() - started)
    finally:
        await consumer.stop()
        await redis.aclose()


def _campaign_transaction_documents(owner_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The state document and the event document the command API writes for one create."""
    details = CampaignDetails.parse(
        name="Raw loop campaign",
        description="",
        channel="email",
        budget_amount="100.00",
        budget_currency="EUR",
        starts_at=utc_now(),
        ends_at=utc_now().replace(year=utc_now().year + 1),
        tags=["bench"],
    )
    campaign = Campaign.create(
        campaign_id=str(uuid.uuid4()), owner_id=owner_id, details=details, now=utc_now()
    )
    state = campaign_document(campaign)
    event = to_log_document(_envelope(campaign.pending_events[0], owner_id))
    event["recorded_at"] = utc_now()
    return state, event


async def raw_transactions(settings: Settings, count: int, concurrency: int, owner_id: str) -> Rate:
    """`count` transactions of (insert state document, insert event), `concurrency` at a time."""
    client = mongo_client(settings)
    db = client[settings.mongo_db]
    await ensure_indexes(db)
    documents = [_campaign_transaction_documents(owner_id) for _ in range(count)]
    queue = iter(documents)

    async def writer() -> int:
        done = 0
        for state, event in queue:
            async with client.start_session() as session:
                await session.start_transaction()
                await db[CAMPAIGNS].insert_one(state, session=session)
                await db[EVENTS].insert_one(event, session=session)
                await session.commit_transaction()
            done += 1
        return done

    try:
        started = time.perf_counter()
        results = await asyncio.gather(*(writer() for _ in range(concurrency)))
        return Rate(sum(results), time.perf_counter() - started)
    finally:
        await client.close()
