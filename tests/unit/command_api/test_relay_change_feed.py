"""The change feed: its reaction to a stream whose history is gone (MongoDB's error at the
boundary), and the arrival gaps the relay's linger decides on."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo.errors import OperationFailure

from command_api.adapters.relay_change_feed import ChangeFeed, is_history_lost
from events.log import WATERMARK_ID
from tests.support.clock import Clock
from tests.support.waiting import eventually


class FakeCollection:
    def __init__(self) -> None:
        self.updated: list[tuple[dict[str, Any], dict[str, Any]]] = []

    async def update_one(self, query: dict[str, Any], change: dict[str, Any]) -> None:
        self.updated.append((query, change))


class FakeDatabase:
    client = None

    def __init__(self) -> None:
        self.state = FakeCollection()

    def get_collection(self, name: str, **options: Any) -> FakeCollection:
        return FakeCollection()

    def __getitem__(self, name: str) -> FakeCollection:
        return self.state


class StreamThatLostItsHistory:
    alive = True

    def __init__(self, changes: list[dict[str, Any]]) -> None:
        self._changes = changes

    async def try_next(self) -> dict[str, Any] | None:
        if self._changes:
            return self._changes.pop(0)
        raise OperationFailure("Resume of change stream was not possible", code=286)


@pytest.mark.parametrize(
    ("code", "message", "lost"),
    [
        (286, "ChangeStreamHistoryLost", True),
        (280, "cannot resume stream; the resume token was not found", True),
        (9, "resume token is not a valid resume token", True),
        (11600, "interrupted at shutdown", False),
    ],
)
def test_history_lost_is_recognised_by_code_or_resume_failure(code: int, message: str, lost: bool) -> None:
    assert is_history_lost(OperationFailure(message, code=code)) is lost


async def test_a_stream_that_loses_its_history_drops_the_watermarks_token_alerts_and_hands_the_error_on() -> (
    None
):
    reasons: list[str] = []
    db = FakeDatabase()
    feed = ChangeFeed(db, batch_size=10, on_history_lost=reasons.append)  # type: ignore[arg-type]
    await feed._read(StreamThatLostItsHistory([{"_id": 1}, {"_id": 2}]))  # type: ignore[arg-type]

    assert len(reasons) == 1 and "286" in reasons[0]
    assert db.state.updated == [({"_id": WATERMARK_ID}, {"$unset": {"token": ""}})]
    # What arrived before is published first; then the loop gets the error and starts over
    # (a new stream and a scan from before the watermark, never "from now" alone).
    assert await feed.changes(0.1) == [{"_id": 1}, {"_id": 2}]
    with pytest.raises(OperationFailure):
        await feed.changes(0.1)
    # Their positions belong to the lost history: the watermark keeps none of them.
    feed.published([{"_id": 2, "fullDocument": {}}])
    assert feed._token is None


class Stream:
    """Hands out the changes the test sends it, each arriving at the time sent with it."""

    alive = True

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.sent: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()

    async def try_next(self) -> dict[str, Any] | None:
        self._clock.now, change = await self.sent.get()
        return change


async def test_each_batch_tells_how_long_after_the_change_before_it_its_first_arrived() -> None:
    clock = Clock()
    feed = ChangeFeed(FakeDatabase(), batch_size=10, on_history_lost=print, clock=clock)  # type: ignore[arg-type]
    stream = Stream(clock)
    reader = asyncio.create_task(feed._read(stream))  # type: ignore[arg-type]
    try:
        stream.sent.put_nowait((100.0, {"_id": 1}))
        assert await feed.changes(1) == [{"_id": 1}]
        assert feed.arrival_gap is None  # the first since the stream opened

        stream.sent.put_nowait((100.010, {"_id": 2}))
        assert await feed.changes(1) == [{"_id": 2}]
        assert feed.arrival_gap == pytest.approx(0.010)

        stream.sent.put_nowait((100.050, {"_id": 3}))
        assert await feed.changes(1) == [{"_id": 3}]
        assert feed.arrival_gap == pytest.approx(0.040)

        # A change the linger collected (`arrived`) is the one the next gap is measured from.
        stream.sent.put_nowait((100.062, {"_id": 4}))
        await eventually(lambda: not feed._queue.empty(), 5, 0.001, "the change queued")
        assert feed.arrived(10) == [{"_id": 4}]
        stream.sent.put_nowait((100.070, {"_id": 5}))
        assert await feed.changes(1) == [{"_id": 5}]
        assert feed.arrival_gap == pytest.approx(0.008)
        # How long the batch's first change has waited since it arrived (the linger's start).
        clock.now = 100.082
        assert feed.waited() == pytest.approx(0.012)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
