"""The projector's load: campaign events as the relay publishes them, produced fast and batched.

Each campaign gets the life a real one has: created, renamed, activated, paused, activated
again (five versions), and the events go out in waves (every campaign's v1, then every v2...),
so consecutive events mostly touch different campaigns, as live traffic does. The bytes are
the events' JSON form (`encode_event`), checked once per type by `decode_event`.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
from aiokafka import AIOKafkaProducer

from events import decode_event
from events.envelope import utc_text
from events.types import EVENT_TYPES

LIFE = ("CampaignCreated", "CampaignUpdated", "CampaignActivated", "CampaignPaused", "CampaignActivated")
CHANNELS = ("email", "sms", "push", "social")
TAGS = ("sale", "launch", "retention", "b2b", "seasonal", "vip")
OWNERS = 500


def campaign_id(n: int) -> str:
    """The load's n-th campaign id (0-based; the same in every run)."""
    return _random_looking_uuid(b"campaign", n)


def owner_id(n: int) -> str:
    return _random_looking_uuid(b"owner", n)


def _random_looking_uuid(kind: bytes, n: int) -> str:
    """A UUID4 as random as the command API's, yet the same in every run. (Ids of mostly zeros,
    `UUID(int=n)`, made the stored documents compress far better than real ones do.)"""
    digest = hashlib.blake2b(kind + n.to_bytes(8, "big"), digest_size=16).digest()
    return str(uuid.UUID(bytes=digest, version=4))


def campaign_events(
    count: int, *, life: tuple[str, ...] = LIFE, first: int = 0
) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of `count` campaign events, in an order that keeps each campaign's versions:
    campaigns `first`, `first + 1`... each through `life` (the scale figures' later loads start
    where the earlier ones stopped, later in time)."""
    campaigns = max(1, count // len(life))
    ids = [campaign_id(first + i) for i in range(campaigns)]
    owners = [owner_id(i) for i in range(OWNERS)]
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(milliseconds=first * len(life))
    produced = 0
    for wave, event_type in enumerate(life):
        spec = EVENT_TYPES[event_type]
        for i, campaign_id_ in enumerate(ids):
            if produced == count:
                return
            n = first + i
            owner = owners[n % OWNERS]
            if event_type == "CampaignCreated":
                payload: dict[str, object] = {
                    "owner_id": owner,
                    "name": f"Campaign {n}",
                    "description": "A campaign made by the benchmark, about as long as a real one.",
                    "channel": CHANNELS[n % len(CHANNELS)],
                    "budget": {"amount": f"{1000 + n % 9000}.00", "currency": "EUR"},
                    "starts_at": "2027-03-01T00:00:00Z",
                    "ends_at": "2027-03-31T00:00:00Z",
                    "tags": [TAGS[n % len(TAGS)], TAGS[(n // 7) % len(TAGS)]],
                    "status": "draft",
                }
            elif event_type == "CampaignUpdated":
                payload = {"name": f"Campaign {n} (renamed)"}
            else:
                payload = {}
            envelope = {
                "event_id": str(uuid.uuid4()),
                "event_type": event_type,
                "schema_version": spec.schema_version,
                "aggregate_type": "campaign",
                "aggregate_id": campaign_id_,
                "aggregate_version": wave + 1,
                "occurred_at": utc_text(start + timedelta(milliseconds=produced)),
                "correlation_id": f"bench-{produced}",
                "causation_id": None,
                "actor_id": owner,
                "payload": payload,
            }
            produced += 1
            yield campaign_id_.encode(), orjson.dumps(envelope)
    # Fewer events than whole lives requested: the waves above already stopped at `count`.


def check_event_forms() -> None:
    """Every event type the load uses decodes as the projectors will decode it."""
    seen: set[str] = set()
    for _, value in campaign_events(len(LIFE)):
        envelope = decode_event(value)
        seen.add(envelope.event_type)
    assert seen == set(LIFE), seen


async def produce(
    bootstrap: str, topic: str, count: int, *, life: tuple[str, ...] = LIFE, first: int = 0
) -> float:
    """Produce `count` events to `topic`; returns the seconds it took (acknowledged, acks=all)."""
    check_event_forms()
    records = campaign_events(count, life=life, first=first)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
    )
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for key, value in records:
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 20_000:
                for future in pending:
                    await future
                pending = []
        await producer.flush()
        for future in pending:
            await future
    finally:
        await producer.stop()
    return time.perf_counter() - started
