"""The projectors on real Kafka and Redis: redelivery, poison messages, restarts."""

from __future__ import annotations

import asyncio
import signal
import sys

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

from events import Topics, encode_event
from projectors.adapters.digest import generation_digest
from projectors.adapters.redis_projection import all_projections
from projectors.entrypoints.projectors import Projectors
from readmodels.keyspace import CampaignKeys, StatsKeys, UserKeys, announcement_channels, generation_base
from readmodels.status import read_status
from readmodels.stored_documents import document_json
from service_runtime.redis_pubsub import Message, Subscription
from service_runtime.settings import Settings
from tests.integration.read_side.conftest import (
    EventProducer,
    record_in_log,
    records_seen,
    running_projectors,
    wait_records,
    wait_until,
)
from tests.integration.read_side.workload import interleave, mixed_workload, new_campaign, new_user
from tests.support.redis_keys import summed_hashes
from tests.support.services import free_port, settings_env


def five_hundred_events() -> list:
    campaigns = mixed_workload(150, ["owner-a", "owner-b", "owner-c"])
    users = [new_user() for _ in range(40)]
    for user in users[:20]:
        user.then("UserLoggedIn")
    events = interleave([*campaigns, *users])
    return events[:500]


async def digests(redis: Redis, settings: Settings, suffix: str = "1") -> dict[str, str]:
    return {
        name: await generation_digest(redis, settings.redis_prefix, f"{name}.{suffix}")
        for name in ("campaigns", "users", "stats")
    }


async def wait_all(redis: Redis, settings: Settings, campaign_records: int, user_records: int) -> None:
    await wait_records(redis, settings, "campaigns", campaign_records)
    await wait_records(redis, settings, "users", user_records)
    await wait_records(redis, settings, "stats", campaign_records + user_records)


async def clean_run_digests(redis: Redis, settings: Settings, events: list) -> dict[str, str]:
    """What a replay would build: the same events applied once, in order, into generation 'clean'."""
    for projection in all_projections(settings.redis_prefix, settings.read_model_buckets):
        mine = [e for e in events if projection.accepts(e)]
        await projection.apply(redis, f"{projection.name}.clean", mine, announce=False)
    return await digests(redis, settings, "clean")


async def test_the_same_500_events_delivered_twice_give_an_identical_read_model(
    settings: Settings, redis: Redis, producer: EventProducer, projectors: Projectors
) -> None:
    events = five_hundred_events()
    campaign_events = sum(1 for e in events if e.aggregate_type == "campaign")
    user_events = len(events) - campaign_events

    await producer.publish(events)
    await wait_all(redis, settings, campaign_events, user_events)
    once = await digests(redis, settings)

    await producer.publish(events)
    await wait_all(redis, settings, 2 * campaign_events, 2 * user_events)
    assert await digests(redis, settings) == once
    assert once == await clean_run_digests(redis, settings, events)


async def test_poison_unknown_and_refused_events_are_dead_lettered_and_the_next_event_still_applies(
    settings: Settings, redis: Redis, producer: EventProducer, projectors: Projectors
) -> None:
    topics = Topics(settings.topic_prefix)
    campaign = new_campaign("owner-1")
    await producer.publish_raw(
        topics.campaigns, b"{not json", key=b"bad-1", headers=[("event_type", b"CampaignCreated")]
    )
    unknown = orjson.loads(encode_event(campaign.events[0]))
    unknown["event_type"] = "CampaignTeleported"
    await producer.publish_raw(topics.campaigns, orjson.dumps(unknown), key=b"bad-2")
    orphan = new_campaign("owner-1")
    orphan.events.clear()
    refused = orphan.then("CampaignUpdated", {"name": "an update with no creation"})
    await producer.publish_raw(topics.campaigns, encode_event(refused), key=b"bad-3")
    await producer.publish(campaign.events)

    await wait_records(redis, settings, "campaigns", 4)
    keys = CampaignKeys(generation_base(settings.redis_prefix, "campaigns.1"), settings.read_model_buckets)
    assert await redis.hget(keys.campaign(campaign.aggregate_id), "v") == b"1"

    consumer = AIOKafkaConsumer(
        Topics.dlq(topics.campaigns),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        letters = []

        async def six_letters() -> bool:
            batch = await consumer.getmany(timeout_ms=200)
            letters.extend(r for records in batch.values() for r in records)
            return len(letters) >= 6  # three bad records, from each of the campaigns and stats groups

        await wait_until(six_letters, 20, "dead letters")
    finally:
        await consumer.stop()
    by_group: dict[str, dict[bytes, dict[str, str]]] = {}
    for record in letters:
        headers = {k: v.decode() for k, v in record.headers}
        by_group.setdefault(headers["dlq_consumer_group"], {})[record.key] = headers | {"value": record.value}
    assert set(by_group) == {
        f"{settings.topic_prefix}projector.campaigns",
        f"{settings.topic_prefix}projector.stats",
    }
    for letters_of_group in by_group.values():
        assert letters_of_group[b"bad-1"]["value"] == b"{not json"
        assert letters_of_group[b"bad-1"]["event_type"] == "CampaignCreated"  # original headers kept
        assert letters_of_group[b"bad-1"]["dlq_error_type"] == "InvalidEvent"
        assert letters_of_group[b"bad-1"]["dlq_original_topic"] == topics.campaigns
        assert letters_of_group[b"bad-2"]["dlq_error_type"] == "UnknownEventType"
        assert "CampaignTeleported" in letters_of_group[b"bad-2"]["dlq_reason"]
        assert letters_of_group[b"bad-3"]["dlq_error_type"] == "ApplyFailed"
        assert "no creation event" in letters_of_group[b"bad-3"]["dlq_reason"]


async def test_a_projector_restarted_mid_stream_converges_to_the_clean_run(
    settings: Settings, redis: Redis, producer: EventProducer
) -> None:
    # Status every 20 ms (not the default 0.5 s): the stop must come when about 100 are seen.
    # Batches of 5 (a write and a commit each): the leaner projector finished the 405 campaign
    # events between the count of 100 and the stop with batches of 25.
    settings = settings.model_copy(update={"consumer_batch_size": 5, "projector_status_seconds": 0.02})
    events = five_hundred_events()
    await producer.publish(events)

    async with running_projectors(settings):
        await wait_until(
            lambda: _seen_at_least(redis, settings, "campaigns", 100), 30, "the first part of the stream"
        )
    stopped_at = await records_seen(redis, settings, "campaigns")
    campaign_events = sum(1 for e in events if e.aggregate_type == "campaign")
    assert stopped_at < campaign_events, "the restart must happen mid-stream"

    async with running_projectors(settings):
        await wait_until(lambda: _all_applied(redis, settings, events), 60, "every event applied")
    assert await digests(redis, settings) == await clean_run_digests(redis, settings, events)


async def _seen_at_least(redis: Redis, settings: Settings, projection: str, count: int) -> bool:
    return await records_seen(redis, settings, projection) >= count


async def _all_applied(redis: Redis, settings: Settings, events: list) -> bool:
    """Every aggregate's last version is in the read model (counts can't tell: redelivery re-counts)."""
    last: dict[str, int] = {}
    for e in events:
        last[e.aggregate_id] = max(last.get(e.aggregate_id, 0), e.aggregate_version)
    pipe = redis.pipeline(transaction=False)
    prefix, buckets = settings.redis_prefix, settings.read_model_buckets
    campaigns = CampaignKeys(generation_base(prefix, "campaigns.1"), buckets)
    users = UserKeys(generation_base(prefix, "users.1"), buckets)
    stats = StatsKeys(generation_base(prefix, "stats.1"), buckets)
    for e in events:
        if e.aggregate_version == last[e.aggregate_id]:
            if e.aggregate_type == "campaign":
                pipe.hget(campaigns.campaign(e.aggregate_id), "v")
                pipe.hget(*stats.campaign(e.aggregate_id))
            else:
                pipe.hget(users.user(e.aggregate_id), "v")
                pipe.hget(*stats.user(e.aggregate_id))
    values = [
        value.partition(b"|")[0] if value is not None else None for value in await pipe.execute()
    ]  # a stats state is `version|...` (lua/stats.lua)
    expected = [
        str(e.aggregate_version).encode() for e in events if e.aggregate_version == last[e.aggregate_id]
    ]
    return values == [v for pair in zip(expected, expected, strict=True) for v in pair]


async def test_an_event_arriving_before_its_predecessor_waits_for_it(
    settings: Settings, redis: Redis, producer: EventProducer, projectors: Projectors
) -> None:
    campaign = new_campaign("owner-1")
    campaign.then("CampaignActivated")
    campaign.then("CampaignPaused")
    # In the log too: a gap still open after gap_repair_delay_seconds would be filled from it.
    await record_in_log(settings, campaign.events)
    await producer.publish([campaign.events[0], campaign.events[2]])
    await wait_records(redis, settings, "campaigns", 2)
    keys = CampaignKeys(generation_base(settings.redis_prefix, "campaigns.1"), settings.read_model_buckets)
    assert await redis.hget(keys.campaign(campaign.aggregate_id), "v") == b"1"

    await producer.publish([campaign.events[1]])
    await wait_records(redis, settings, "campaigns", 3)
    document = orjson.loads(
        document_json(await redis.hget(keys.campaign(campaign.aggregate_id), "doc") or b"{}")
    )
    assert (document["version"], document["status"]) == (3, "paused")


async def test_projectors_write_a_heartbeat_with_their_position(
    settings: Settings, redis: Redis, projectors: Projectors
) -> None:
    async def beating() -> bool:
        status = await read_status(redis, settings.redis_prefix, ["campaigns", "users", "stats"])
        return all("heartbeat_at" in s for s in status.values())

    await wait_until(beating, 10, "heartbeats")
    status = await read_status(redis, settings.redis_prefix, ["campaigns"])
    assert status["campaigns"]["state"] == "running"
    assert status["campaigns"]["generation"] == "campaigns.1"
    assert status["campaigns"]["lag"] == "0"


async def test_each_applied_event_is_announced_once_with_what_the_monitor_shows(
    settings: Settings, redis: Redis, producer: EventProducer, projectors: Projectors
) -> None:
    channels = announcement_channels(settings.redis_prefix, settings.read_model_buckets)
    subscription = Subscription(redis, shard_channels=channels)
    await subscription.open()
    received: list[Message] = []
    reading = asyncio.create_task(subscription.run(received.append))
    campaign = new_campaign("owner-1")
    user = new_user()
    await producer.publish([*campaign.events, *user.events])
    await producer.publish(campaign.events)  # a redelivery is not announced again

    async def two_messages() -> bool:
        return len(received) >= 2

    await wait_until(two_messages, 20, "the announcements")
    await wait_records(redis, settings, "campaigns", 2)
    await asyncio.sleep(0.3)
    reading.cancel()
    await subscription.aclose()
    assert len(received) == 2
    messages = [orjson.loads(message["data"]) for message in received]
    by_type = {m["event_type"]: m for m in messages}
    announced = by_type["CampaignCreated"]
    assert announced["aggregate_id"] == campaign.aggregate_id
    assert announced["aggregate_version"] == 1
    assert announced["actor_id"] == "owner-1"
    assert announced["occurred_at"] == orjson.loads(encode_event(campaign.events[0]))["occurred_at"]
    assert announced["projected_at"] >= announced["occurred_at"]
    assert by_type["UserRegistered"]["aggregate_id"] == user.aggregate_id


async def test_the_projectors_process_stops_cleanly_on_sigterm(settings: Settings, redis: Redis) -> None:
    env = {**settings_env(settings), "PYTHONUNBUFFERED": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "launcher", "serve", "projectors",
        env={**env, "CAMPAIGNS_PROJECTORS_METRICS_PORT": str(free_port())},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    # Read as it comes: a process whose log fills the pipe blocks on its next line and never stops.
    reading = asyncio.create_task(process.stdout.read())
    try:
        beating = lambda: _beating(redis, settings)  # noqa: E731
        await wait_until(beating, 30, "the projectors to report")
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    output = (await reading).decode()
    assert code == 0, output
    assert "projectors stopped" in output


async def _beating(redis: Redis, settings: Settings) -> bool:
    status = await read_status(redis, settings.redis_prefix, ["campaigns", "users", "stats"])
    return all("heartbeat_at" in s for s in status.values())


async def test_a_batch_that_cannot_reach_redis_is_not_committed_and_is_consumed_again(
    settings: Settings, redis: Redis, producer: EventProducer
) -> None:
    campaigns = [new_campaign("owner-1") for _ in range(10)]
    unreachable = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    group = f"{settings.topic_prefix}projector.campaigns"
    async with Projectors(settings) as projectors:
        for consumer in projectors.consumers.values():
            consumer.redis = unreachable  # Redis goes away
        attempts: list[int] = []
        campaigns_consumer = projectors.consumers["campaigns"]
        handle = campaigns_consumer.handle

        async def counted(records: list) -> object:
            attempts.append(len(records))
            return await handle(records)

        campaigns_consumer.handle = counted  # type: ignore[method-assign]
        await producer.publish([c.events[0] for c in campaigns])
        await wait_until(lambda: _at_least(attempts, 2), 10, "a failed batch to come again")
        assert await committed_offsets(settings, group) == 0
        assert await summed_hashes(redis, stats_counts(settings)) == {}
        for consumer in projectors.consumers.values():
            consumer.redis = redis  # and comes back
        await wait_until(
            lambda: _all_applied(redis, settings, [c.events[0] for c in campaigns]), 30, "recovery"
        )
        await wait_until(lambda: _committed(settings, group, 10), 10, "the commit")
    counts = await summed_hashes(redis, stats_counts(settings))
    assert counts["campaigns.total"] == 10  # applied once, though delivered several times
    await unreachable.aclose()


def stats_counts(settings: Settings) -> list[str]:
    """Every bucket's counts hash of the first stats generation."""
    keys = StatsKeys(generation_base(settings.redis_prefix, "stats.1"), settings.read_model_buckets)
    return [keys.counts(bucket) for bucket in range(keys.buckets)]


async def _at_least(attempts: list[int], count: int) -> bool:
    return len(attempts) >= count


async def committed_offsets(settings: Settings, group: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(max(0, o.offset) for o in offsets.values())


async def _committed(settings: Settings, group: str, count: int) -> bool:
    return await committed_offsets(settings, group) >= count
