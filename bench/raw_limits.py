"""The limits the services are measured against: the least code that does the same I/O.

`raw_consume`: consume a topic with aiokafka (`getmany`), parse each event and write the same
keys the campaigns projection writes, with pipelining: the campaign's hash (document, owner,
version) and the index memberships the event moves (ZREM/ZADD), computed from the campaign's
fields kept in a dict in memory, with no reads, no version guard, no atomicity and no
notices; the projector's and the replay's limit. `raw_consume_one_key` is the loop the first
session measured against (one HSET of the record bytes per event), kept as a reference.
`raw_transactions`: the command API's MongoDB transaction (state document plus
event insert, in one bulkWrite as the unit of work sends them, then commit) in a loop at a fixed
concurrency; the command side's limit.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from pymongo import InsertOne
from redis.asyncio.client import Pipeline

from bench.environment import topic_partitions
from command_api.adapters.mongo_documents import campaign_document as campaign_state_document
from command_api.adapters.mongo_schema import CAMPAIGNS, EVENTS, ensure_indexes, mongo_client
from command_api.adapters.mongo_unit_of_work import _envelope
from command_api.domain.campaign import Campaign, CampaignDetails
from events import EventEnvelope, to_log_document
from events.envelope import utc_now
from readmodels.campaigns import campaign_document, filter_moves, membership_moves, next_campaign_state
from readmodels.keyspace import CampaignKeys
from service_runtime.redis_client import connect_redis
from service_runtime.settings import Settings

FETCH_MAX_RECORDS = 500


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0


def _same_keys(key_prefix: str) -> Callable[[Pipeline, bytes], None]:
    """Queue on `pipe` the writes the campaigns projection makes for one event's JSON."""
    keys = CampaignKeys(key_prefix)
    states: dict[str, dict[str, Any]] = {}

    def write(pipe: Pipeline, value: bytes) -> None:
        # Parsed, not validated: the least a loop must do to know what to write.
        data = orjson.loads(value)
        data["occurred_at"] = datetime.fromisoformat(data["occurred_at"])
        event = EventEnvelope.model_construct(**data)
        old = states.get(event.aggregate_id)
        new = next_campaign_state(old, event)
        states[event.aggregate_id] = new
        for move in membership_moves(old, new):
            for where in move.leaves:
                pipe.zrem(keys.filtered_index(move.sort, where), move.old_member)
            for where in move.joins:
                pipe.zadd(keys.filtered_index(move.sort, where), {move.new_member: 0})
        left, joined = filter_moves(old, new)
        for dimension, value in left:
            pipe.srem(keys.filter_set(dimension, value), event.aggregate_id)
        for dimension, value in joined:
            pipe.sadd(keys.filter_set(dimension, value), event.aggregate_id)
        pipe.hset(
            keys.campaign(event.aggregate_id),
            mapping={"doc": campaign_document(new), "x:owner": new["owner_id"], "v": new["version"]},
        )

    return write


def _one_key(key_prefix: str) -> Callable[[Pipeline, bytes], None]:
    keys = CampaignKeys(key_prefix)

    def write(pipe: Pipeline, value: bytes) -> None:
        event = orjson.loads(value)
        pipe.hset(
            keys.campaign(event["aggregate_id"]),
            mapping={"doc": value, "v": event["aggregate_version"]},
        )

    return write


async def raw_consume(settings: Settings, topic: str, key_prefix: str) -> Rate:
    """Read `topic` from the start to its current end, writing what the projection writes."""
    return await _consume(settings, topic, _same_keys(key_prefix))


async def raw_consume_one_key(settings: Settings, topic: str, key_prefix: str) -> Rate:
    """Read `topic` from the start to its current end; one pipelined HSET per record."""
    return await _consume(settings, topic, _one_key(key_prefix))


async def _consume(settings: Settings, topic: str, write: Callable[[Pipeline, bytes], None]) -> Rate:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    redis = connect_redis(settings)
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
                    write(pipe, record.value)
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
    state = campaign_state_document(campaign)
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
                # What the unit of work sends for a create: one ordered bulkWrite, then commit.
                await client.bulk_write(
                    [
                        InsertOne(state, namespace=f"{settings.mongo_db}.{CAMPAIGNS}"),
                        InsertOne(event, namespace=f"{settings.mongo_db}.{EVENTS}"),
                    ],
                    session=session,
                    ordered=True,
                )
                await session.commit_transaction()
            done += 1
        return done

    try:
        started = time.perf_counter()
        results = await asyncio.gather(*(writer() for _ in range(concurrency)))
        return Rate(sum(results), time.perf_counter() - started)
    finally:
        await client.close()
