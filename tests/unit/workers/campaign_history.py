"""A completed campaign's events — created, updated, activated, paused, activated, completed — for tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from events import EventEnvelope, new_envelope
from tests.support.factories import campaign_payload

T0 = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
OWNER = "user-owner-1"
ADMIN = "user-admin-1"

CREATED = campaign_payload(OWNER)

# (event type, payload, minutes after T0, actor)
STEPS: list[tuple[str, dict[str, object], int, str]] = [
    ("CampaignCreated", CREATED, 0, OWNER),
    ("CampaignUpdated", {"budget": {"amount": "3000.00", "currency": "EUR"}}, 5, OWNER),
    ("CampaignActivated", {}, 10, OWNER),
    ("CampaignPaused", {}, 70, ADMIN),  # active 60 min
    ("CampaignActivated", {}, 100, OWNER),  # paused 30 min
    ("CampaignCompleted", {}, 130, OWNER),  # active 30 min
]


def completed_campaign(campaign_id: str, owner_id: str = OWNER) -> list[EventEnvelope]:
    events = []
    for version, (event_type, payload, minutes, actor) in enumerate(STEPS, start=1):
        if event_type == "CampaignCreated":
            payload = {**payload, "owner_id": owner_id}
        events.append(
            new_envelope(
                event_type=event_type,
                aggregate_id=campaign_id,
                aggregate_version=version,
                payload=payload,
                correlation_id=f"corr-{campaign_id}",
                actor_id=owner_id if actor == OWNER else actor,
                occurred_at=T0 + timedelta(minutes=minutes),
            )
        )
    return events
