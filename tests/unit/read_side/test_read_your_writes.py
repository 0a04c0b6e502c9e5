"""min_version waits: answered at once when reached, woken by a notification, bounded by a timeout."""

from __future__ import annotations

import asyncio
import time

from query_api.adapters.notifications import VersionWaiters
from query_api.application.read_your_writes import read_at_least
from readmodels.snapshot import Snapshot


class FakeModel:
    """An in-memory read model whose version the test moves (a unit-test fake)."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.reads = 0

    async def read(self) -> Snapshot:
        self.reads += 1
        return Snapshot(b"{}", "owner", self.version)


async def test_a_reached_version_is_answered_with_one_read() -> None:
    model = FakeModel(3)
    snapshot = await read_at_least(model.read, VersionWaiters(), "c1", 2, 5)
    assert snapshot is not None and snapshot.version == 3
    assert model.reads == 1


async def test_the_wait_ends_on_the_notification_of_the_version() -> None:
    model, waiters = FakeModel(1), VersionWaiters()
    read = asyncio.create_task(read_at_least(model.read, waiters, "c1", 2, 30))
    await asyncio.sleep(0)  # the read runs until it waits on the notification
    assert len(waiters) == 1
    waiters.notify("c1", 1)  # not yet the version waited for
    waiters.notify("other", 5)  # another aggregate
    await asyncio.sleep(0)
    assert not read.done()
    model.version = 2
    started = time.monotonic()
    waiters.notify("c1", 2)
    snapshot = await read
    assert snapshot is not None and snapshot.version == 2
    assert time.monotonic() - started < 0.5
    assert len(waiters) == 0


async def test_a_version_applied_between_the_read_and_the_registration_is_not_missed() -> None:
    model, waiters = FakeModel(1), VersionWaiters()

    async def read_then_advance() -> Snapshot:
        snapshot = await model.read()
        model.version = 2  # applied (and announced) before we registered
        return snapshot

    snapshot = await read_at_least(read_then_advance, waiters, "c1", 2, 30)
    assert snapshot is not None and snapshot.version == 2


async def test_the_wait_gives_up_after_its_bound() -> None:
    model, waiters = FakeModel(1), VersionWaiters()
    started = time.monotonic()
    assert await read_at_least(model.read, waiters, "c1", 2, 0.1) is None
    assert 0.09 < time.monotonic() - started < 1
    assert len(waiters) == 0


async def test_a_reconnected_feed_makes_every_waiter_read_again() -> None:
    model, waiters = FakeModel(1), VersionWaiters()
    read = asyncio.create_task(read_at_least(model.read, waiters, "c1", 2, 30))
    await asyncio.sleep(0)  # the read runs until it waits on the notification
    assert len(waiters) == 1
    model.version = 2
    waiters.wake_all()
    snapshot = await read
    assert snapshot is not None and snapshot.version == 2
