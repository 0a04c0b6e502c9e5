"""`min_version`: read, and if the projection is behind, wait (bounded) for its notification."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Protocol

from readmodels.snapshot import Snapshot


class VersionWaiters(Protocol):
    """Wakes a waiter once an aggregate reaches a version (`query_api.adapters.notifications`)."""

    def watch(self, aggregate_id: str, min_version: int) -> AbstractContextManager[asyncio.Future[None]]: ...


async def read_at_least(
    read: Callable[[], Awaitable[Snapshot]],
    waiters: VersionWaiters,
    aggregate_id: str,
    min_version: int,
    wait_seconds: float,
) -> Snapshot | None:
    """The snapshot once it has reached `min_version`, or None if `wait_seconds` pass first.

    No polling: the wait ends when the projector announces a version at least `min_version`
    of this aggregate (or when the feed reconnects, after which we read again).
    """
    snapshot = await read()
    if snapshot.version >= min_version:
        return snapshot
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    while True:
        with waiters.watch(aggregate_id, min_version) as woken:
            # Read again now that we are registered: a version applied between the first read
            # and the registration would otherwise never wake us.
            snapshot = await read()
            if snapshot.version >= min_version:
                return snapshot
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            try:
                async with asyncio.timeout(remaining):  # not wait_for: see service_runtime.background
                    await woken
            except TimeoutError:
                snapshot = await read()
                return snapshot if snapshot.version >= min_version else None
