"""The AsyncAPI 3.0.0 document of the domain events, generated from the declared table.

Built from `events.catalogue` (who sends, which groups receive, the dead-letter topics) and the
pydantic models of `events.types` (one typed message per event type at its current schema
version), never from a broker: the query API serves exactly what the contract tests check.
Schemas are the models' JSON Schemas with their definitions hoisted into `components.schemas`, so
every `$ref` resolves inside the document (the official parser and `jsonschema` both follow them).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from events import dead_letters
from events.catalogue import AGGREGATES, CONSUMERS, PRODUCERS, AggregateType, consumers_of, event_types_of
from events.envelope import EventEnvelope
from events.topics import Topics
from events.types import EVENT_TYPES

ASYNCAPI_VERSION = "3.0.0"
DOCUMENT_VERSION = "1.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
SCHEMAS = "#/components/schemas/"
# The relay's Kafka headers (command_api.adapters.kafka_publisher): copies of envelope fields, so
# a consumer can route or trace a record without parsing its value.
ENVELOPE_HEADERS = ("event_type", "event_id", "correlation_id", "aggregate_version")

Document = dict[str, Any]


def asyncapi_document(topics: Topics | None = None) -> Document:
    """The whole document; `topics` carries a deployment's prefix (topic and group names)."""
    topics = topics or Topics()
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}

    _add_model(schemas, EventEnvelope)
    schemas["EventHeaders"] = _headers_schema(None)
    schemas["DeadLetterHeaders"] = _dead_letter_headers_schema()
    for spec in EVENT_TYPES.values():
        _add_model(schemas, spec.payload_model)
        schemas[_event_schema_name(spec.name)] = _event_schema(spec.name)
        messages[_message_name(spec.name)] = _event_message(spec.name)
    for aggregate in AGGREGATES:
        messages[_dead_letter_message_name(aggregate)] = _dead_letter_message(aggregate, topics)

    for aggregate in AGGREGATES:
        topic = topics.for_aggregate(aggregate)
        channel_id = _channel_id(aggregate)
        dlq_id = _dlq_channel_id(aggregate)
        names = event_types_of(aggregate)
        channels[channel_id] = {
            "address": topic,
            "title": topic,
            "description": (
                f"Every event of the {aggregate} aggregate, keyed by aggregate id, in aggregate_version "
                f"order per key. Types: {', '.join(names)}."
            ),
            "messages": {
                _message_name(n): {"$ref": f"#/components/messages/{_message_name(n)}"} for n in names
            },
            "bindings": {"kafka": {"topic": topic, "bindingVersion": KAFKA_BINDING_VERSION}},
        }
        dlq_message = _dead_letter_message_name(aggregate)
        channels[dlq_id] = {
            "address": Topics.dlq(topic),
            "title": Topics.dlq(topic),
            "description": (
                f"Records of {topic} a consumer group could not handle: each is the original record "
                "(value, key and headers unchanged, the correlation id included) plus dlq_* headers."
            ),
            "messages": {dlq_message: {"$ref": f"#/components/messages/{dlq_message}"}},
            "bindings": {"kafka": {"topic": Topics.dlq(topic), "bindingVersion": KAFKA_BINDING_VERSION}},
        }

    for producer in PRODUCERS:
        for aggregate in producer.aggregates:
            channel_id = _channel_id(aggregate)
            operations[f"{producer.name}.send.{channel_id}"] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{channel_id}"},
                "title": f"{producer.name} sends {topics.for_aggregate(aggregate)}",
                "description": producer.description,
                "messages": [
                    {"$ref": f"#/channels/{channel_id}/messages/{_message_name(n)}"}
                    for n in event_types_of(aggregate)
                ],
            }

    for consumer in CONSUMERS:
        group = consumer.group_id(topics.prefix)
        for aggregate in consumer.aggregates:
            channel_id = _channel_id(aggregate)
            acts = (
                f" Acts on {', '.join(consumer.acts_on)}."
                if consumer.acts_on is not None
                else " Applies every type."
            )
            operations[f"{consumer.group}.receive.{channel_id}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{channel_id}"},
                "title": f"{consumer.kind} {consumer.name} receives {topics.for_aggregate(aggregate)}",
                "description": f"{consumer.description} Consumer group {group}.{acts}",
                "bindings": {
                    "kafka": {
                        "groupId": {"type": "string", "enum": [group]},
                        "bindingVersion": KAFKA_BINDING_VERSION,
                    }
                },
            }
            dlq_id = _dlq_channel_id(aggregate)
            dlq_topic = Topics.dlq(topics.for_aggregate(aggregate))
            operations[f"{consumer.group}.deadLetter.{channel_id}"] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{dlq_id}"},
                "title": f"{consumer.kind} {consumer.name} dead-letters to {dlq_topic}",
                "description": (
                    f"A record group {group} cannot handle (malformed, unknown or impossible; never "
                    "because a server was down) is copied here with the reason, and the group moves on."
                ),
                "messages": [
                    {"$ref": f"#/channels/{dlq_id}/messages/{_dead_letter_message_name(aggregate)}"}
                ],
            }

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Campaigns CQRS events",
            "version": DOCUMENT_VERSION,
            "description": (
                "Domain events of users and campaigns on Kafka: who sends them, which consumer groups "
                "read them, and the dead-letter topics. Values are the JSON event envelope; headers "
                "repeat event_type, event_id, correlation_id and aggregate_version."
            ),
            "contact": {"name": "Campaigns CQRS maintainers (see README.md, section Contracts)"},
            "tags": [{"name": "events"}],
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka",
                "description": "The local stack (`make up`); elsewhere, CAMPAIGNS_KAFKA_BOOTSTRAP.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "messages": messages,
            "correlationIds": {
                "correlationId": {
                    "description": "The X-Correlation-ID of the HTTP request that caused the event.",
                    "location": "$message.header#/correlation_id",
                }
            },
        },
    }


def message_name(event_type: str) -> str:
    """The message (under components.messages and each channel) of an event type's current version."""
    return _message_name(event_type)


def _message_name(event_type: str) -> str:
    return f"{event_type}.v{EVENT_TYPES[event_type].schema_version}"


def _event_schema_name(event_type: str) -> str:
    return f"{event_type}Event"


def _dead_letter_message_name(aggregate: AggregateType) -> str:
    return f"{aggregate}DeadLetter"


def _channel_id(aggregate: AggregateType) -> str:
    return f"{aggregate}s.events"


def _dlq_channel_id(aggregate: AggregateType) -> str:
    return f"{aggregate}s.events.dlq"


def _add_model(schemas: dict[str, Any], model: type[BaseModel]) -> None:
    schema = model.model_json_schema(ref_template=SCHEMAS + "{model}")
    schemas.update(schema.pop("$defs", {}))
    schemas[model.__name__] = schema


def _event_schema(event_type: str) -> dict[str, Any]:
    """The envelope narrowed to one type at its current version, its payload that type's model."""
    spec = EVENT_TYPES[event_type]
    return {
        "title": _event_schema_name(event_type),
        "description": f"The envelope of a {event_type} event (schema_version {spec.schema_version}).",
        "allOf": [
            {"$ref": SCHEMAS + "EventEnvelope"},
            {
                "type": "object",
                "properties": {
                    "event_type": {"const": event_type},
                    "schema_version": {"const": spec.schema_version},
                    "aggregate_type": {"const": spec.aggregate_type},
                    "payload": {"$ref": SCHEMAS + spec.payload_model.__name__},
                },
            },
        ],
    }


def _event_message(event_type: str) -> dict[str, Any]:
    spec = EVENT_TYPES[event_type]
    doc = (spec.payload_model.__doc__ or "").strip()
    return {
        "name": event_type,
        "title": f"{event_type} v{spec.schema_version}",
        "summary": f"A {spec.aggregate_type} event: {event_type}, schema_version {spec.schema_version}.",
        **({"description": doc} if doc else {}),
        "contentType": "application/json",
        "headers": _headers_schema(event_type),
        "payload": {"$ref": SCHEMAS + _event_schema_name(event_type)},
        "correlationId": {"$ref": "#/components/correlationIds/correlationId"},
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": "The aggregate id (UTF-8)."},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }


def _headers_schema(event_type: str | None) -> dict[str, Any]:
    """The relay's headers; with `event_type`, narrowed to that type."""
    return {
        "type": "object",
        "description": "Kafka headers (UTF-8 values), copies of the envelope's fields.",
        "required": list(ENVELOPE_HEADERS),
        "properties": {
            "event_type": (
                {"type": "string", "const": event_type}
                if event_type
                else {"type": "string", "enum": sorted(EVENT_TYPES)}
            ),
            "event_id": {"type": "string", "format": "uuid", "description": "The envelope's event_id."},
            "correlation_id": {
                "type": "string",
                "minLength": 1,
                "maxLength": 200,
                "description": "The envelope's correlation_id.",
            },
            "aggregate_version": {
                "type": "string",
                "pattern": "^[1-9][0-9]*$",
                "description": "The envelope's aggregate_version, in decimal.",
            },
        },
    }


def _dead_letter_headers_schema() -> dict[str, Any]:
    properties: dict[str, Any] = {
        name: {"type": "string", "description": description}
        for name, description in dead_letters.HEADER_DESCRIPTIONS.items()
    }
    properties[dead_letters.REASON]["maxLength"] = dead_letters.MAX_REASON_CHARS
    for decimal in (dead_letters.ATTEMPTS, dead_letters.ORIGINAL_PARTITION, dead_letters.ORIGINAL_OFFSET):
        properties[decimal]["pattern"] = "^[0-9]+$"
    for name in ENVELOPE_HEADERS:
        properties[name] = {
            "type": "string",
            "description": f"The original record's {name} header, unchanged (absent if it had none).",
        }
    return {
        "type": "object",
        "description": (
            "The original record's headers, unchanged (the correlation id too), plus the dlq_* "
            "headers every writer adds (events.dead_letters)."
        ),
        "required": list(dead_letters.HEADER_DESCRIPTIONS),
        "properties": properties,
    }


def _dead_letter_message(aggregate: AggregateType, topics: Topics) -> dict[str, Any]:
    topic = topics.for_aggregate(aggregate)
    groups = ", ".join(c.group_id(topics.prefix) for c in consumers_of(aggregate))
    return {
        "name": _dead_letter_message_name(aggregate),
        "title": f"Dead letter of {topic}",
        "summary": f"A record of {topic} that a consumer group ({groups}) gave up on.",
        "description": (
            "The value is the original record's, byte for byte: usually one of the topic's events, "
            "but a record dead-lettered as malformed may hold anything, so no schema is imposed. "
            "The key is the original key."
        ),
        "headers": {"$ref": SCHEMAS + "DeadLetterHeaders"},
        "payload": {"description": f"The original value read from {topic}, unchanged."},
        "correlationId": {"$ref": "#/components/correlationIds/correlationId"},
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": "The original record's key (the aggregate id)."},
                "bindingVersion": KAFKA_BINDING_VERSION,
            }
        },
    }
