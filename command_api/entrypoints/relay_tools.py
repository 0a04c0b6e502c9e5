"""`campaigns relay quarantined` and `campaigns relay resend EVENT_ID`: the events the relay
quarantined, and sending one of them (or any event of the log) to Kafka again, by hand.

`quarantined` lists them, oldest quarantine first, through the partial index that holds only
them (`quarantined`): what each is (aggregate, version, type, size as the log holds it) and why.

`resend` is for an event the relay quarantined (Kafka could never take it: too large for the
topic, or not serialisable as its type), once its document in the events log is fixed. It is
sent as the relay sends events (same topic, key, headers and value, read from the log as it is
now), and once Kafka acknowledged it its quarantine is lifted, so the relay's status no longer
counts it. An event that still cannot be sent is left as it is, quarantine and all, with the
reason.

It needs no stop of the relay and no edit of its watermark: it publishes with a producer of its
own (no transactional id, so the running relay is not fenced), and the watermark stays where it
is. The event reaches the consumers after later versions of its aggregate: a projection that was
waiting for that version takes it; one that filled the gap from the log, or any consumer that
has it already, drops it as a duplicate. So sending an event that was never quarantined changes
nothing but the topic's length.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import orjson
from pymongo import ASCENDING
from pymongo.errors import PyMongoError

from command_api.adapters.kafka_publisher import (
    KafkaEventPublisher,
    Outgoing,
    PublishFailed,
    Unpublishable,
    kafka_producer_factory,
)
from command_api.adapters.mongo_schema import EVENTS, QUARANTINED_INDEX, Document, mongo_client
from events import Topics, encode_event, from_log_document
from events.serialization import LOG_ONLY_FIELDS
from service_runtime.settings import Settings

log = logging.getLogger(__name__)


class ResendRefused(ValueError):
    """The event still cannot be sent (its document is as the relay found it): nothing changed."""


class NotAnswered(ConnectionError):
    """A server did not answer (MongoDB, or Kafka did not acknowledge the event): try again. What
    was done and what not is said (a resent event may have gone out, its quarantine still on)."""


async def quarantined(settings: Settings, limit: int) -> tuple[list[dict[str, Any]], int]:
    """Up to `limit` quarantined events, oldest quarantine first, and how many there are in all."""
    mongo = mongo_client(settings)
    try:
        events = mongo[settings.mongo_db][EVENTS]
        wanted = {"quarantine": {"$exists": True}}
        try:
            total = await events.count_documents(wanted, hint=QUARANTINED_INDEX)
            # Each listed as it arrives, its document let go: a quarantined event may be larger
            # than Kafka's limit, and the listing holds one cursor batch of them at a time.
            cursor = events.find(
                wanted, hint=QUARANTINED_INDEX, sort=[("quarantine.at", ASCENDING)], limit=limit
            )
            listed = [_listed(document) async for document in cursor]
        except PyMongoError as exc:
            raise NotAnswered(f"MongoDB did not answer ({exc})") from exc
    finally:
        await mongo.close()
    return listed, total


def _listed(document: Document) -> dict[str, Any]:
    quarantine = document["quarantine"]
    event = {k: v for k, v in document.items() if k not in LOG_ONLY_FIELDS}
    return {
        "event_id": document["_id"],
        "event_type": document.get("event_type"),
        "aggregate_type": document.get("aggregate_type"),
        "aggregate_id": document.get("aggregate_id"),
        "aggregate_version": document.get("aggregate_version"),
        "recorded_at": _iso(document.get("recorded_at")),
        "bytes": len(orjson.dumps(event, default=str)),
        "kind": quarantine.get("kind"),
        "reason": quarantine.get("reason"),
        "quarantined_at": _iso(quarantine.get("at")),
    }


def _iso(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


async def resend(settings: Settings, event_id: str) -> str:
    """Publish the event `event_id` of the events log and lift its quarantine; what was done.

    LookupError: no such event. ResendRefused: it still cannot be sent. NotAnswered: MongoDB or
    Kafka did not answer this time."""
    mongo = mongo_client(settings)
    untransacted = settings.model_copy(update={"relay_transactions": False})
    topics = Topics(settings.topic_prefix)
    publisher = KafkaEventPublisher(kafka_producer_factory(untransacted), topics, transactional=False)
    try:
        events = mongo[settings.mongo_db][EVENTS]
        try:
            document = await events.find_one({"_id": event_id})
        except PyMongoError as exc:
            raise NotAnswered(f"MongoDB did not answer ({exc}); nothing changed") from exc
        if document is None:
            raise LookupError(f"no event {event_id} in the events log")
        try:
            envelope = from_log_document(document)
            outgoing = Outgoing(envelope, encode_event(envelope))
        except Exception as exc:  # as the relay judges it (outbox_relay.OutboxRelay._serialised)
            raise ResendRefused(
                f"event {event_id} still cannot be serialised: {exc}; fix its document first"
            ) from exc
        try:
            await publisher.publish([outgoing], _go_on)
        except Unpublishable as exc:
            raise ResendRefused(f"Kafka still refuses event {event_id}: {exc.reason}") from exc
        except PublishFailed as exc:
            raise NotAnswered(
                f"Kafka did not take event {event_id} ({exc.cause!r}); nothing changed"
            ) from exc
        topic = topics.for_aggregate(envelope.aggregate_type)
        quarantine = document.get("quarantine")
        if quarantine is not None:
            try:
                await events.update_one({"_id": event_id}, {"$unset": {"quarantine": ""}})
            except PyMongoError as exc:
                raise NotAnswered(
                    f"event {event_id} was sent to {topic}, but MongoDB did not lift its quarantine "
                    f"({exc}); run the command again (consumers drop the second copy)"
                ) from exc
        done = (
            f"event {event_id} ({envelope.event_type}, version {envelope.aggregate_version} of "
            f"{envelope.aggregate_type} {envelope.aggregate_id}) sent to {topic}"
        )
        if quarantine is not None:
            done += f"; its quarantine ({quarantine.get('kind', 'unknown')}) is lifted"
        log.warning("relay resend: %s", done)
        return done
    finally:
        await publisher.close()
        await mongo.close()


def _go_on() -> None:
    """Nothing stops a resend once begun (the relay's lease is not involved)."""
