"""Who produces and who consumes the domain events: the one declared table of the event contract.

The AsyncAPI document (`events.asyncapi`) is generated from this table, never from a running
process, so it names every sender, every consumer group and every dead-letter topic whether or not
a broker was built. Adding a consumer means adding a row here (a test holds the table equal to the
groups the processes really join); adding an event type means adding it to `events.types`.

Names here are unprefixed: a deployment's `topic_prefix` goes in front of every topic and group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from events.topics import Topics
from events.types import EVENT_TYPES

AggregateType = Literal["user", "campaign"]
ConsumerKind = Literal["projection", "worker"]


@dataclass(frozen=True)
class Producer:
    """A process that sends every event of `aggregates` to the aggregate's topic."""

    name: str
    aggregates: tuple[AggregateType, ...]
    description: str


@dataclass(frozen=True)
class Consumer:
    """A consumer group: it reads every record of its topics and dead-letters what it cannot handle."""

    name: str
    kind: ConsumerKind
    group: str
    aggregates: tuple[AggregateType, ...]
    acts_on: tuple[str, ...] | None
    description: str

    def group_id(self, topic_prefix: str = "") -> str:
        return f"{topic_prefix}{self.group}"


PRODUCERS: tuple[Producer, ...] = (
    Producer(
        name="outbox-relay",
        aggregates=("user", "campaign"),
        description=(
            "The outbox relay (`campaigns serve relay`): publishes each event recorded in MongoDB's "
            "events log with an idempotent producer (acks=all), key = aggregate id, each aggregate's "
            "events in aggregate_version order."
        ),
    ),
)

CONSUMERS: tuple[Consumer, ...] = (
    Consumer(
        name="campaigns",
        kind="projection",
        group="projector.campaigns",
        aggregates=("campaign",),
        acts_on=None,
        description="The campaigns read model in Redis (documents, indexes) and the monitor's feed.",
    ),
    Consumer(
        name="users",
        kind="projection",
        group="projector.users",
        aggregates=("user",),
        acts_on=None,
        description="The users read model in Redis (GET /users/me).",
    ),
    Consumer(
        name="stats",
        kind="projection",
        group="projector.stats",
        aggregates=("user", "campaign"),
        acts_on=None,
        description="The counters behind GET /stats.",
    ),
    Consumer(
        name="notifications",
        kind="worker",
        group="worker.notifications",
        aggregates=("user",),
        acts_on=("UserRegistered",),
        description="Sends each new user one welcome e-mail; other event types are skipped.",
    ),
    Consumer(
        name="reports",
        kind="worker",
        group="worker.reports",
        aggregates=("campaign",),
        acts_on=("CampaignCompleted",),
        description=(
            "Builds a completed campaign's report (GET /campaigns/{id}/report) from the events log; "
            "other event types are skipped."
        ),
    ),
)

AGGREGATES: tuple[AggregateType, ...] = ("user", "campaign")


def event_types_of(aggregate: AggregateType) -> list[str]:
    """The event types of one aggregate, in declaration order (each on that aggregate's topic)."""
    return [spec.name for spec in EVENT_TYPES.values() if spec.aggregate_type == aggregate]


def topic_of(aggregate: AggregateType, topics: Topics) -> str:
    return topics.for_aggregate(aggregate)


def consumers_of(aggregate: AggregateType) -> list[Consumer]:
    return [consumer for consumer in CONSUMERS if aggregate in consumer.aggregates]
