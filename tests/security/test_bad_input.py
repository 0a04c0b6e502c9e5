"""Bad input: oversized and absurdly deep bodies on both APIs, poison records injected into Kafka."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from events import Topics, encode_event, new_envelope
from tests.security.accounts import CAMPAIGN, sign_up, sign_up_admin
from tests.security.conftest import System
from tests.support import loopback

pytestmark = pytest.mark.security

PROBLEM_JSON = "application/problem+json"


def both_apis(system: System) -> list[tuple[str, str]]:
    return [(system.command_url, "/campaigns"), (system.query_url, "/campaigns")]


async def test_oversized_bodies_get_413_whether_declared_or_streamed(system: System) -> None:
    limit = system.settings.max_body_bytes
    big = orjson.dumps({**CAMPAIGN, "description": "x" * (limit + 10)})
    for base, path in both_apis(system):
        async with loopback.client(base_url=base, timeout=20) as client:
            declared = await client.post(path, content=big, headers={"content-type": "application/json"})

            async def chunks() -> AsyncIterator[bytes]:
                for start in range(0, len(big), 8192):
                    yield big[start : start + 8192]

            streamed = await client.post(path, content=chunks(), headers={"content-type": "application/json"})
            for response in (declared, streamed):
                assert response.status_code == 413, (base, response.status_code, response.text[:200])
                assert response.headers["content-type"].startswith(PROBLEM_JSON)
                assert response.json()["errors"][0]["field"] == "body"
    assert "transfer-encoding" in {k.lower() for k in streamed.request.headers}


@pytest.mark.parametrize("depth", [33, 5_000, 30_000])
async def test_absurdly_deep_json_is_refused_without_a_server_error(system: System, depth: int) -> None:
    bodies = {
        "arrays": b"[" * depth + b"]" * depth,
        "objects": b'{"a":' * depth + b"1" + b"}" * depth,
        "unclosed": b"[" * depth,
    }
    async with loopback.client(base_url=system.command_url, timeout=20) as commands:
        user = await sign_up(commands)
    for base, path in both_apis(system):
        async with loopback.client(base_url=base, timeout=20) as client:
            for name, body in bodies.items():
                if len(body) > system.settings.max_body_bytes:
                    continue
                response = await client.post(
                    path, content=body, headers={**user.auth, "content-type": "application/json"}
                )
                assert response.status_code == 422, (base, name, depth, response.status_code)
                assert response.headers["content-type"].startswith(PROBLEM_JSON)
    # The APIs are still fine.
    async with loopback.client(base_url=system.command_url, timeout=20) as commands:
        assert (await commands.post("/campaigns", json=CAMPAIGN, headers=user.auth)).status_code == 201


def _valid_campaign_event(campaign_id: str) -> bytes:
    envelope = new_envelope(
        event_type="CampaignCreated",
        aggregate_id=campaign_id,
        aggregate_version=1,
        payload={
            "owner_id": "someone",
            "name": "After the poison",
            "channel": "sms",
            "budget": {"amount": "10.00", "currency": "EUR"},
            "starts_at": "2027-03-01T00:00:00Z",
            "ends_at": "2027-03-31T00:00:00Z",
        },
        correlation_id="after-poison",
    )
    return encode_event(envelope)


def poison_records(campaign_id: str) -> dict[str, bytes]:
    valid = orjson.loads(_valid_campaign_event(str(uuid.uuid4())))
    user_event = encode_event(
        new_envelope(
            event_type="UserRegistered",
            aggregate_id=str(uuid.uuid4()),
            aggregate_version=1,
            payload={"email": "x@example.com", "name": "X", "roles": ["user"]},
            correlation_id="wrong-topic",
        )
    )
    return {
        "not JSON": b"\x00\xffthis is not json{",
        "empty": b"",
        "a JSON array": b"[1, 2, 3]",
        "unknown event type": orjson.dumps({**valid, "event_type": "CampaignExploded"}),
        "invalid payload": orjson.dumps({**valid, "payload": {"name": 7}}),
        "missing envelope fields": orjson.dumps({"event_type": "CampaignCreated", "payload": {}}),
        "a user event on the campaigns topic": user_event,
        # Well under Kafka's 1 MB record limit, far over every field's maximum.
        "oversized": orjson.dumps({**valid, "payload": {**valid["payload"], "description": "x" * 900_000}}),
    }


async def test_malformed_unknown_and_oversized_events_go_to_the_dead_letter_topic(system: System) -> None:
    settings = system.settings
    topics = Topics(settings.topic_prefix)
    after = str(uuid.uuid4())
    poison = poison_records(after)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", max_request_size=2_000_000
    )
    await producer.start()
    try:
        for name, value in poison.items():
            await producer.send_and_wait(
                topics.campaigns, value=value, key=after.encode(), headers=[("poison", name.encode())]
            )
        # Same key, same partition: this one comes after every poison record.
        await producer.send_and_wait(topics.campaigns, value=_valid_campaign_event(after), key=after.encode())
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        Topics.dlq(topics.campaigns),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        isolation_level="read_committed",
        fetch_max_bytes=10_000_000,
        max_partition_fetch_bytes=10_000_000,
    )
    await consumer.start()
    letters: dict[str, set[str]] = {}
    try:
        deadline = time.monotonic() + 60
        # Both projections reading campaigns.events (campaigns, stats) dead-letter each record.
        while sum(len(g) for g in letters.values()) < 2 * len(poison) and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                for message in messages:
                    headers = {k: v.decode() for k, v in message.headers}
                    assert headers["dlq_reason"], headers
                    assert headers["dlq_original_topic"] == topics.campaigns
                    assert message.value == poison[headers["poison"]]
                    letters.setdefault(headers["poison"], set()).add(headers["dlq_consumer_group"])
    finally:
        await consumer.stop()
    assert set(letters) == set(poison), f"not dead-lettered: {set(poison) - set(letters)}"
    assert all(len(groups) == 2 for groups in letters.values()), {k: sorted(v) for k, v in letters.items()}

    # The projectors kept going: the valid event after the poison is in the read model.
    async with loopback.client(base_url=system.command_url, timeout=10) as commands:
        admin = await sign_up_admin(commands, settings)
    async with loopback.client(base_url=system.query_url, timeout=10) as queries:
        read = await queries.get(f"/campaigns/{after}?min_version=1", headers=admin.auth)
    assert read.status_code == 200, read.text
    assert read.json()["name"] == "After the poison"
