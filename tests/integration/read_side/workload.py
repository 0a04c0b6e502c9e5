"""Event streams for read-side tests, built with the real envelope constructor."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from events import EventEnvelope, new_envelope
from tests.support.factories import campaign_payload

START = datetime(2027, 3, 1, tzinfo=UTC)


@dataclass
class Aggregate:
    """One aggregate's stream: each `then` adds the next version."""

    kind: str
    aggregate_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    events: list[EventEnvelope] = field(default_factory=list)
    clock: datetime | None = None

    @property
    def version(self) -> int:
        return len(self.events)

    def then(
        self, event_type: str, payload: dict[str, Any] | None = None, actor: str | None = None
    ) -> EventEnvelope:
        occurred = None
        if self.clock is not None:
            self.clock += timedelta(milliseconds=1)
            occurred = self.clock
        envelope = new_envelope(
            event_type=event_type,
            aggregate_id=self.aggregate_id,
            aggregate_version=self.version + 1,
            payload=payload or {},
            correlation_id=uuid.uuid4().hex,
            actor_id=actor,
            occurred_at=occurred,
        )
        self.events.append(envelope)
        return envelope


def new_campaign(owner_id: str, clock: datetime | None = None, **overrides: Any) -> Aggregate:
    campaign = Aggregate("campaign", clock=clock)
    campaign.then("CampaignCreated", campaign_payload(owner_id, **overrides), actor=owner_id)
    return campaign


def new_user(email: str | None = None, roles: list[str] | None = None) -> Aggregate:
    user = Aggregate("user")
    user.then(
        "UserRegistered",
        {
            "email": email or f"{user.aggregate_id}@example.com",
            "name": "Test User",
            "roles": roles or ["user"],
        },
    )
    return user


def mixed_workload(campaigns: int, owners: list[str], start: datetime | None = None) -> list[Aggregate]:
    """Campaigns through every lifecycle step, with updates and deletions, deterministic.

    With `start`, campaign n's events occur from `start` + n seconds (distinct created_at);
    without, they occur now.
    """
    channels = ["email", "sms", "push", "social"]
    result = []
    for n in range(campaigns):
        owner = owners[n % len(owners)]
        campaign = new_campaign(
            owner,
            clock=start + timedelta(seconds=n) if start else None,
            name=f"Campaign {n:03d}",
            channel=channels[n % 4],
            budget={"amount": f"{100 + n}.25", "currency": "EUR" if n % 3 else "USD"},
            tags=[f"t{n % 5}", "all"],
        )
        if n % 2 == 0:
            campaign.then("CampaignUpdated", {"name": f"Campaign {n:03d} v2", "tags": [f"t{n % 5}"]})
        if n % 3 != 2:
            campaign.then("CampaignActivated")
        if n % 3 == 1:
            campaign.then("CampaignPaused")
        if n % 5 == 4:
            campaign.then("CampaignDeleted")
        result.append(campaign)
    return result


def interleave(aggregates: list[Aggregate]) -> list[EventEnvelope]:
    """All events, round-robin over aggregates (each aggregate's own order kept)."""
    streams = [list(a.events) for a in aggregates]
    out: list[EventEnvelope] = []
    while any(streams):
        for stream in streams:
            if stream:
                out.append(stream.pop(0))
    return out
