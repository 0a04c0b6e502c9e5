"""The one way tests wait: poll a condition until it holds, or fail naming what never happened.

Test harness only: the code under test never polls. A test waits on the condition it is about
(a record written, a mail received), never on a fixed sleep that is too short on a slow machine
and too long on a fast one.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

Condition = Callable[[], Awaitable[bool]] | Callable[[], bool]


async def eventually(
    condition: Condition,
    timeout: float = 20,  # noqa: ASYNC109  (a deadline between polls: a condition is never cut off mid-call)
    interval: float = 0.05,
    what: str = "condition",
) -> None:
    """Await until `condition()` (sync or async) is true; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = condition()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)


def eventually_sync(
    condition: Callable[[], bool], timeout: float = 20, interval: float = 0.05, what: str = "condition"
) -> None:
    """The same, for code outside an event loop (process start-up, subprocess output)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)
