"""Adding an event version comes with its upcaster: every stored (type, version) folds to the current."""

from __future__ import annotations

from typing import Any

from events import decode_event
from events.types import EVENT_TYPES
from events.upcasting import registered_steps

# One payload as it was written at each old version (what the events log may still hold).
# A new schema version of a type needs its previous version's payload here, and its upcaster.
OLD_PAYLOADS: dict[tuple[str, int], dict[str, Any]] = {
    ("CampaignCreated", 1): {
        "owner_id": "u1",
        "name": "Spring",
        "description": "",
        "channel": "email",
        "budget": 1500,
        "starts_at": "2027-03-01T00:00:00+00:00",
        "ends_at": "2027-03-31T00:00:00+00:00",
        "status": "draft",
    },
    # v1 lifecycle events were empty; v2 may carry the scheduler's `timer`.
    ("CampaignActivated", 1): {},
    ("CampaignCompleted", 1): {},
}


def _every_old_version() -> set[tuple[str, int]]:
    return {(name, v) for name, spec in EVENT_TYPES.items() for v in range(1, spec.schema_version)}


def test_every_old_version_has_its_upcaster_and_nothing_else_has_one() -> None:
    assert registered_steps() == _every_old_version()


def test_every_old_version_has_a_sample_payload() -> None:
    assert set(OLD_PAYLOADS) == _every_old_version()


def test_every_stored_version_decodes_to_the_current_one() -> None:
    for (event_type, version), payload in OLD_PAYLOADS.items():
        spec = EVENT_TYPES[event_type]
        envelope = decode_event(
            {
                "event_id": "0b8f2c1e-7a52-4a5f-9d8e-3f6a1c2b4d5e",
                "event_type": event_type,
                "schema_version": version,
                "aggregate_type": spec.aggregate_type,
                "aggregate_id": "a1",
                "aggregate_version": 1,
                "occurred_at": "2026-01-01T00:00:00Z",
                "correlation_id": "c1",
                "payload": payload,
            }
        )
        assert envelope.schema_version == spec.schema_version
        # The upcast payload is a valid payload of the current model (decode_event checked it).
        assert spec.payload_model.model_validate(envelope.payload)
