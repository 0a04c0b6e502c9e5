"""The contract every part shares: envelope, event types, topics, serialisation, upcasting."""

from events.envelope import EventEnvelope, new_envelope
from events.serialization import (
    InvalidEvent,
    UnknownEventType,
    decode_event,
    encode_event,
    from_log_document,
    to_log_document,
)
from events.topics import Topics

__all__ = [
    "EventEnvelope",
    "InvalidEvent",
    "Topics",
    "UnknownEventType",
    "decode_event",
    "encode_event",
    "from_log_document",
    "new_envelope",
    "to_log_document",
]
