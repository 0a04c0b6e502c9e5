"""Background loops end on stop even when a step swallows the cancellation, and a stop never hangs."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from service_runtime.background import BackgroundLoops


class SwallowingClient:
    """A client call that turns a cancellation into an error of its own (as a call finishing
    inside Python 3.11's `asyncio.wait_for` can), the way the generation poll met it."""

    def __init__(self) -> None:
        self.calls = 0
        self.swallowed = 0
        self.in_call = asyncio.Event()

    async def call(self) -> None:
        self.calls += 1
        self.in_call.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            self.swallowed += 1
            raise ConnectionError("connection closed while reading") from None


async def _poll(loops: BackgroundLoops, client: SwallowingClient) -> None:
    while loops.running:
        with contextlib.suppress(ConnectionError):  # logged and tried again, in the services
            await client.call()
        await loops.pause(0.01)


async def test_a_loop_whose_call_swallows_the_cancellation_still_ends_on_stop() -> None:
    loops = BackgroundLoops(stop_seconds=5)
    client = SwallowingClient()
    task = loops.start(_poll(loops, client), "poll")
    await asyncio.wait_for(client.in_call.wait(), 1)

    assert await asyncio.wait_for(loops.stop(), 2) == []
    assert task.done()
    assert client.swallowed == 1
    assert client.calls == 1  # no step after the stop


async def test_a_stop_ends_every_pause_at_once() -> None:
    loops = BackgroundLoops()
    # Not one of its loops: nothing cancels this pause, only the flag can end it.
    paused = asyncio.create_task(loops.pause(3600))
    await asyncio.sleep(0)
    assert await asyncio.wait_for(loops.stop(), 1) == []
    await asyncio.wait_for(paused, 1)
    assert not paused.cancelled()
    assert not loops.running


async def test_a_task_that_never_ends_is_named_rather_than_waited_for() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                continue  # ignores the flag and every cancellation

    loops = BackgroundLoops(stop_seconds=0.05)
    task = loops.start(stubborn(), "stubborn")
    await asyncio.sleep(0)
    assert await asyncio.wait_for(loops.stop(), 1) == ["stubborn"]
    release.set()
    task.cancel()
    await asyncio.wait_for(task, 1)


async def test_a_loop_that_fails_is_logged_when_it_fails(caplog: pytest.LogCaptureFixture) -> None:
    async def failing() -> None:
        raise RuntimeError("the loop's own bug")

    loops = BackgroundLoops()
    with caplog.at_level(logging.ERROR, logger="service_runtime.background"):
        task = loops.start(failing(), "failing")
        await asyncio.wait({task})
        await asyncio.sleep(0)  # the done callbacks run
    assert [r.message for r in caplog.records] == ["background task failing failed"]
    assert await loops.stop() == []
    assert caplog.records[0].exc_info is not None and "own bug" in str(caplog.records[0].exc_info[1])
