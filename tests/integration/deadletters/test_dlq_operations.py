"""Dead letters operated on real Kafka and MongoDB: listed with their reason, re-driven once, audited."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from deadletters.bootstrap import DeadLetterOperations
from events import EventEnvelope, Topics, encode_event
from events.dead_letters import DeadLetterOrigin, dead_letter_headers
from projectors.entrypoints.projectors import Projectors
from readmodels.keyspace import CampaignKeys, generation_base
from service_runtime.settings import Settings
from tests.integration.read_side.conftest import EventProducer, headers_of, wait_until
from tests.integration.read_side.workload import new_campaign
from tests.support.services import settings_env
from tests.support.stack import REPO

POISON = b"{not json"


async def end_offsets(settings: Settings, topic: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.kafka_partitions)]
        consumer.assign(partitions)
        return await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()


async def ledger(settings: Settings, collection: str) -> list[dict[str, Any]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url)
    try:
        return await client[settings.mongo_db][collection].find().to_list(None)
    finally:
        await client.close()


async def dead_lettered_poison(settings: Settings, producer: EventProducer, dlq: DeadLetterOperations) -> str:
    """Produce a record that is not JSON to the campaigns topic; wait until both campaign groups
    (the campaigns and the stats projections) dead-lettered it. Its key is returned."""
    topics = Topics(settings.topic_prefix)
    await producer.publish_raw(topics.campaigns, POISON, key=b"poison-1")

    async def both_groups_gave_up() -> bool:
        (listing,) = await dlq.list(Topics.dlq(topics.campaigns))
        return listing.counts.total >= 2

    await wait_until(both_groups_gave_up, 30, "the poison record on the dead-letter topic")
    return "poison-1"


async def test_a_poison_record_is_listed_with_its_reason_and_a_dry_run_names_it_and_changes_nothing(
    settings: Settings, producer: EventProducer, projectors: Projectors, dlq: DeadLetterOperations
) -> None:
    topics = Topics(settings.topic_prefix)
    dlq_topic = Topics.dlq(topics.campaigns)
    await dead_lettered_poison(settings, producer, dlq)

    (listing,) = await dlq.list(dlq_topic)
    assert listing.counts.total == 2 and listing.counts.pending == 2
    groups = {r.summary.consumer_group for r in listing.records}
    assert groups == {
        f"{settings.topic_prefix}projector.campaigns",
        f"{settings.topic_prefix}projector.stats",
    }
    for record in listing.records:
        assert record.summary.origin.topic == topics.campaigns
        assert record.summary.aggregate_id == "poison-1"
        assert "json" in record.summary.reason.lower(), record.summary.reason
    # Both dead letters share one reason: it is counted once per record.
    assert sum(listing.counts.by_reason.values()) == 2
    assert list(listing.counts.by_reason.values()) == [2]

    ref = listing.records[0].summary.ref
    shown = await dlq.show(str(ref))
    assert shown is not None and shown.letter.value == POISON and shown.redrive is None

    before = await end_offsets(settings, topics.campaigns)
    report = await dlq.replay(dlq_topic, dry_run=True)
    (planned,) = report.plan.redrives  # once per original record, whatever the groups
    assert set(planned.refs) == {r.summary.ref for r in listing.records}
    assert report.redriven == 0 and report.audit_id is None
    assert await end_offsets(settings, topics.campaigns) == before
    assert await ledger(settings, "dlq_audit") == []
    assert await ledger(settings, "dlq_redriven") == []

    purged = await dlq.purge(dlq_topic, actor="test-operator", yes=True)
    assert purged.records == 2
    (after,) = await dlq.list(dlq_topic)
    assert after.counts.total == 0
    (audit,) = await ledger(settings, "dlq_audit")
    assert audit["action"] == "purge" and audit["actor"] == "test-operator" and audit["result"] == "ok"


async def dead_letter_written_on_a_timeout(
    settings: Settings, envelope: EventEnvelope, origin_offset: int
) -> None:
    """What a projector wrote before transient errors stopped being dead-lettered: a good event,
    dead-lettered because Redis timed out. Written through the dead-letter contract."""
    topics = Topics(settings.topic_prefix)
    headers = dead_letter_headers(
        [(name, value.decode()) for name, value in headers_of(envelope)],
        DeadLetterOrigin(topics.campaigns, 0, origin_offset, f"{settings.topic_prefix}projector.campaigns"),
        reason="TimeoutError: Redis did not answer within 5 s",
        error_type="transient",
        attempts=1,
    )
    kafka = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await kafka.start()
    try:
        await kafka.send_and_wait(
            Topics.dlq(topics.campaigns),
            value=encode_event(envelope),
            key=envelope.aggregate_id.encode(),
            headers=[(name, value.encode()) for name, value in headers.items()],
        )
    finally:
        await kafka.stop()


async def versions_on(settings: Settings, topic: str, key: bytes) -> list[int]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        found: list[int] = []
        batch = await consumer.getmany(timeout_ms=3000)
        for records in batch.values():
            for record in records:
                if record.key == key:
                    found.append(int(dict(record.headers)["aggregate_version"]))
        return found
    finally:
        await consumer.stop()


async def test_a_record_re_driven_after_the_fix_is_applied_audited_and_not_re_driven_again(
    settings: Settings, redis: Redis, projectors: Projectors, dlq: DeadLetterOperations
) -> None:
    topics = Topics(settings.topic_prefix)
    dlq_topic = Topics.dlq(topics.campaigns)
    campaign = new_campaign("owner-1")
    activated = campaign.then("CampaignActivated")
    # Dead-lettered in the wrong order: the replay puts them back in version order.
    await dead_letter_written_on_a_timeout(settings, activated, origin_offset=8)
    await dead_letter_written_on_a_timeout(settings, campaign.events[0], origin_offset=7)
    (listing,) = await dlq.list(dlq_topic, aggregate=campaign.aggregate_id)
    assert listing.counts.by_error_type == {"transient": 2}

    report = await dlq.replay(dlq_topic, aggregate=campaign.aggregate_id, actor="test-operator")

    assert report.redriven == 2 and report.audit_id is not None
    assert [r.aggregate_version for r in report.plan.redrives] == [1, 2]
    keys = CampaignKeys(generation_base(settings.redis_prefix, "campaigns.1"), settings.read_model_buckets)

    async def applied() -> bool:
        return await redis.hget(keys.campaign(campaign.aggregate_id), "v") == b"2"

    await wait_until(applied, 30, "the re-driven campaign in its read model")
    key = campaign.aggregate_id.encode()
    assert await versions_on(settings, topics.campaigns, key) == [1, 2]

    (audit,) = await ledger(settings, "dlq_audit")
    assert audit["action"] == "replay" and audit["actor"] == "test-operator"
    assert audit["topic"] == dlq_topic and audit["result"] == "ok" and audit["redriven"] == 2
    assert sorted(audit["refs"]) == sorted(str(r.ref) for r in report.plan.redrives)
    assert audit["finished_at"] >= audit["started_at"]
    redriven = {doc["_id"] for doc in await ledger(settings, "dlq_redriven")}
    assert redriven == {str(r.ref) for r in report.plan.redrives}

    again = await dlq.replay(dlq_topic, aggregate=campaign.aggregate_id, actor="test-operator")
    assert again.redriven == 0 and again.plan.redrives == [] and again.plan.already_redriven == 2
    assert await versions_on(settings, topics.campaigns, key) == [1, 2]
    assert len(await ledger(settings, "dlq_audit")) == 1
    (after,) = await dlq.list(dlq_topic, aggregate=campaign.aggregate_id)
    assert after.counts.pending == 0 and after.counts.redriven == 2


def campaigns_command(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed `campaigns` command beside this interpreter, on this test's settings."""
    command = Path(sys.executable).parent / "campaigns"
    return subprocess.run(
        [str(command), *args],
        cwd=REPO,
        env=settings_env(settings) | {"COLUMNS": "200"},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


async def test_the_campaigns_command_lists_a_poison_record_and_a_dry_run_names_it(
    settings: Settings, producer: EventProducer, projectors: Projectors, dlq: DeadLetterOperations
) -> None:
    dlq_topic = Topics.dlq(Topics(settings.topic_prefix).campaigns)
    await dead_lettered_poison(settings, producer, dlq)
    (listing,) = await dlq.list(dlq_topic)
    refs = [str(r.summary.ref) for r in listing.records]

    listed = await asyncio.to_thread(campaigns_command, settings, "dlq", "list", dlq_topic)
    assert listed.returncode == 0, listed.stderr
    for ref in refs:
        assert ref in listed.stdout
    assert "2 records, 2 pending" in listed.stdout

    dry = await asyncio.to_thread(campaigns_command, settings, "dlq", "replay", dlq_topic, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would re-drive {refs[0]}" in dry.stdout or f"would re-drive {refs[1]}" in dry.stdout
    assert "nothing changed" in dry.stdout
    assert await ledger(settings, "dlq_audit") == []

    bad = await asyncio.to_thread(campaigns_command, settings, "dlq", "show", "campaigns.events:0:1")
    assert bad.returncode == 2 and "not a dead-letter topic" in bad.stderr
