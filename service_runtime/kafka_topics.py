"""The system's Kafka topics as settings: create them, check them at start, reconcile them.

Every topic of `events.topics.Topics.all()` (the event topics and their dead-letter topics) has
`kafka_partitions` partitions, `kafka_replication_factor` replicas and `min.insync.replicas` =
`kafka_min_insync_replicas`. Brokers run with auto-create off, so nothing else makes a topic.

- `ensure_topics` creates the missing ones (the stack recipes, compose's init job, tests, bench);
- `check_topics` is what the relay, the projectors and the workers call before they start: a
  missing topic, or one whose partition count or replication factor differs from the settings,
  stops the service with a message naming the topic, what was expected and what was found;
- `reconcile_topics` (`campaigns kafka topics --reconcile`) creates what is missing, grows
  partitions to the configured count and sets min.insync.replicas. It never shrinks a topic
  (Kafka cannot) and never changes a replication factor (a reassignment, done by hand).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError

from events.topics import Topics
from service_runtime.settings import Settings

MIN_ISR = "min.insync.replicas"
UNKNOWN_TOPIC = 3  # Kafka's UNKNOWN_TOPIC_OR_PARTITION error code
ADMIN_TIMEOUT_MS = 10_000
RETRY_PAUSE_SECONDS = 1.0
MISMATCH_GRACE_SECONDS = 3.0

log = logging.getLogger(__name__)


class TopicsMismatch(RuntimeError):
    """The topics on the cluster are not what the settings say: the service must not start."""


@dataclass(frozen=True)
class Expected:
    partitions: int
    replication_factor: int
    min_insync_replicas: int

    @classmethod
    def of(cls, settings: Settings) -> Expected:
        return cls(
            settings.kafka_partitions, settings.kafka_replication_factor, settings.kafka_min_insync_replicas
        )


@dataclass(frozen=True)
class TopicState:
    """One topic as the cluster has it; `partitions` is 0 when the topic does not exist."""

    name: str
    partitions: int = 0
    replication_factor: int = 0
    min_insync_replicas: int | None = None

    @property
    def exists(self) -> bool:
        return self.partitions > 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exists": self.exists}


def system_topics(settings: Settings) -> list[str]:
    return Topics(settings.topic_prefix).all()


def problems(expected: Expected, states: list[TopicState]) -> list[str]:
    """Why these topics cannot be used as they are (empty: they can)."""
    found: list[str] = []
    for state in states:
        if not state.exists:
            found.append(
                f"topic {state.name} does not exist (expected {expected.partitions} partitions, "
                f"replication factor {expected.replication_factor})"
            )
            continue
        if state.partitions != expected.partitions:
            found.append(
                f"topic {state.name} has {state.partitions} partitions, expected {expected.partitions}"
            )
        if state.replication_factor != expected.replication_factor:
            found.append(
                f"topic {state.name} has replication factor {state.replication_factor}, "
                f"expected {expected.replication_factor}"
            )
    return found


@dataclass(frozen=True)
class Plan:
    """What reconciling would do; `refused` are the differences it leaves to an operator."""

    create: list[str]
    grow: dict[str, int]  # topic -> new partition count
    set_min_isr: list[str]
    refused: list[str]

    @property
    def empty(self) -> bool:
        return not (self.create or self.grow or self.set_min_isr)


def plan(expected: Expected, states: list[TopicState]) -> Plan:
    create: list[str] = []
    grow: dict[str, int] = {}
    set_min_isr: list[str] = []
    refused: list[str] = []
    for state in states:
        if not state.exists:
            create.append(state.name)
            continue
        if state.partitions < expected.partitions:
            grow[state.name] = expected.partitions
        elif state.partitions > expected.partitions:
            refused.append(
                f"topic {state.name} has {state.partitions} partitions, more than the "
                f"{expected.partitions} configured: Kafka cannot shrink a topic; raise "
                "CAMPAIGNS_KAFKA_PARTITIONS instead"
            )
        if state.replication_factor != expected.replication_factor:
            refused.append(
                f"topic {state.name} has replication factor {state.replication_factor}, expected "
                f"{expected.replication_factor}: change it with a partition reassignment "
                "(kafka-reassign-partitions.sh)"
            )
        if state.min_insync_replicas != expected.min_insync_replicas:
            set_min_isr.append(state.name)
    return Plan(create, grow, set_min_isr, refused)


class KafkaTopics:
    """The admin operations, on one started admin client."""

    def __init__(self, admin: AIOKafkaAdminClient) -> None:
        self.admin = admin

    async def describe(self, names: list[str]) -> list[TopicState]:
        # Only topics the cluster lists are described: a broker with auto-create still on would
        # create a described missing topic with its own defaults.
        listed = set(await self.admin.list_topics())
        present = [name for name in names if name in listed]
        described = {d["topic"]: d for d in await self.admin.describe_topics(present)} if present else {}
        existing = [n for n in names if described.get(n, {}).get("error_code") == 0]
        min_isr = await self._min_isr(existing)
        states: list[TopicState] = []
        for name in names:
            info = described.get(name)
            if info is None or info.get("error_code") == UNKNOWN_TOPIC or not info.get("partitions"):
                states.append(TopicState(name))
                continue
            partitions = info["partitions"]
            replicas = min(len(p["replicas"]) for p in partitions)
            states.append(TopicState(name, len(partitions), replicas, min_isr.get(name)))
        return states

    async def _min_isr(self, names: list[str]) -> dict[str, int]:
        if not names:
            return {}
        responses = await self.admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        )
        found: dict[str, int] = {}
        for response in responses:
            for _error, _message, _type, name, entries in response.resources:
                for entry in entries:
                    if entry[0] == MIN_ISR and entry[1] is not None:
                        found[name] = int(entry[1])
        return found

    async def create(self, names: list[str], expected: Expected) -> None:
        if names:
            await self.admin.create_topics(
                [
                    NewTopic(
                        name,
                        num_partitions=expected.partitions,
                        replication_factor=expected.replication_factor,
                        topic_configs={MIN_ISR: str(expected.min_insync_replicas)},
                    )
                    for name in names
                ],
                timeout_ms=ADMIN_TIMEOUT_MS,
            )

    async def apply(self, todo: Plan, expected: Expected) -> None:
        await self.create(todo.create, expected)
        if todo.grow:
            await self.admin.create_partitions(
                {name: NewPartitions(total_count=count) for name, count in todo.grow.items()},
                timeout_ms=ADMIN_TIMEOUT_MS,
            )
        if todo.set_min_isr:
            await self.admin.alter_configs(
                [
                    ConfigResource(
                        ConfigResourceType.TOPIC, name, configs={MIN_ISR: str(expected.min_insync_replicas)}
                    )
                    for name in todo.set_min_isr
                ]
            )


async def _with_admin(settings: Settings) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=ADMIN_TIMEOUT_MS
    )
    await admin.start()
    return admin


async def describe_topics(settings: Settings, names: list[str] | None = None) -> list[TopicState]:
    admin = await _with_admin(settings)
    try:
        return await KafkaTopics(admin).describe(names or system_topics(settings))
    finally:
        await admin.close()


async def ensure_topics(settings: Settings, names: list[str] | None = None) -> list[str]:
    """Create the missing topics with the configured shape; existing ones are left as they are."""
    admin = await _with_admin(settings)
    try:
        topics = KafkaTopics(admin)
        wanted = names or system_topics(settings)
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        await topics.create(missing, Expected.of(settings))
        # A broker's metadata can trail the controller a moment: return once every topic is
        # described, so a service started next does not find one missing.
        deadline = time.monotonic() + ADMIN_TIMEOUT_MS / 1000
        while missing and time.monotonic() < deadline:
            if all(state.exists for state in await topics.describe(wanted)):
                break
            await asyncio.sleep(0.1)
        return missing
    finally:
        await admin.close()


async def check_topics(settings: Settings, service: str, names: list[str] | None = None) -> None:
    """Raise TopicsMismatch unless every topic exists with the configured partitions and replicas."""
    states = await describe_topics(settings, names)
    found = problems(Expected.of(settings), states)
    if found:
        raise TopicsMismatch(
            f"{service} refuses to start: " + "; ".join(found) + ". Run `campaigns kafka topics "
            "--reconcile` (or set CAMPAIGNS_KAFKA_PARTITIONS / CAMPAIGNS_KAFKA_REPLICATION_FACTOR "
            "to what the cluster has)"
        )


async def reconcile_topics(settings: Settings, apply: bool) -> tuple[Plan, list[TopicState]]:
    """The plan for the system's topics, applied when `apply`; then their state."""
    admin = await _with_admin(settings)
    try:
        topics = KafkaTopics(admin)
        names = system_topics(settings)
        expected = Expected.of(settings)
        todo = plan(expected, await topics.describe(names))
        if apply and not todo.empty:
            await topics.apply(todo, expected)
            # Return once the brokers describe the result (their metadata trails the controller).
            deadline = time.monotonic() + ADMIN_TIMEOUT_MS / 1000
            while time.monotonic() < deadline:
                after = plan(expected, await topics.describe(names))
                if not (after.create or after.grow or after.set_min_isr):
                    break
                await asyncio.sleep(0.1)
        return todo, await topics.describe(names)
    finally:
        await admin.close()


async def require_topics(settings: Settings, service: str) -> None:
    """A service's start: wait (bounded by `kafka_topic_check_seconds`) for Kafka to answer, then
    exit with the mismatch message if the topics are not what the settings say."""
    started = time.monotonic()
    deadline = started + settings.kafka_topic_check_seconds
    while True:
        try:
            await check_topics(settings, service)
            return
        except TopicsMismatch as exc:
            # Topics created a moment ago may not be described yet: a short grace, then refuse.
            if time.monotonic() < started + MISMATCH_GRACE_SECONDS:
                await asyncio.sleep(RETRY_PAUSE_SECONDS)
                continue
            log.error("%s", exc)
            raise SystemExit(str(exc)) from exc
        except (KafkaConnectionError, KafkaError, OSError) as exc:
            if time.monotonic() > deadline:
                message = (
                    f"{service} refuses to start: Kafka at {settings.kafka_bootstrap} did not answer "
                    f"the topic check within {settings.kafka_topic_check_seconds:.0f}s ({exc!r})"
                )
                log.error("%s", message)
                raise SystemExit(message) from exc
            log.warning("Kafka not answering the topic check yet; retrying", extra={"error": repr(exc)})
            await asyncio.sleep(RETRY_PAUSE_SECONDS)
