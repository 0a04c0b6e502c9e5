"""The outbox relay against real MongoDB and Kafka: order, no loss, no gap, one publisher at a time."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from command_api.adapters.kafka_publisher import kafka_producer_factory
from command_api.adapters.mongo_schema import RELAY_STATE, Document
from command_api.adapters.outbox_relay import OutboxRelay
from command_api.adapters.relay_lease import LEASE_ID
from command_api.entrypoints import relay as relay_entrypoint
from events.log import WATERMARK_ID, read_watermark, relay_backlog
from readmodels.keyspace import relay_status_key
from service_runtime.redis_client import connect_redis
from service_runtime.settings import Settings
from tests.integration.command_api.outbox import (
    all_published,
    consume,
    interleaved,
    log_documents,
    running_relay,
    versions_by_key,
    wait_until,
)
from tests.support.ledger import kafka_offsets
from tests.support.services import settings_env
from tests.support.stack import REPO

CLOSED_PORT = "127.0.0.1:9"


@pytest.fixture
def quick(settings: Settings) -> Settings:
    """Short leases, so hand-overs happen within a test's patience."""
    return settings.model_copy(update={"relay_lease_seconds": 1.0})


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = connect_redis(settings)
    yield client
    await client.aclose()


def assert_no_gap_and_in_order(by_key: dict[str, list[int]], expected_last: dict[str, int]) -> None:
    """Every version arrived; by first arrival, versions only go up (re-sends may repeat some)."""
    assert set(by_key) == set(expected_last)
    for key, versions in by_key.items():
        first_seen = list(dict.fromkeys(versions))
        assert first_seen == list(range(1, expected_last[key] + 1)), key


async def test_1000_events_over_20_aggregates_arrive_in_version_order_per_key(
    settings: Settings, mongo: AsyncMongoClient[Document], db: AsyncDatabase[Document]
) -> None:
    aggregates = [f"campaign-{i:02d}" for i in range(20)]
    # Half waits in the log before the relay starts (catch-up), half arrives while it runs (stream).
    await db["events"].insert_many(interleaved(aggregates, range(1, 26)))
    async with running_relay(settings, mongo):
        for version in range(26, 51):
            await db["events"].insert_many(interleaved(aggregates, range(version, version + 1)))
        await wait_until(lambda: all_published(db), 60, "every event published")

    received = await consume(settings, 1000, settle=0.5)
    # Events written while the first scan ran may come twice (the scan's and the stream's):
    # duplicates at worst, each after its own version.
    assert len(received) >= 1000
    assert_no_gap_and_in_order(versions_by_key(received), dict.fromkeys(aggregates, 50))
    sample = received[0]
    assert sample.key == sample.envelope.aggregate_id
    assert sample.headers == {
        "event_type": sample.envelope.event_type,
        "event_id": str(sample.envelope.event_id),
        "correlation_id": sample.envelope.correlation_id,
        "aggregate_version": str(sample.envelope.aggregate_version),
    }
    # No event is rewritten to say so: the relay's watermark holds the newest event published.
    published = await db["events"].find_one({"_id": str(sample.envelope.event_id)})
    assert published is not None and "published" not in published
    newest = await db["events"].find_one(sort=[("recorded_at", -1)])
    watermark = await read_watermark(db)
    assert newest is not None and watermark is not None and watermark.token is not None
    assert watermark.recorded_through == newest["recorded_at"]


async def _holds(relay: OutboxRelay) -> bool:
    return relay.lease.held


async def test_with_a_linger_the_events_right_behind_the_first_share_its_transaction(
    settings: Settings, mongo: AsyncMongoClient[Document], db: AsyncDatabase[Document]
) -> None:
    """`relay_linger_ms`: while events keep coming, each Kafka transaction takes every event that
    arrived within the linger after its first, so events inserted one at a time go out in about
    (their spread / the linger) transactions rather than one each (the first, after a quiet
    spell, at once and alone); every one of them, in order."""
    linger = 1.0
    lingering = settings.model_copy(update={"relay_linger_ms": linger * 1000})
    documents = log_documents("campaign-linger", range(1, 11))
    async with running_relay(lingering, mongo) as relay:
        await wait_until(lambda: _holds(relay), 30, "the relay publishing")
        await asyncio.sleep(0.5)  # its stream open and its first scan done
        started = time.monotonic()
        for document in documents:  # ten inserts 20 ms apart: each its own change
            await db["events"].insert_one(document)
            await asyncio.sleep(0.02)
        spread = time.monotonic() - started
        await wait_until(lambda: all_published(db), 60, "every event published")
    received = await consume(settings, 10, settle=0.5)
    assert versions_by_key(received) == {"campaign-linger": list(range(1, 11))}
    # One partition: ten records and a commit marker per transaction. Without the linger each
    # insert the stream reports alone is its own transaction (ten).
    transactions = await kafka_offsets(settings) - 10
    assert 1 <= transactions <= int(spread / linger) + 2


async def test_with_transactions_off_the_relay_publishes_every_event_in_order_with_no_markers(
    settings: Settings, mongo: AsyncMongoClient[Document], db: AsyncDatabase[Document]
) -> None:
    """The bench's comparison mode (`relay_transactions` off): the same events, in order, and no
    transaction commit markers taking offsets."""
    plain = settings.model_copy(update={"relay_transactions": False})
    aggregates = [f"campaign-{i:02d}" for i in range(5)]
    await db["events"].insert_many(interleaved(aggregates, range(1, 11)))
    async with running_relay(plain, mongo):
        await wait_until(lambda: all_published(db), 60, "every event published")
    received = await consume(settings, 50, settle=0.5)
    assert versions_by_key(received) == {a: list(range(1, 11)) for a in aggregates}
    assert await kafka_offsets(settings) == 50


async def test_events_written_while_kafka_is_unreachable_all_arrive_after_it_comes_back(
    settings: Settings, mongo: AsyncMongoClient[Document], db: AsyncDatabase[Document]
) -> None:
    broker = {"address": CLOSED_PORT}

    def producer_at_current_address() -> AIOKafkaProducer:
        return kafka_producer_factory(settings.model_copy(update={"kafka_bootstrap": broker["address"]}))()

    async with running_relay(settings, mongo, producer_factory=producer_at_current_address) as relay:
        await db["events"].insert_many(log_documents("before", range(1, 11)))
        await asyncio.sleep(0.5)
        await db["events"].insert_many(log_documents("during", range(1, 21)))
        await asyncio.sleep(1.5)
        assert await relay_backlog(db) == 30  # the watermark holds none while Kafka cannot acknowledge
        assert relay.published_total == 0

        broker["address"] = settings.kafka_bootstrap  # Kafka is back
        await wait_until(lambda: all_published(db), 30, "the backlog published after Kafka returned")

    received = await consume(settings, 30, settle=0.5)
    assert_no_gap_and_in_order(versions_by_key(received), {"before": 10, "during": 20})


async def test_a_relay_process_killed_mid_stream_leaves_no_gap(
    quick: Settings, mongo: AsyncMongoClient[Document], db: AsyncDatabase[Document]
) -> None:
    # Small batches, so the kill lands between batches of one run, not before or after it.
    quick = quick.model_copy(update={"relay_batch_size": 50})
    aggregates = [f"k{i}" for i in range(10)]
    documents = interleaved(aggregates, range(1, 101))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "launcher",
        "serve",
        "relay",
        cwd=REPO,
        env=settings_env(quick),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        await wait_until(lambda: _watermark_saved(db), 60, "the relay process to start")
        # The first half arrives through the stream, fifty at a time.
        for start in range(0, 500, 50):
            await db["events"].insert_many(documents[start : start + 50])
        await wait_until(lambda: _some_published(db), 60, "the relay process to publish")
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # no chance to finish a batch or release the lease
        await process.wait()
    await db["events"].insert_many(documents[500:])
    left = await relay_backlog(db)
    assert 500 <= left < 1000, "killed mid-stream"

    # The next relay waits out the dead one's lease, then resumes from the log.
    async with running_relay(quick, mongo):
        await wait_until(lambda: all_published(db), 90, "the rest published after the restart")

    received = await consume(quick, 1000, settle=1.0)
    assert_no_gap_and_in_order(versions_by_key(received), dict.fromkeys(aggregates, 100))


async def _watermark_saved(db: AsyncDatabase[Document]) -> bool:
    return await read_watermark(db) is not None


async def _some_published(db: AsyncDatabase[Document]) -> bool:
    watermark = await read_watermark(db)
    return watermark is not None and watermark.recorded_through is not None


async def test_events_in_kafka_the_watermark_does_not_hold_are_sent_again_never_skipped(
    quick: Settings, mongo: AsyncMongoClient[Document], db: AsyncDatabase[Document]
) -> None:
    async with running_relay(quick, mongo) as relay:
        await wait_until(lambda: _holds(relay.lease.held), 10, "the relay to hold the lease")
        await db["events"].insert_many(log_documents("c", range(1, 4)))
        await wait_until(lambda: all_published(db), 30, "first publication")
    before = await db[RELAY_STATE].find_one({"_id": WATERMARK_ID})
    async with running_relay(quick, mongo):
        await db["events"].insert_many(log_documents("c", range(4, 6)))
        await wait_until(lambda: all_published(db), 30, "versions 4 and 5 published")
    # As if the relay died after Kafka committed versions 4 and 5, before its watermark was saved.
    await db[RELAY_STATE].replace_one({"_id": WATERMARK_ID}, before)
    await db["events"].insert_many(log_documents("c", range(6, 8)))
    async with running_relay(quick, mongo):
        await wait_until(lambda: all_published(db), 30, "publication after the restart")

    received = await consume(quick, 9, settle=0.5)
    assert versions_by_key(received) == {"c": [1, 2, 3, 4, 5, 4, 5, 6, 7]}


async def test_a_second_relay_does_not_publish_while_the_first_holds_the_lease(
    settings: Settings, mongo: AsyncMongoClient[Document], db: AsyncDatabase[Document]
) -> None:
    # A long lease: the second relay only gets it early because the first hands it over.
    steady = settings.model_copy(update={"relay_lease_seconds": 5.0})
    async with running_relay(steady, mongo, holder="first") as first:
        await wait_until(lambda: _holds(first.lease.held), 10, "the first relay to hold the lease")
        async with running_relay(steady, mongo, holder="second") as second:
            await db["events"].insert_many(log_documents("a", range(1, 21)))
            await wait_until(lambda: all_published(db), 30, "publication by the first relay")
            await asyncio.sleep(0.5)
            assert first.published_total == 20
            assert second.published_total == 0
            assert not second.lease.held
            assert await first.lease.current_holder() == "first"
        # first still publishes alone
        assert second.published_total == 0
    received = await consume(steady, 20, settle=0.5)
    assert versions_by_key(received) == {"a": list(range(1, 21))}


async def test_a_stopped_relay_hands_its_lease_over_before_it_would_expire(
    settings: Settings, mongo: AsyncMongoClient[Document], db: AsyncDatabase[Document]
) -> None:
    lease_seconds = 8.0
    steady = settings.model_copy(update={"relay_lease_seconds": lease_seconds})
    first_running = running_relay(steady, mongo, holder="first")
    first = await first_running.__aenter__()
    first_stopped = False
    try:
        await wait_until(lambda: _holds(first.lease.held), 10, "the first relay to hold the lease")
        async with running_relay(steady, mongo, holder="second") as second:
            await asyncio.sleep(0.3)
            assert not second.lease.held
            await first_running.__aexit__(None, None, None)
            first_stopped = True
            await db["events"].insert_many(log_documents("b", range(1, 4)))
            # Well within the term the first relay's last renewal gave it: it released the lease.
            await wait_until(
                lambda: all_published(db), lease_seconds * 0.6, "publication by the second relay"
            )
            assert second.lease.held
            assert second.published_total == 3
    finally:
        if not first_stopped:
            await first_running.__aexit__(None, None, None)


async def test_a_relay_that_lost_its_lease_stops_publishing(
    quick: Settings, mongo: AsyncMongoClient[Document], db: AsyncDatabase[Document]
) -> None:
    async with running_relay(quick, mongo) as relay:
        await wait_until(lambda: _holds(relay.lease.held), 10, "the relay to hold the lease")
        # Another relay (elsewhere) now holds the lease.
        far = datetime.now(UTC) + timedelta(hours=1)
        await db[RELAY_STATE].update_one(
            {"_id": LEASE_ID}, {"$set": {"holder": "elsewhere", "expires_at": far}}
        )
        await wait_until(lambda: _holds(not relay.lease.held), 5, "the relay to notice")
        await db["events"].insert_many(log_documents("x", range(1, 4)))
        await asyncio.sleep(1.5)
        assert await relay_backlog(db) == 3
        assert relay.published_total == 0

        await db[RELAY_STATE].delete_one({"_id": LEASE_ID})  # the other relay is gone
        await wait_until(lambda: all_published(db), 15, "publication once the lease is back")
    received = await consume(quick, 3, settle=0.3)
    assert versions_by_key(received) == {"x": [1, 2, 3]}


async def _holds(value: bool) -> bool:
    return value


async def test_relay_reports_backlog_lease_holder_and_last_publish_to_redis(
    quick: Settings, mongo: AsyncMongoClient[Document], db: AsyncDatabase[Document], redis: aioredis.Redis
) -> None:
    key = relay_status_key(quick.redis_prefix)
    async with running_relay(quick, mongo, redis=redis, holder="reporter") as relay:
        await db["events"].insert_many(log_documents("s", range(1, 4)))
        await wait_until(lambda: all_published(db), 15, "publication")

        async def reported() -> bool:
            raw = await redis.get(key)
            return raw is not None and orjson.loads(raw)["published_total"] == 3

        await wait_until(reported, 10, "a status report after publishing")
        status = orjson.loads(await redis.get(key) or b"{}")
        assert status["backlog"] == 0
        assert status["lease_holder"] == "reporter"
        assert status["last_published_at"] is not None
        assert relay.published_total == 3
        assert 0 < await redis.ttl(key) <= 10


async def test_the_watermark_is_saved_as_the_stream_advances_while_the_relay_runs(
    settings: Settings, mongo: AsyncMongoClient[Document], db: AsyncDatabase[Document]
) -> None:
    documents = log_documents("r", range(1, 3))
    async with running_relay(settings, mongo) as relay:
        await wait_until(lambda: _holds(relay.lease.held), 10, "the lease")
        await wait_until(lambda: _watermark_saved(db), 10, "the watermark after the first scan")
        first = await read_watermark(db)
        await db["events"].insert_many(documents)

        async def advanced() -> bool:
            watermark = await read_watermark(db)
            return watermark is not None and watermark.recorded_through is not None

        await wait_until(advanced, 10, "the watermark past the new events, the relay still running")
        watermark = await read_watermark(db)
    assert first is not None and watermark is not None
    assert watermark.token is not None and watermark.token != first.token
    newest = await db["events"].find_one({"_id": documents[-1]["_id"]})
    assert newest is not None and watermark.recorded_through == newest["recorded_at"]


async def test_serve_relay_entrypoint_publishes_and_shuts_down_cleanly_releasing_the_lease(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    steady = settings.model_copy(update={"relay_lease_seconds": 30.0})
    await db["events"].insert_many(log_documents("e", range(1, 4)))
    running = asyncio.create_task(relay_entrypoint.run(steady))
    await wait_until(lambda: all_published(db), 30, "publication by `campaigns serve relay`")
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    lease = await db[RELAY_STATE].find_one({"_id": LEASE_ID})
    assert lease is not None
    assert lease["expires_at"] <= datetime.now(UTC)


async def test_a_relay_started_again_resumes_right_after_its_watermark_without_reading_the_log(
    quick: Settings,
    mongo: AsyncMongoClient[Document],
    db: AsyncDatabase[Document],
    caplog: pytest.LogCaptureFixture,
) -> None:
    await db["events"].insert_many(log_documents("w", range(1, 4)))
    async with running_relay(quick, mongo):
        await wait_until(lambda: all_published(db), 30, "the first publication")
    await db["events"].insert_many(log_documents("w", range(4, 6)))  # while no relay runs
    caplog.set_level(logging.INFO, logger="command_api.adapters.outbox_relay")
    caplog.clear()
    async with running_relay(quick, mongo):
        await wait_until(lambda: all_published(db), 30, "the events written meanwhile")

    # A relay stopped cleanly saved where it was: nothing is sent twice, and no scan ran.
    received = await consume(quick, 5, settle=0.5)
    assert versions_by_key(received) == {"w": [1, 2, 3, 4, 5]}
    assert not [r for r in caplog.records if "catch-up" in r.getMessage()]
