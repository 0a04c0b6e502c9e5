"""The dead-letter operations' composition root: Kafka and MongoDB wired from the settings.

`async with dead_letter_operations(settings) as dlq: await dlq.list()` is what the `campaigns dlq`
commands run, and what the query API's console can run: this package imports only the contracts
(`events/`) and the runtime (`service_runtime/`), never a service.
"""

from __future__ import annotations

import getpass
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import KafkaError
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from deadletters.adapters.kafka_log import KafkaDeadLetterLog, KafkaRedriver
from deadletters.adapters.mongo_ledger import MongoLedger
from deadletters.application import operations
from deadletters.application.operations import (
    Clock,
    Confirm,
    PurgeReport,
    ReplayPlan,
    ReplayReport,
    ShownRecord,
    TopicListing,
    utc_now,
)
from deadletters.domain.records import RecordRef, require_dlq_topic
from events import Topics
from service_runtime.settings import Settings

# Errors that mean a server is unreachable or failing, as opposed to a bug (the CLI says which).
UNREACHABLE: tuple[type[Exception], ...] = (PyMongoError, KafkaError, OSError)
# An operator waits on these commands: a missing MongoDB is reported after seconds.
MONGO_SELECTION_TIMEOUT_MS = 5000
DEFAULT_SHOW = 50


def default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclass
class DeadLetterOperations:
    settings: Settings
    log: KafkaDeadLetterLog
    redriver: KafkaRedriver
    ledger: MongoLedger
    clock: Clock = utc_now

    def dlq_topics(self) -> list[str]:
        """Every dead-letter topic of this system (under the settings' topic prefix)."""
        topics = Topics(self.settings.topic_prefix)
        return [Topics.dlq(topic) for topic in (topics.users, topics.campaigns)]

    async def list(
        self, topic: str | None = None, aggregate: str | None = None, show: int = DEFAULT_SHOW
    ) -> list[TopicListing]:
        names = [require_dlq_topic(topic)] if topic else self.dlq_topics()
        return [
            await operations.list_dead_letters(self.log, self.ledger, name, aggregate, show) for name in names
        ]

    async def show(self, ref: str | RecordRef) -> ShownRecord | None:
        parsed = ref if isinstance(ref, RecordRef) else RecordRef.parse(ref)
        return await operations.show_dead_letter(self.log, self.ledger, parsed)

    async def plan_replay(
        self, topic: str, aggregate: str | None = None, limit: int | None = None
    ) -> ReplayPlan:
        return await operations.plan_replay(
            self.log, self.ledger, topic, aggregate, limit, self.settings.dlq_replay_max_records
        )

    async def replay(
        self,
        topic: str,
        aggregate: str | None = None,
        limit: int | None = None,
        dry_run: bool = False,
        *,
        actor: str | None = None,
        yes: bool = False,
        confirm: Confirm | None = None,
    ) -> ReplayReport:
        """Re-drive `topic`'s pending records; above `dlq_confirm_above` of them, `confirm` is asked
        unless `yes` (neither: ConfirmationRequired)."""
        plan = await self.plan_replay(topic, aggregate, limit)
        return await self._replay(plan, actor, dry_run=dry_run, confirm=_yes if yes else confirm)

    async def replay_ref(self, ref: str | RecordRef, *, actor: str | None = None) -> ReplayReport | None:
        """Re-drive one dead letter (and the other groups' copies of its original record); None
        when no pending dead letter has that ref (absent, purged or already re-driven)."""
        parsed = ref if isinstance(ref, RecordRef) else RecordRef.parse(ref)
        shown = await self.show(parsed)
        if shown is None or shown.purged or shown.redrive is not None:
            return None
        plan = await self.plan_replay(parsed.topic, shown.letter.aggregate_id)
        plan.redrives = [r for r in plan.redrives if parsed in r.refs]
        if not plan.redrives:
            return None
        return await self._replay(plan, actor, dry_run=False, confirm=_yes)

    async def _replay(
        self,
        plan: ReplayPlan,
        actor: str | None,
        *,
        dry_run: bool,
        confirm: Confirm | None,
    ) -> ReplayReport:
        return await operations.replay(
            self.log,
            self.redriver,
            self.ledger,
            plan,
            actor=actor or default_actor(),
            dry_run=dry_run,
            batch_size=self.settings.dlq_replay_batch_size,
            confirm_above=self.settings.dlq_confirm_above,
            confirm=confirm,
            clock=self.clock,
        )

    async def purge(
        self,
        topic: str,
        *,
        actor: str | None = None,
        yes: bool = False,
        confirm: Callable[[int], Awaitable[bool]] | None = None,
    ) -> PurgeReport:
        return await operations.purge(
            self.log,
            self.ledger,
            topic,
            actor=actor or default_actor(),
            confirm=_yes if yes else confirm,
            clock=self.clock,
        )


async def _yes(_: Any) -> bool:
    return True


@asynccontextmanager
async def dead_letter_operations(settings: Settings) -> AsyncIterator[DeadLetterOperations]:
    options: dict[str, Any] = {}
    if "serverselectiontimeoutms" not in settings.mongo_url.lower():
        options["serverSelectionTimeoutMS"] = MONGO_SELECTION_TIMEOUT_MS
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url, **options)
    try:
        async with (
            KafkaDeadLetterLog(settings.kafka_bootstrap, settings.dlq_page_records) as log,
            KafkaRedriver(settings.kafka_bootstrap) as redriver,
        ):
            yield DeadLetterOperations(settings, log, redriver, MongoLedger(client[settings.mongo_db]))
    finally:
        await client.close()
