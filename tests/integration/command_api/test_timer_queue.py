"""The scheduler's status reads of the timer queue on the real MongoDB: exact up to their limits,
and in windows of due time the index serves, none reading much more than a page
(command_api/adapters/due_transitions.py).

SecantusDB answers a count, or a find sorted for its first, by reading every campaign its range
matches, under its storage lock: one count of 100,000 pending timers and one read of the
earliest stalled every other client for 5-6 s each (session 36's probe).
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from command_api.adapters import due_transitions
from command_api.adapters.due_transitions import MongoDueTransitions
from command_api.adapters.mongo_schema import CAMPAIGNS, Document, ensure_indexes
from service_runtime.settings import Settings
from tests.integration.command_api.test_relay_backlog import docs_examined

PAGE = 100


class Reads(monitoring.CommandListener):
    """The reads of the campaigns collection a client sends, as commands to explain."""

    def __init__(self) -> None:
        self.commands: list[Document] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in ("aggregate", "find") and event.command.get(event.command_name) == CAMPAIGNS:
            command = {k: v for k, v in event.command.items() if k not in ("lsid", "$db", "$clusterTime")}
            self.commands.append(command)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def campaign(due_at: datetime) -> Document:
    campaign_id = str(uuid.uuid4())
    timer = {"timer_id": f"timer:{campaign_id}:v2:activate", "action": "activate", "target_at": due_at}
    return {"_id": campaign_id, "version": 2, "status": "scheduled", "timer": {**timer, "due_at": due_at}}


async def test_the_queue_is_counted_exactly_in_windows_of_due_time_none_reading_much_more_than_a_page(
    settings: Settings, db: AsyncDatabase[Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(due_transitions, "STATUS_PAGE", PAGE)
    await ensure_indexes(db)
    now = datetime.now(UTC).replace(microsecond=0)
    # Whole seconds: MongoDB keeps milliseconds.
    overdue = [now - timedelta(seconds=random.randint(60, 36_000)) for _ in range(30)]
    soon = [now + timedelta(seconds=random.randint(0, 100 * 86_400)) for _ in range(2_000)]
    # Far ahead, and past the last window's start (`LAST_DUE`): the open-ended window counts them.
    far = [datetime(2999, 1, 1, tzinfo=UTC), datetime(9500, 6, 1, tzinfo=UTC)]
    dues = overdue + soon + far
    await db[CAMPAIGNS].insert_many([campaign(due) for due in dues])
    await db[CAMPAIGNS].insert_one({"_id": str(uuid.uuid4()), "version": 1, "status": "draft"})  # no timer

    reads = Reads()
    watched: AsyncMongoClient[Document] = AsyncMongoClient(
        settings.mongo_url, tz_aware=True, event_listeners=[reads]
    )
    try:
        timers = MongoDueTransitions(watched[settings.mongo_db][CAMPAIGNS])
        first = await timers.queue(now, overdue_limit=1_000, pending_limit=10_000)
        first_reads = len(reads.commands)
        again = await timers.queue(now, overdue_limit=1_000, pending_limit=10_000)
        again_reads = len(reads.commands) - first_reads
        capped = await timers.queue(now, overdue_limit=10, pending_limit=500)
        held = now + timedelta(seconds=3)
        told = await timers.queue(now, overdue_limit=1_000, pending_limit=10_000, next_due_at=held)
    finally:
        await watched.close()

    for queue in (first, again):
        assert (queue.pending, queue.overdue, queue.next_due_at) == (len(dues), 30, min(dues))
        assert not queue.pending_capped and not queue.overdue_capped
    assert (capped.pending, capped.overdue) == (500, 10)
    assert capped.pending_capped and capped.overdue_capped
    assert (told.pending, told.next_due_at) == (len(dues), held)  # the scheduler's own earliest

    # The second report starts at the width the first one left: about a read per page, and a
    # few more to cross the empty far future.
    assert again_reads <= 2 * len(dues) // PAGE + 16, again_reads
    examined = []
    for command in reads.commands:
        explained = await db.command({"explain": command, "verbosity": "executionStats"})
        examined.append(docs_examined(explained))
    assert max(examined) <= due_transitions.EMPTY_GROWTH * PAGE, examined
    assert sum(examined) >= 2 * len(dues), examined  # the explains do count what is read
