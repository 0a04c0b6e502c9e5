"""The event contract: round trips, upcasting, and rejection of malformed events."""

from __future__ import annotations

import uuid

import orjson
import pytest

from events import (
    InvalidEvent,
    Topics,
    UnknownEventType,
    decode_event,
    encode_event,
    from_log_document,
    new_envelope,
    to_log_document,
)
from events.asyncapi import asyncapi_document
from events.types import EVENT_TYPES

CREATED = {
    "owner_id": "u-1",
    "name": "Black Friday",
    "description": "big sale",
    "channel": "email",
    "budget": {"amount": "1500.50", "currency": "EUR"},
    "starts_at": "2026-11-27T00:00:00Z",
    "ends_at": "2026-11-30T00:00:00Z",
    "tags": ["sale", "q4"],
}

SAMPLE_PAYLOADS = {
    "UserRegistered": {"email": "ana@example.com", "name": "Ana", "roles": ["user"]},
    "UserLoggedIn": {},
    "UserRolesChanged": {"roles": ["user", "admin"]},
    "UserPasswordChanged": {},
    "CampaignCreated": CREATED,
    "CampaignUpdated": {"name": "Cyber Monday"},
    "CampaignScheduled": {"starts_at": "2026-11-27T00:00:00Z", "ends_at": "2026-11-30T00:00:00Z"},
    "CampaignUnscheduled": {},
    "CampaignActivated": {},
    "CampaignPaused": {},
    "CampaignCompleted": {},
    "CampaignDeleted": {},
}


def envelope_of(event_type: str, version: int = 1, **payload_overrides: object):
    return new_envelope(
        event_type=event_type,
        aggregate_id="agg-1",
        aggregate_version=version,
        payload={**SAMPLE_PAYLOADS[event_type], **payload_overrides},
        correlation_id="corr-1",
        actor_id="u-1",
    )


def test_every_event_type_has_a_sample_and_round_trips_through_json() -> None:
    assert set(SAMPLE_PAYLOADS) == set(EVENT_TYPES)
    for event_type in EVENT_TYPES:
        envelope = envelope_of(event_type)
        assert decode_event(encode_event(envelope)) == envelope


def test_round_trip_through_the_mongodb_log_document() -> None:
    envelope = envelope_of("CampaignCreated")
    document = to_log_document(envelope)
    assert document["_id"] == str(envelope.event_id)
    assert "published" not in document  # the relay keeps a watermark, never marks an event
    assert from_log_document(document) == envelope


def test_the_log_only_fields_of_a_document_are_not_the_events() -> None:
    # What the command side and the relay keep beside an event: a quarantined event (too large
    # for Kafka) must still be read from the log by gap repair and replays.
    envelope = envelope_of("CampaignCreated")
    document = {
        **to_log_document(envelope),
        "recorded_at": "2026-12-07T06:00:00Z",
        "published": True,
        "published_at": "2026-12-07T06:00:01Z",
        "quarantine": {"reason": "too large for Kafka", "kind": "too_large", "at": "2026-12-07T06:00:01Z"},
    }
    assert from_log_document(document) == envelope


def test_envelope_carries_every_field_the_design_names() -> None:
    wire = orjson.loads(encode_event(envelope_of("CampaignActivated", version=3)))
    assert set(wire) == {
        "event_id",
        "event_type",
        "schema_version",
        "aggregate_type",
        "aggregate_id",
        "aggregate_version",
        "occurred_at",
        "correlation_id",
        "causation_id",
        "actor_id",
        "payload",
    }
    assert wire["aggregate_type"] == "campaign"
    assert wire["occurred_at"].endswith("Z")
    uuid.UUID(wire["event_id"])


def test_campaign_created_v1_is_upcast_to_money_budget_on_read() -> None:
    current = orjson.loads(encode_event(envelope_of("CampaignCreated")))
    v1_payload = {k: v for k, v in current["payload"].items() if k not in {"budget", "tags"}}
    v1_payload["budget"] = 1200.5
    old = {**current, "schema_version": 1, "payload": v1_payload}

    event = decode_event(orjson.dumps(old))

    assert event.schema_version == EVENT_TYPES["CampaignCreated"].schema_version == 2
    assert event.payload["budget"] == {"amount": "1200.50", "currency": "EUR"}
    assert event.payload["tags"] == []


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda e: e.update(event_type="CampaignExploded"), "unknown event_type"),
        (lambda e: e.pop("aggregate_id"), "aggregate_id"),
        (lambda e: e.update(aggregate_version=0), "aggregate_version"),
        (lambda e: e.update(event_id="not-a-uuid"), "event_id"),
        (lambda e: e.update(occurred_at="2026-01-01T00:00:00"), "occurred_at"),
        (lambda e: e.update(aggregate_type="user"), "belongs to campaign"),
        (lambda e: e["payload"].update(channel="fax"), "channel"),
        (lambda e: e["payload"].update(surprise=1), "surprise"),
        (lambda e: e["payload"]["budget"].update(currency="euro"), "currency"),
        (lambda e: e.update(schema_version=9), "newer than this code knows"),
        (lambda e: e.update(extra_field=True), "extra_field"),
    ],
)
def test_malformed_events_are_rejected_with_the_reason(mutate, reason: str) -> None:
    wire = orjson.loads(encode_event(envelope_of("CampaignCreated")))
    mutate(wire)
    with pytest.raises(InvalidEvent, match=reason):
        decode_event(orjson.dumps(wire))


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1, 2]", b'"text"'])
def test_bytes_that_are_not_an_event_object_are_rejected(raw: bytes) -> None:
    with pytest.raises(InvalidEvent):
        decode_event(raw)


def test_unknown_type_is_its_own_error() -> None:
    wire = orjson.loads(encode_event(envelope_of("CampaignPaused")))
    wire["event_type"] = "Nope"
    with pytest.raises(UnknownEventType):
        decode_event(orjson.dumps(wire))


def test_topic_names_live_in_one_place_and_honour_a_prefix() -> None:
    assert Topics().campaigns == "campaigns.events"
    assert Topics().users == "users.events"
    assert Topics.dlq("campaigns.events") == "campaigns.events.dlq"
    prefixed = Topics("t1.")
    assert prefixed.for_aggregate("campaign") == "t1.campaigns.events"
    assert sorted(prefixed.all()) == [
        "t1.campaigns.events",
        "t1.campaigns.events.dlq",
        "t1.users.events",
        "t1.users.events.dlq",
    ]
    with pytest.raises(ValueError):
        prefixed.for_aggregate("invoice")


def test_asyncapi_document_is_generated_with_every_topic_and_the_envelope_schema() -> None:
    document = asyncapi_document()
    assert document["asyncapi"].startswith("3.")
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == set(Topics().all())
    schemas = document["components"]["schemas"]
    envelope_schema = next(s for name, s in schemas.items() if "EventEnvelope" in name)
    assert {"event_id", "aggregate_version", "payload"} <= set(envelope_schema["properties"])
