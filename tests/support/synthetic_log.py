"""A large, valid events log written straight into MongoDB: a backlog for the relay and projectors.

Commands through the API are bounded by the write side's speed; fault tests that need thousands
of events in flight (to kill a process mid-batch) write them as the command side would: whole
aggregates, versions 1..n, in the `events` collection, unpublished.
"""

from __future__ import annotations

import uuid
from typing import Any

from pymongo import AsyncMongoClient

from events import EventEnvelope, new_envelope, to_log_document
from events.envelope import utc_now
from service_runtime.settings import Settings

CHANNELS = ("email", "sms", "push", "social")


def _stream(
    kind_events: list[tuple[str, dict[str, Any]]], aggregate_id: str, actor: str
) -> list[EventEnvelope]:
    return [
        new_envelope(
            event_type=event_type,
            aggregate_id=aggregate_id,
            aggregate_version=version,
            payload=payload,
            correlation_id=f"synthetic-{uuid.uuid4().hex}",
            actor_id=actor,
        )
        for version, (event_type, payload) in enumerate(kind_events, start=1)
    ]


def synthetic_events(users: int, campaigns: int) -> list[EventEnvelope]:
    """Users and campaigns through every lifecycle step (about 3.5 events a campaign)."""
    owners = [str(uuid.uuid4()) for _ in range(users)]
    envelopes: list[EventEnvelope] = []
    for owner in owners:
        registered = {"email": f"{owner[:12]}@example.com", "name": "Synthetic", "roles": ["user"]}
        envelopes += _stream([("UserRegistered", registered), ("UserLoggedIn", {})], owner, owner)
    for n in range(campaigns):
        owner = owners[n % users]
        steps: list[tuple[str, dict[str, Any]]] = [
            (
                "CampaignCreated",
                {
                    "owner_id": owner,
                    "name": f"Synthetic {n}",
                    "channel": CHANNELS[n % 4],
                    "budget": {"amount": f"{10 + n}.{n % 100:02d}", "currency": ("EUR", "USD")[n % 2]},
                    "starts_at": "2027-03-01T00:00:00Z",
                    "ends_at": "2027-03-31T00:00:00Z",
                    "tags": [f"t{n % 5}"],
                },
            )
        ]
        if n % 2 == 0:
            steps.append(("CampaignUpdated", {"name": f"Synthetic {n} v2", "channel": CHANNELS[(n + 1) % 4]}))
        if n % 3 != 2:
            steps.append(("CampaignActivated", {}))
        if n % 3 == 1:
            steps.append(("CampaignPaused", {}))
        if n % 5 == 4:
            steps.append(("CampaignDeleted", {}))
        envelopes += _stream(steps, str(uuid.uuid4()), owner)
    return envelopes


async def write_to_log(settings: Settings, envelopes: list[EventEnvelope]) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url)
    try:
        documents = []
        for envelope in envelopes:
            document = to_log_document(envelope)
            document["recorded_at"] = utc_now()
            documents.append(document)
        events = client[settings.mongo_db]["events"]
        for start in range(0, len(documents), 1000):
            await events.insert_many(documents[start : start + 1000], ordered=False)
    finally:
        await client.close()
