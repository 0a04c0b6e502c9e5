"""Every record real traffic puts on the topics matches the served AsyncAPI document (jsonschema).

Commands go through the running command API (every event type is produced), the relay publishes
them, and a plain Kafka consumer reads both topics from the beginning, as another team's consumer
would; each record's value and headers are validated against the message the query API's
`/asyncapi.json` declares for its event type and schema version.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from command_api.entrypoints.admin import grant_admin
from events import Topics
from events.types import EVENT_TYPES
from tests.contracts.records import record_errors
from tests.support import loopback
from tests.support.services import RunningServices

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery 9"
CAMPAIGN = {
    "name": "Contract",
    "channel": "sms",
    "budget": {"amount": "99.50", "currency": "USD"},
    "starts_at": "2027-03-01T00:00:00Z",
    "ends_at": "2027-03-31T00:00:00Z",
    "tags": ["c"],
}
READ_SECONDS = 60


async def _drive_every_event_type(services: RunningServices) -> int:
    """Commands that record each event type at least once; the number of events recorded."""
    async with loopback.client(base_url=services.command_url, timeout=10) as api:
        user = {"email": "records@example.com", "password": PASSWORD, "name": "Records"}
        assert (await api.post("/auth/register", json=user)).status_code == 201
        await grant_admin(services.settings, user["email"])
        login = await api.post("/auth/login", json={"email": user["email"], "password": PASSWORD})
        assert login.status_code == 200, login.text
        auth = {"Authorization": f"Bearer {login.json()['access_token']}", "X-Correlation-ID": "contract-run"}
        events = 3  # registered, roles changed, logged in
        for delete in (False, True):
            created = await api.post("/campaigns", json=CAMPAIGN, headers=auth)
            assert created.status_code == 201, created.text
            path = f"/campaigns/{created.json()['id']}"
            steps = [("PATCH", path, {"name": "Renamed", "tags": []}, {"If-Match": '"1"'})]
            if delete:
                steps += [("POST", f"{path}/{a}", None, {}) for a in ("schedule", "unschedule")]
                steps.append(("DELETE", path, None, {}))
            else:
                steps += [(m, f"{path}/{a}", None, {}) for m, a in (("POST", "activate"), ("POST", "pause"))]
                steps.append(("POST", f"{path}/complete", None, {}))
            for method, url, body, headers in steps:
                answer = await api.request(method, url, json=body, headers={**auth, **headers})
                assert answer.status_code in (200, 204), answer.text
            events += 1 + len(steps)
        # Last: it ends the token used above.
        new_password = {"current_password": PASSWORD, "new_password": "another pass phrase 8"}
        changed = await api.post("/auth/password", json=new_password, headers=auth)
        assert changed.status_code == 200, changed.text
        return events + 1


async def _read_topics(bootstrap: str, topics: list[str], partition_count: int, expected: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        # The test's topics were made with the settings' partition count (the fixture); the
        # consumer's own metadata may not know them yet, so nothing is read from it.
        partitions = [TopicPartition(t, p) for t in topics for p in range(partition_count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        deadline = time.monotonic() + READ_SECONDS
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
        # Anything beyond the expected count (a duplicate publish) is read and checked too.
        for part in (await consumer.getmany(timeout_ms=500)).values():
            records.extend(part)
        return records
    finally:
        await consumer.stop()


async def test_every_record_on_the_topics_matches_the_served_asyncapi_document(
    services: RunningServices,
) -> None:
    services.start(["command-api", "query-api", "relay", "projectors"])
    services.wait_ready()
    expected = await _drive_every_event_type(services)
    async with loopback.client(base_url=services.query_url, timeout=10) as query:
        document = (await query.get("/asyncapi.json")).json()

    topics = Topics(services.settings.topic_prefix)
    records = await asyncio.wait_for(
        _read_topics(
            services.settings.kafka_bootstrap,
            [topics.users, topics.campaigns],
            services.settings.kafka_partitions,
            expected,
        ),
        READ_SECONDS + 10,
    )
    assert len(records) >= expected, f"{len(records)} of {expected} events reached Kafka"
    seen = set()
    for record in records:
        errors = record_errors(document, record.topic, record.value, record.headers)
        assert errors == [], (record.topic, record.offset, errors)
        event = orjson.loads(record.value)
        headers = {k: v.decode() for k, v in record.headers}
        assert headers["event_id"] == event["event_id"]
        assert headers["correlation_id"] == event["correlation_id"]
        assert headers["aggregate_version"] == str(event["aggregate_version"])
        assert record.key.decode() == event["aggregate_id"]
        seen.add(event["event_type"])
    assert seen == set(EVENT_TYPES)
