"""Shared test data: request bodies, domain fields and event envelopes, each with overrides.

Every test that needs "a valid campaign" starts from the same one and overrides only what it
is about, so a change to the contract is made here once.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from command_api.domain.campaign import Campaign, CampaignDetails, DueTimer
from events import EventEnvelope, new_envelope

PASSWORD = "correct horse battery 9"
STARTS_AT = datetime(2099, 3, 1, tzinfo=UTC)
ENDS_AT = datetime(2099, 3, 31, tzinfo=UTC)


def campaign_body(**overrides: Any) -> dict[str, Any]:
    """The JSON body of POST /campaigns; each keyword replaces one top-level field."""
    body: dict[str, Any] = {
        "name": "Spring launch",
        "description": "first campaign",
        "channel": "email",
        "budget": {"amount": "2500.00", "currency": "EUR"},
        "starts_at": "2099-03-01T00:00:00Z",
        "ends_at": "2099-03-31T00:00:00Z",
        "tags": ["launch"],
    }
    body.update(overrides)
    return body


def campaign_payload(owner_id: str, **overrides: Any) -> dict[str, Any]:
    """A CampaignCreated payload: the request body plus its owner."""
    return {"owner_id": owner_id, **campaign_body(**overrides)}


def campaign_fields(**overrides: Any) -> dict[str, Any]:
    """The keyword arguments of the command domain's CampaignDetails.parse."""
    values: dict[str, Any] = {
        "name": "Spring launch",
        "description": "first campaign",
        "channel": "email",
        "budget_amount": "2500.00",
        "budget_currency": "EUR",
        "starts_at": STARTS_AT,
        "ends_at": ENDS_AT,
        "tags": ["launch"],
    }
    values.update(overrides)
    return values


def scheduled_campaign(
    campaign_id: str, owner_id: str, *, name: str, starts_at: datetime, ends_at: datetime, now: datetime
) -> tuple[Campaign, DueTimer]:
    """A scheduled campaign (version 2) and its activation timer, as the schedule command leaves
    them (its events collected): what the scheduler's tests and benches write straight in."""
    details = CampaignDetails.parse(
        name=name,
        description="",
        channel="push",
        budget_amount="1.00",
        budget_currency="EUR",
        starts_at=starts_at,
        ends_at=ends_at,
        tags=[],
    )
    campaign = Campaign.create(campaign_id=campaign_id, owner_id=owner_id, details=details, now=now)
    campaign.schedule(now)
    timer = campaign.due_timer()
    assert timer is not None
    campaign.collect_events()
    return campaign, timer


def new_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@example.com"


def register_body(**overrides: Any) -> dict[str, Any]:
    """The JSON body of POST /auth/register, with a fresh e-mail address each call."""
    body: dict[str, Any] = {"email": new_email(), "password": PASSWORD, "name": "Ana"}
    body.update(overrides)
    return body


SAMPLE_PAYLOADS: dict[str, dict[str, Any]] = {
    "UserRegistered": {"email": "ana@example.com", "name": "Ana", "roles": ["user"]},
    "UserLoggedIn": {},
    "UserRolesChanged": {"roles": ["user", "admin"]},
    "UserPasswordChanged": {},
    "CampaignCreated": campaign_payload("u-1"),
    "CampaignUpdated": {"name": "Renamed"},
    "CampaignActivated": {},
    "CampaignPaused": {},
    "CampaignCompleted": {},
    "CampaignDeleted": {},
}


def envelope(
    event_type: str,
    payload: dict[str, Any] | None = None,
    *,
    aggregate_id: str = "agg-1",
    version: int = 1,
    occurred_at: datetime | None = None,
    correlation_id: str = "corr-1",
    actor_id: str | None = "u-1",
) -> EventEnvelope:
    """An event built by the real constructor; `payload` defaults to a valid sample of its type."""
    return new_envelope(
        event_type=event_type,
        aggregate_id=aggregate_id,
        aggregate_version=version,
        payload=SAMPLE_PAYLOADS[event_type] if payload is None else payload,
        correlation_id=correlation_id,
        actor_id=actor_id,
        occurred_at=occurred_at,
    )
