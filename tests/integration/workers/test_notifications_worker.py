"""The notifications worker on real Kafka, Redis and SMTP sinks: one welcome e-mail per registration."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson

from events import EventEnvelope, Topics, dead_letters, encode_event, new_envelope
from readmodels.groups import NOTIFICATIONS_GROUP
from readmodels.groups import worker_group as group_id
from service_runtime.redis_client import connect_redis
from service_runtime.settings import Settings
from tests.integration.workers.harness import (
    committed_offsets,
    mails_to,
    metric,
    produce,
    read_topic,
    running_workers,
    smtp_sink,
    wait_for,
)
from tests.support.services import free_port
from tests.support.stack import REPO


def registration(name: str = "Ana Lima") -> EventEnvelope:
    user_id = uuid.uuid4().hex
    return new_envelope(
        event_type="UserRegistered",
        aggregate_id=user_id,
        aggregate_version=1,
        # Unique per test: the stack's sink is shared by everyone.
        payload={"email": f"welcome-{user_id}@example.com", "name": name, "roles": ["user"]},
        correlation_id=f"corr-{user_id}",
    )


async def test_registration_delivered_twice_sends_exactly_one_welcome_email(settings: Settings) -> None:
    event = registration()
    recipient = event.payload["email"]
    topic = Topics(settings.topic_prefix).users
    group = group_id(settings, NOTIFICATIONS_GROUP)
    shared_sink = REPO / settings.local_dir / "smtp"

    async with running_workers(settings):
        record = (event.aggregate_id.encode(), encode_event(event))
        await produce(settings, topic, [record, record])

        async def both_committed() -> bool:
            return await committed_offsets(settings, group, topic) == 2

        await wait_for(both_committed, what="both deliveries processed and committed")

        redis = connect_redis(settings)
        try:
            status = orjson.loads(await redis.get(f"{settings.redis_prefix}:status:worker:notifications"))
        finally:
            await redis.aclose()

    mails = mails_to(shared_sink, recipient)
    assert len(mails) == 1
    assert "Hello Ana Lima" in mails[0]
    assert f"To: Ana Lima <{recipient}>" in mails[0]
    assert f"From: {settings.smtp_sender}" in mails[0]
    assert status["state"] == "running"
    assert status["group_id"] == group


async def test_email_is_retried_while_smtp_is_down_and_sent_once_it_is_back(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    worker_settings = settings.model_copy(
        update={"smtp_port": port, "worker_backoff_seconds": 0.2, "worker_max_attempts": 8}
    )
    event = registration()
    recipient = event.payload["email"]
    topic = Topics(settings.topic_prefix).users
    maildir = tmp_path / "smtp"
    retries_before = metric("worker_retries_total", worker="notifications")

    async with running_workers(worker_settings):
        await produce(settings, topic, [(event.aggregate_id.encode(), encode_event(event))])

        async def retrying() -> bool:
            return metric("worker_retries_total", worker="notifications") >= retries_before + 2

        await wait_for(retrying, what="failed attempts against the absent SMTP server")
        assert mails_to(maildir, recipient) == []

        async with smtp_sink(port, maildir):

            async def delivered() -> bool:
                return await committed_offsets(
                    settings, group_id(settings, NOTIFICATIONS_GROUP), topic
                ) == 1 and bool(mails_to(maildir, recipient))

            await wait_for(delivered, what="the e-mail, once the SMTP server is back")

    assert len(mails_to(maildir, recipient)) == 1
    assert await read_topic(settings, Topics.dlq(topic), expected=1, within_seconds=2) == []


async def test_after_max_attempts_the_event_is_dead_lettered_with_the_reason_and_consumption_goes_on(
    settings: Settings,
) -> None:
    nothing_listens = free_port()
    worker_settings = settings.model_copy(
        update={"smtp_port": nothing_listens, "worker_backoff_seconds": 0.05, "worker_max_attempts": 3}
    )
    event = registration()
    topic = Topics(settings.topic_prefix).users
    dlq = Topics.dlq(topic)
    key = event.aggregate_id.encode()

    async with running_workers(worker_settings):
        # Same key, so the same partition: the second is consumed only after the first is settled.
        await produce(settings, topic, [(key, encode_event(event)), (key, b'{"event_type": "Nope"}')])
        records = await read_topic(settings, dlq, expected=2, within_seconds=30)

    assert len(records) == 2
    failed, invalid = records
    headers = {name: value.decode() for name, value in failed.headers}
    assert failed.value == encode_event(event)
    assert failed.key == key
    assert headers[dead_letters.ATTEMPTS] == "3"
    assert "gave up after 3 attempts" in headers[dead_letters.REASON]
    assert headers[dead_letters.ERROR_TYPE]  # the class of the last SMTP error
    assert headers[dead_letters.ORIGINAL_TOPIC] == topic
    assert headers[dead_letters.CONSUMER_GROUP] == group_id(settings, NOTIFICATIONS_GROUP)
    assert headers["source"] == "test"  # the original headers travel along
    invalid_headers = {name: value.decode() for name, value in invalid.headers}
    assert invalid_headers[dead_letters.REASON] == "invalid event: unknown event_type 'Nope'"
    assert invalid_headers[dead_letters.ATTEMPTS] == "0"
