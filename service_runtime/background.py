"""Background loops that end when their service stops, even when a cancellation is lost.

A cancellation that lands while a client library is finishing a call can be swallowed by it
(Python 3.11's `asyncio.wait_for` returns the result of a wait that ended as the cancellation
came, and the cancellation is gone; aiokafka and parts of redis-py call it, while the project's
own waits use `asyncio.timeout`, which counts cancellations and keeps them). A loop that only
ends when cancelled then goes on, and whatever awaits its end waits forever: a query app's
shutdown held a test teardown for 300 s in a fresh-clone CI run (the generation poll of
`query_api.adapters.read_models`, found sleeping in its next round after the cancel).

So a loop started here checks `running` between steps and sleeps through `pause`, which a
stop ends at once; `stop` sets the flag, cancels, and waits a bounded time, naming any task
still running after it (left behind, cancelled) rather than hanging. A loop that ends with an
error is logged when it ends (a background task's error is otherwise seen by nobody).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)

STOP_SECONDS = 5.0


class BackgroundLoops:
    def __init__(self, stop_seconds: float = STOP_SECONDS) -> None:
        self.stop_seconds = stop_seconds
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def running(self) -> bool:
        """False once `stop` was called: a loop's condition."""
        return not self._stopping.is_set()

    def start(self, loop: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(loop, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        failure = None if task.cancelled() else task.exception()
        if failure is not None:  # logged as it happens (and retrieved: asyncio would complain)
            log.error("background task %s failed", task.get_name(), exc_info=failure)

    async def pause(self, seconds: float) -> bool:
        """Sleep `seconds`, or less: a stop ends every pause at once. Whether still running."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        return self.running

    async def stop(self) -> list[str]:
        """End every loop started here: the names of those still running `stop_seconds` later."""
        self._stopping.set()
        return await cancel_and_wait(list(self._tasks), self.stop_seconds)


async def cancel_and_wait(tasks: list[asyncio.Task[Any]], seconds: float) -> list[str]:
    """Cancel `tasks` and wait `seconds` at most for their end: the names of those still running."""
    for task in tasks:
        task.cancel()
    if not tasks:
        return []
    _, stuck = await asyncio.wait(tasks, timeout=seconds)
    names = sorted(task.get_name() for task in stuck)
    if names:
        log.warning("background tasks still ending at stop: %s", names)
    return names
