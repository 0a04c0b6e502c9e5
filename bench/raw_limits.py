"""The limits the services are measured against: the least code that does the same I/O.

`raw_consume`: consume a topic with aiokafka (`getmany`), parse each event and write the same
keys the campaigns projection writes, with pipelining: the campaign's hash (document, owner,
version) and the index memberships the event moves (ZREM/ZADD), computed from the campaign's
fields kept in a dict in memory, with no reads, no version guard, no atomicity and no
notices; the projector's and the replay's limit. `raw_consume_one_key` is the loop the first
session measured against (one HSET of the record bytes per event), kept as a reference.
`raw_transactions`: the command API's MongoDB transaction (state document plus
event insert, in one bulkWrite as the unit of work sends them, then commit) in a loop at a fixed
concurrency; the command side's limit. `raw_firings`: the scheduler's firing transaction (a batch
of activations' writes grouped as the scheduler sends them) in a loop; the scheduler's limit.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from pymongo import InsertOne, UpdateMany
from redis.asyncio.client import Pipeline

from bench.environment import topic_partitions
from command_api.adapters.mongo_documents import campaign_document as campaign_state_document
from command_api.adapters.mongo_schema import (
    CAMPAIGNS,
    EVENTS,
    Document,
    ensure_indexes,
    mongo_client,
)
from command_api.adapters.mongo_unit_of_work import IN_CHUNK, MAJORITY, _envelope, _grouped_update, chunked
from command_api.domain.campaign import SCHEDULER_ACTOR_ID, Campaign, CampaignDetails, DueTimer
from events import EventEnvelope, to_log_document
from events.envelope import utc_now
from readmodels.campaigns import (
    campaign_document,
    filter_moves,
    membership_moves,
    next_campaign_state,
    set_member,
)
from readmodels.keyspace import CampaignKeys
from readmodels.stored_documents import stored_form
from service_runtime.redis_client import connect_redis
from service_runtime.settings import Settings
from tests.support.factories import scheduled_campaign

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
            pipe.srem(keys.filter_set(dimension, value), set_member(event.aggregate_id, True))
        for dimension, value in joined:
            pipe.sadd(keys.filter_set(dimension, value), set_member(event.aggregate_id, True))
        pipe.hset(
            keys.campaign(event.aggregate_id),
            mapping={
                "doc": stored_form(campaign_document(new)),
                "x:owner": new["owner_id"],
                "v": new["version"],
            },
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


def _scheduled_campaigns(prefix: str, count: int, starts_at: datetime) -> list[tuple[Campaign, DueTimer]]:
    """Scheduled campaigns (version 2) and their activation timers, as the schedule command
    leaves them."""
    now = utc_now()
    return [
        scheduled_campaign(
            f"{prefix}-{n}",
            "bench",
            name=f"Raw firing {n}",
            starts_at=starts_at,
            ends_at=starts_at + timedelta(days=1),
            now=now,
        )
        for n in range(count)
    ]


async def raw_firings(settings: Settings, count: int, batch: int) -> Rate:
    """The raw write limit of the firing: `count` scheduled campaigns and their timers written
    first, then their activations' writes, `batch` a transaction as the scheduler groups them,
    then commit, one transaction at a time; no claim, no read, no scheduler. Timed from the
    first transaction to the last commit."""
    client = mongo_client(settings)
    db = client[settings.mongo_db]
    await ensure_indexes(db)
    # Due later than the loop runs (a start already passed would activate at once on scheduling);
    # the writes are built for a firing at the due time, whatever the clock.
    starts_at = utc_now() + timedelta(minutes=10)
    campaigns = _scheduled_campaigns(f"raw-firing-{uuid.uuid4().hex[:8]}", count, starts_at)
    try:
        for start in range(0, count, 1000):
            chunk = campaigns[start : start + 1000]
            await db[CAMPAIGNS].insert_many([campaign_state_document(c, t) for c, t in chunk])
        transactions = [
            _firing_writes(settings.mongo_db, campaigns[start : start + batch])
            for start in range(0, count, batch)
        ]
        started = time.perf_counter()
        for bulk, events in transactions:
            async with client.start_session() as session:
                await session.start_transaction(write_concern=MAJORITY)
                result = await client.bulk_write(bulk, session=session, ordered=True, verbose_results=True)
                await db[EVENTS].insert_many(events, session=session)
                await session.commit_transaction()
            if sum(r.matched_count for r in result.update_results.values()) != len(events):
                raise RuntimeError("the raw firing loop's guarded update missed campaigns")
        return Rate(count, time.perf_counter() - started)
    finally:
        await client.close()


def _firing_writes(
    db_name: str, batch: list[tuple[Campaign, DueTimer]]
) -> tuple[list[UpdateMany], list[Document]]:
    """What the scheduler's firing transaction sends for a batch of activations due together
    (`MongoCampaignRepository.save_many` and the unit of work's grouped inserts): a bulkWrite of
    updates of the campaigns' changed fields and next timers, guarded by their ids and version
    (`IN_CHUNK` ids each, the repository's own update), then one insert of the events. Built
    here from the documents alone."""
    fired_at = max(timer.due_at for _, timer in batch)
    events = []
    for campaign, timer in batch:
        assert campaign.fire(timer, fired_at)
        next_timer = campaign.due_timer()
        assert next_timer is not None and next_timer.due_at == campaign.details.ends_at
        [event] = campaign.collect_events()
        document = to_log_document(_envelope(event, SCHEDULER_ACTOR_ID))
        document["recorded_at"] = utc_now()
        events.append(document)
    first = batch[0][0]
    changed = {"status": first.status.value, "version": first.version, "updated_at": first.updated_at}
    update = _grouped_update(changed, ("complete", fired_at), first.version)
    # `IN_CHUNK` ids a statement, as `save_many` groups them.
    bulk = [
        UpdateMany(
            {"_id": {"$in": [campaign.id for campaign, _ in part]}, "version": first.version - 1},
            update,
            namespace=f"{db_name}.{CAMPAIGNS}",
        )
        for part in chunked(batch, IN_CHUNK)
    ]
    return bulk, events
