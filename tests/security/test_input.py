"""Input, tried against the running services: control characters in names are refused naming the
field, numeric query parameters are parsed strictly (422, never 500), and a welcome e-mail that
cannot be built is dead-lettered at once with its reason rather than retried."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from events import Topics, encode_event, new_envelope
from tests.security.accounts import CAMPAIGN, create_campaign, sign_up
from tests.security.conftest import System
from tests.support import loopback

pytestmark = pytest.mark.security

SERVICES = ["command-api", "query-api", "relay", "projectors", "workers"]
SETTINGS = {"worker_max_attempts": 5, "worker_backoff_seconds": 0.5}
CONTROL = [
    "Eve\r\nBcc: victim@example.com",
    "tab\there",
    "nul\x00",
    "bell\x07",
    "line\u2028sep",
    "rtl\u202eoverride",
]


def names_field(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, (response.status_code, response.text)
    assert field in [e["field"] for e in response.json()["errors"]], response.json()


async def test_control_characters_in_names_are_refused_naming_the_field(system: System) -> None:
    async with loopback.client(base_url=system.command_url, timeout=10) as commands:
        owner = await sign_up(commands)
        campaign_id = await create_campaign(commands, owner)
        for name in CONTROL:
            email = f"user-{uuid.uuid4().hex[:10]}@example.com"
            registered = await commands.post(
                "/auth/register", json={"email": email, "password": "pass phrase 8f3k2", "name": name}
            )
            names_field(registered, "name")
            created = await commands.post("/campaigns", json={**CAMPAIGN, "name": name}, headers=owner.auth)
            names_field(created, "name")
            edited = await commands.patch(
                f"/campaigns/{campaign_id}", json={"name": name}, headers={**owner.auth, "If-Match": '"1"'}
            )
            names_field(edited, "name")
        # Letters of any script are names, not controls.
        fine = await commands.post("/campaigns", json={**CAMPAIGN, "name": "Été 東京 🎉"}, headers=owner.auth)
        assert fine.status_code == 201, fine.text


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        ("/campaigns/{id}", "as_of_version", "²"),
        ("/campaigns/{id}", "min_version", "99999999999999999999"),
        ("/campaigns/{id}", "min_version", "٣"),
        ("/campaigns/{id}", "as_of_version", "1e3"),
        ("/campaigns/{id}", "as_of_version", " 1"),
        ("/campaigns", "limit", "²"),
        ("/campaigns", "limit", "99999999999999999999"),
        ("/campaigns/{id}/history", "limit", "²"),
    ],
)
async def test_numeric_query_parameters_are_parsed_strictly(
    system: System, path: str, field: str, value: str
) -> None:
    async with loopback.client(base_url=system.command_url, timeout=10) as commands:
        owner = await sign_up(commands)
        campaign_id = await create_campaign(commands, owner)
    async with loopback.client(base_url=system.query_url, timeout=10) as queries:
        response = await queries.get(path.format(id=campaign_id), params={field: value}, headers=owner.auth)
    assert response.status_code == 422, (response.status_code, response.text)
    assert field in response.text


async def test_a_welcome_email_that_cannot_be_built_is_dead_lettered_at_once_with_its_reason(
    system: System,
) -> None:
    # Names with line breaks are refused now, but events recorded before may hold one.
    settings = system.settings
    topics = Topics(settings.topic_prefix)
    user_id = str(uuid.uuid4())
    event = new_envelope(
        event_type="UserRegistered",
        aggregate_id=user_id,
        aggregate_version=1,
        payload={"email": "eve@example.com", "name": "Eve\r\nBcc: victim@example.com", "roles": ["user"]},
        correlation_id="old-event",
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topics.users, value=encode_event(event), key=user_id.encode())
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        Topics.dlq(topics.users),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    letter: dict[str, str] | None = None
    try:
        deadline = time.monotonic() + 60
        while letter is None and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                for message in messages:
                    if message.key == user_id.encode():
                        letter = {k: v.decode() for k, v in message.headers}
    finally:
        await consumer.stop()
    assert letter is not None, "the event was not dead-lettered"
    assert letter["dlq_attempts"] == "1", letter  # not retried
    assert "cannot be built" in letter["dlq_reason"], letter
