"""min_version waits: answered at once when reached, woken by a notification, bounded by a timeout."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import pytest

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


async def test_a_version_applied_right_after_the_read_wakes_the_wait() -> None:
    model, waiters = FakeModel(1), VersionWaiters()

    async def read_then_advance() -> Snapshot:
        snapshot = await model.read()
        if model.version == 1:
            model.version = 2  # applied, and announced, before the request waits
            waiters.notify("c1", 2)
        return snapshot

    started = time.monotonic()
    snapshot = await read_at_least(read_then_advance, waiters, "c1", 2, 30)
    assert snapshot is not None and snapshot.version == 2
    assert time.monotonic() - started < 0.5


async def test_a_wait_for_the_version_costs_two_reads() -> None:
    model, waiters = FakeModel(1), VersionWaiters()
    read = asyncio.create_task(read_at_least(model.read, waiters, "c1", 2, 30))
    await asyncio.sleep(0)
    model.version = 2
    waiters.notify("c1", 2)
    assert (await read) is not None
    assert model.reads == 2


async def test_behind_is_held_while_the_request_waits_and_not_entered_for_a_reached_version() -> None:
    model, waiters = FakeModel(1), VersionWaiters()
    held: list[str] = []

    @contextlib.contextmanager
    def behind(snapshot: Snapshot) -> Iterator[None]:
        held.append(f"in at {snapshot.version}")
        yield
        held.append("out")

    read = asyncio.create_task(read_at_least(model.read, waiters, "c1", 2, 30, behind))
    await asyncio.sleep(0)
    assert held == ["in at 1"]
    waiters.wake_all()  # a reconnected feed: read again, still behind, wait again
    await asyncio.sleep(0)
    assert held == ["in at 1"] and not read.done()
    model.version = 2
    waiters.notify("c1", 2)
    assert (await read) is not None
    assert held == ["in at 1", "out"]
    assert await read_at_least(model.read, waiters, "c1", 2, 30, behind) is not None
    assert held == ["in at 1", "out"]


async def test_a_wait_behind_refuses_is_not_held_and_leaves_no_waiter() -> None:
    model, waiters = FakeModel(1), VersionWaiters()

    def refuse(_: Snapshot) -> contextlib.AbstractContextManager[object]:
        raise PermissionError("not yours")

    with pytest.raises(PermissionError):
        await read_at_least(model.read, waiters, "c1", 2, 30, refuse)
    assert len(waiters) == 0
    assert model.reads == 1


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
