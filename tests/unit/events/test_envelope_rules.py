"""The envelope's rules one by one: UTC and millisecond times, the limit of every field, the
upcaster's one-step-at-a-time rule, and the reasons a malformed event is refused with."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from events import (
    EventEnvelope,
    InvalidEvent,
    UnknownEventType,
    decode_event,
    new_envelope,
    serialization,
    upcasting,
)
from events.envelope import millisecond_utc, utc_now
from events.serialization import encode_event, envelope_to_document
from tests.support.factories import SAMPLE_PAYLOADS, envelope

PLUS_TWO = timezone(timedelta(hours=2))


def test_times_are_kept_in_utc_whatever_zone_they_come_in() -> None:
    event = envelope("CampaignActivated", occurred_at=datetime(2027, 1, 10, 14, 0, 0, 500, tzinfo=PLUS_TWO))
    assert event.occurred_at == datetime(2027, 1, 10, 12, 0, 0, 500, tzinfo=UTC)
    assert event.occurred_at.tzinfo is UTC
    assert envelope_to_document(event)["occurred_at"] == "2027-01-10T12:00:00.000500Z"


def test_a_time_without_a_zone_is_refused() -> None:
    with pytest.raises(ValidationError):
        envelope("CampaignActivated", occurred_at=datetime(2027, 1, 10, 12))


def test_millisecond_utc_converts_to_utc_and_drops_the_microseconds() -> None:
    value = datetime(2027, 1, 10, 14, 0, 0, 999_500, tzinfo=PLUS_TWO)
    assert millisecond_utc(value) == datetime(2027, 1, 10, 12, 0, 0, 999_000, tzinfo=UTC)
    assert millisecond_utc(value).tzinfo is UTC


def test_an_event_without_a_time_gets_the_current_utc_millisecond() -> None:
    before = millisecond_utc(datetime.now(UTC))
    event = envelope("CampaignActivated")
    now = utc_now()
    assert before <= event.occurred_at <= now
    assert event.occurred_at.microsecond % 1000 == 0 and now.tzinfo is UTC


def test_the_constructor_keeps_causation_and_actor() -> None:
    event = new_envelope(
        event_type="CampaignActivated",
        aggregate_id="c-1",
        aggregate_version=2,
        payload={},
        correlation_id="corr",
        causation_id="cause",
        actor_id="actor",
    )
    assert (event.causation_id, event.actor_id, event.correlation_id) == ("cause", "actor", "corr")


def valid_envelope_fields(**overrides: Any) -> dict[str, Any]:
    fields = envelope("CampaignActivated").model_dump(mode="json")
    fields.update(overrides)
    return fields


# (field, the largest value accepted, the smallest refused, and below the minimum if it has one)
FIELD_LIMITS: list[tuple[str, Any, Any]] = [
    ("event_type", "e" * 100, "e" * 101),
    ("aggregate_id", "a" * 100, "a" * 101),
    ("correlation_id", "c" * 200, "c" * 201),
    ("causation_id", "c" * 200, "c" * 201),
    ("actor_id", "a" * 100, "a" * 101),
]


@pytest.mark.parametrize(("field", "longest", "too_long"), FIELD_LIMITS)
def test_every_envelope_field_limit_holds_at_its_boundary(field: str, longest: Any, too_long: Any) -> None:
    EventEnvelope.model_validate(valid_envelope_fields(**{field: longest}))
    with pytest.raises(ValidationError):
        EventEnvelope.model_validate(valid_envelope_fields(**{field: too_long}))


@pytest.mark.parametrize(
    "overrides",
    [
        {"event_type": ""},
        {"aggregate_id": ""},
        {"correlation_id": ""},
        {"schema_version": 0},
        {"aggregate_version": 0},
        {"aggregate_type": "order"},
        {"unexpected": 1},
    ],
)
def test_empty_ids_versions_below_1_and_unknown_fields_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        EventEnvelope.model_validate(valid_envelope_fields(**overrides))


def test_versions_of_1_are_the_smallest_accepted() -> None:
    EventEnvelope.model_validate(valid_envelope_fields(schema_version=1, aggregate_version=1))


@pytest.fixture
def no_upcasters(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty registry for the test (the real ones are registered at import)."""
    monkeypatch.setattr(upcasting, "_UPCASTERS", {})


def _step(seen: int) -> upcasting.Upcaster:
    return lambda payload: {"steps": [*payload.get("steps", []), seen]}


def test_upcasters_run_one_version_step_at_a_time_in_order(no_upcasters: None) -> None:
    for version in (1, 2, 3):
        upcasting.upcaster("Thing", version)(_step(version))
    assert upcasting.registered_steps() == {("Thing", 1), ("Thing", 2), ("Thing", 3)}
    assert upcasting.upcast("Thing", 1, {}, 4) == {"steps": [1, 2, 3]}
    assert upcasting.upcast("Thing", 2, {}, 3) == {"steps": [2]}
    assert upcasting.upcast("Thing", 4, {"as": "is"}, 4) == {"as": "is"}


def test_a_missing_step_is_an_error_not_a_skip(no_upcasters: None) -> None:
    upcasting.upcaster("Thing", 1)(_step(1))
    upcasting.upcaster("Thing", 3)(_step(3))
    with pytest.raises(ValueError, match=r"^no upcaster for Thing v2$"):
        upcasting.upcast("Thing", 1, {}, 4)


def test_an_upcaster_is_registered_once_per_type_and_version(no_upcasters: None) -> None:
    upcasting.upcaster("Thing", 1)(_step(1))
    upcasting.upcaster("Other", 1)(_step(1))
    with pytest.raises(ValueError, match=r"^upcaster for Thing v1 registered twice$"):
        upcasting.upcaster("Thing", 1)(_step(1))


def test_an_event_newer_than_the_code_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"^Thing v3 is newer than this code knows \(v2\)$"):
        upcasting.upcast("Thing", 3, {}, 2)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"[1, 2]", "an event must be a JSON object"),
        (b"{nope", "not JSON: "),
    ],
)
def test_bytes_that_are_no_event_object_are_refused_with_the_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as excinfo:
        decode_event(raw)
    assert str(excinfo.value).startswith(reason)


def test_an_event_type_that_is_not_a_string_is_an_unknown_type() -> None:
    with pytest.raises(UnknownEventType, match=r"unknown event_type \['x'\]"):
        decode_event({"event_type": ["x"]})


def test_a_refused_payload_names_each_bad_field_by_its_dotted_path() -> None:
    document = envelope("CampaignCreated").model_dump(mode="json")
    document["payload"]["budget"]["amount"] = "-1"
    document["payload"]["channel"] = "fax"
    with pytest.raises(InvalidEvent) as excinfo:
        decode_event(document)
    channel, amount = str(excinfo.value).split("; ")
    assert channel.startswith("channel: Input should be")
    assert amount.startswith("budget.amount: String should match pattern")


def _general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serialization, "_current", lambda data, spec: None)


@pytest.mark.parametrize("event_type", sorted(SAMPLE_PAYLOADS))
def test_an_event_at_its_current_version_decodes_as_the_general_path_decodes_it(
    event_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = encode_event(envelope(event_type))
    fast = decode_event(raw)
    _general_path(monkeypatch)
    general = decode_event(raw)
    assert fast == general
    assert encode_event(fast) == encode_event(general)


def test_a_payload_the_model_completes_is_stored_completed_by_both_paths(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    document = envelope("CampaignUpdated", {"name": "renamed"}).model_dump(mode="json")
    fast = decode_event(document)
    _general_path(monkeypatch)
    assert fast.payload == decode_event(document).payload
    assert fast.payload["description"] is None  # absent fields arrive as None after validation


@pytest.mark.parametrize(
    "change",
    [
        {"aggregate_type": "user"},
        {"payload": {"name": ""}},
        {"correlation_id": ""},
    ],
)
def test_an_event_the_fast_path_cannot_take_gets_the_general_paths_answer(
    change: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    document = {**envelope("CampaignUpdated", {"name": "renamed"}).model_dump(mode="json"), **change}
    with pytest.raises(InvalidEvent) as fast:
        decode_event(document)
    _general_path(monkeypatch)
    with pytest.raises(InvalidEvent) as general:
        decode_event(document)
    assert str(fast.value) == str(general.value)
