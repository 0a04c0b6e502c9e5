"""Anti-entropy's walk of a state collection on the real MongoDB: every aggregate once, in
bounded reads (events/state_versions.py).

SecantusDB answers a find by reading every document it matches before its first batch, under
its storage lock: a cursor over the whole collection stalled every other client for 0.6-0.8 s
at 20,000 campaigns. So each read of the walk must be a slice that its index serves.
"""

from __future__ import annotations

import random
import uuid

from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from command_api.adapters.mongo_schema import Document, ensure_indexes
from events.state_versions import CAMPAIGNS_COLLECTION, StateVersions
from service_runtime.settings import Settings
from tests.integration.command_api.test_relay_backlog import docs_examined

PAGE = 100


class Finds(monitoring.CommandListener):
    """The finds of the campaigns collection a client sends."""

    def __init__(self) -> None:
        self.commands: list[Document] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find" and event.command.get("find") == CAMPAIGNS_COLLECTION:
            self.commands.append({"find": CAMPAIGNS_COLLECTION, "filter": event.command["filter"]})

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def winning_stages(explained: object) -> set[str]:
    if isinstance(explained, dict):
        own = {explained["stage"]} if isinstance(explained.get("stage"), str) else set()
        return own.union(*(winning_stages(v) for k, v in explained.items() if k != "rejectedPlans"))
    if isinstance(explained, list):
        return set().union(*(winning_stages(v) for v in explained))
    return set()


async def walk(versions: StateVersions) -> list[list[tuple[str, int]]]:
    return [page async for page in versions.pages("campaign", PAGE)]


async def test_a_walk_reads_every_campaign_once_each_read_a_slice_its_index_serves(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    await ensure_indexes(db)
    expected = {str(uuid.uuid4()): random.randint(1, 9) for _ in range(3_000)}
    # Ids outside the hex space of UUIDs (none the command side makes) are walked too.
    expected.update({odd: 1 for odd in ("", "-a", "Ab", "ZZZ", "user-1", "~")})
    documents = [
        {"_id": aggregate_id, "version": v, "name": "x" * 40} for aggregate_id, v in expected.items()
    ]
    await db[CAMPAIGNS_COLLECTION].insert_many(documents)

    finds = Finds()
    watched: AsyncMongoClient[Document] = AsyncMongoClient(settings.mongo_url, event_listeners=[finds])
    try:
        versions = StateVersions(watched[settings.mongo_db])
        first = await walk(versions)
        first_reads = len(finds.commands)
        second = await walk(versions)
    finally:
        await watched.close()

    for pages in (first, second):
        seen = [pair for page in pages for pair in page]
        assert len(seen) == len(expected)  # none twice
        assert dict(seen) == expected
        assert all(1 <= len(page) <= PAGE for page in pages)
    # The second walk starts at the density the first one found: about a read per page.
    assert len(finds.commands) - first_reads <= 2 * len(expected) // PAGE + 16
    for command in finds.commands:
        explained = await db.command({"explain": command, "verbosity": "executionStats"})
        assert "COLLSCAN" not in winning_stages(explained["queryPlanner"]), command
        assert docs_examined(explained) <= 4 * PAGE, (command, docs_examined(explained))


async def test_a_collection_smaller_than_a_page_is_walked_in_one_read_once_its_size_is_known(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    await ensure_indexes(db)
    expected = {str(uuid.uuid4()): 1 for _ in range(PAGE // 4)}
    await db[CAMPAIGNS_COLLECTION].insert_many([{"_id": i, "version": v} for i, v in expected.items()])
    finds = Finds()
    watched: AsyncMongoClient[Document] = AsyncMongoClient(settings.mongo_url, event_listeners=[finds])
    try:
        versions = StateVersions(watched[settings.mongo_db])
        assert dict(pair for page in await walk(versions) for pair in page) == expected
        first_reads = len(finds.commands)
        assert dict(pair for page in await walk(versions) for pair in page) == expected
    finally:
        await watched.close()
    assert first_reads > 1  # the first walk knew nothing: slices
    assert finds.commands[first_reads:] == [{"find": CAMPAIGNS_COLLECTION, "filter": {}}]
