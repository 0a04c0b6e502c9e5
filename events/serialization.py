"""JSON on the wire: encoding, and decoding that validates, upcasts and names what is wrong."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from events.envelope import EventEnvelope
from events.types import EVENT_TYPES, EventTypeSpec
from events.upcasting import upcast


class InvalidEvent(ValueError):
    """The bytes are not a well-formed event of a known type (goes to the dead-letter topic)."""


class UnknownEventType(InvalidEvent):
    pass


def encode_event(envelope: EventEnvelope) -> bytes:
    return orjson.dumps(envelope.model_dump(mode="json"))


def envelope_to_document(envelope: EventEnvelope) -> dict[str, Any]:
    """The JSON-ready dict of an envelope (for the log and for read models)."""
    return envelope.model_dump(mode="json")


def decode_event(raw: bytes | str | dict[str, Any]) -> EventEnvelope:
    """Parse, check and upcast one event to the current schema version of its type."""
    try:
        data = raw if isinstance(raw, dict) else orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidEvent("an event must be a JSON object")
    event_type = data.get("event_type")
    spec = EVENT_TYPES.get(event_type) if isinstance(event_type, str) else None
    if spec is None:
        raise UnknownEventType(f"unknown event_type {event_type!r}")
    current = _current(data, spec)
    if current is not None:
        return current
    try:
        envelope = EventEnvelope.model_validate(data)
        if envelope.aggregate_type != spec.aggregate_type:
            raise InvalidEvent(
                f"{event_type} belongs to {spec.aggregate_type}, not {envelope.aggregate_type}"
            )
        payload = upcast(spec.name, envelope.schema_version, dict(envelope.payload), spec.schema_version)
        checked = spec.payload_model.model_validate(payload).model_dump(mode="json")
    except ValidationError as exc:
        raise InvalidEvent(_describe(exc)) from exc
    except ValueError as exc:
        if isinstance(exc, InvalidEvent):
            raise
        raise InvalidEvent(str(exc)) from exc
    return envelope.model_copy(update={"payload": checked, "schema_version": spec.schema_version})


def _current(data: dict[str, Any], spec: EventTypeSpec) -> EventEnvelope | None:
    """The common case, validated in one pass: an event already at its type's current schema
    version. Its payload is checked first, then the envelope is validated around the checked
    payload, which spares the copy the general path makes (a fifth of a decode). Anything else
    (an older version to upcast, or any error, so the message is the general path's): None."""
    payload = data.get("payload")
    version = data.get("schema_version")
    if type(version) is not int or version != spec.schema_version or not isinstance(payload, dict):
        return None
    try:
        checked = spec.payload_model.model_validate(payload).model_dump(mode="json")
        envelope = EventEnvelope.model_validate({**data, "payload": checked})
    except ValueError:  # ValidationError among them
        return None
    return envelope if envelope.aggregate_type == spec.aggregate_type else None


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


# The events log in MongoDB keeps each envelope as its JSON form (so a fold of the log and a
# fold of the Kafka topic see identical values), with `_id` = event_id and `recorded_at` (the
# command side's). `published` and `published_at` are the marks releases before the relay's
# watermark wrote on each event (events/log.py): older logs still carry them. `quarantine` is the
# relay's mark on an event Kafka could never take (outbox_relay.py): the event is still one of
# the log's, read by gap repair and replays like any other.
LOG_ONLY_FIELDS = frozenset({"_id", "published", "recorded_at", "published_at", "quarantine"})


def to_log_document(envelope: EventEnvelope) -> dict[str, Any]:
    document = envelope.model_dump(mode="json")
    document["_id"] = document["event_id"]
    return document


def from_log_document(document: dict[str, Any]) -> EventEnvelope:
    return decode_event({k: v for k, v in document.items() if k not in LOG_ONLY_FIELDS})
