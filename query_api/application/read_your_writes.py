"""`min_version`: read, and if the projection is behind, wait (bounded) for its notification."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Protocol

from readmodels.snapshot import Snapshot


class VersionWaiters(Protocol):
    """Wakes a waiter once an aggregate reaches a version (`query_api.adapters.notifications`)."""

    def watch(self, aggregate_id: str, min_version: int) -> AbstractContextManager[asyncio.Future[None]]: ...


# Entered when a read first finds the read model behind, held while the request waits.
Behind = Callable[[Snapshot], AbstractContextManager[object]]


def _waits_freely(_: Snapshot) -> AbstractContextManager[object]:
    return contextlib.nullcontext()


async def read_at_least(
    read: Callable[[], Awaitable[Snapshot]],
    waiters: VersionWaiters,
    aggregate_id: str,
    min_version: int,
    wait_seconds: float,
    behind: Behind = _waits_freely,
) -> Snapshot | None:
    """The snapshot once it has reached `min_version`, or None if `wait_seconds` pass first.

    No polling: the wait ends when the projector announces a version at least `min_version`
    of this aggregate (or when the feed reconnects, after which we read again). Each read is made
    already registered for that announcement, so a version applied after the read wakes the
    wait: a reached version costs one read, a wait for it two (reading once before registering
    would cost a third, to close the gap between that read and the registration).

    `behind(snapshot)` is entered at the first read that finds the model behind, before waiting,
    and held until the wait ends: it may refuse the wait (raise) or hold a place for it.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_seconds
    with contextlib.ExitStack() as waiting:
        admitted = False
        while True:
            with waiters.watch(aggregate_id, min_version) as woken:
                snapshot = await read()
                if snapshot.version >= min_version:
                    return snapshot
                if not admitted:
                    waiting.enter_context(behind(snapshot))
                    admitted = True
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                try:
                    async with asyncio.timeout(remaining):  # not wait_for: see service_runtime.background
                        await woken
                except TimeoutError:
                    snapshot = await read()
                    return snapshot if snapshot.version >= min_version else None
