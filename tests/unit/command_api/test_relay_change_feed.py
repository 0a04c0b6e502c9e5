"""The change feed's reaction to a stream whose history is gone (MongoDB's error at the boundary)."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo.errors import OperationFailure

from command_api.adapters.relay_change_feed import RESUME_TOKEN_ID, ChangeFeed, is_history_lost


class FakeCollection:
    def __init__(self) -> None:
        self.deleted: list[dict[str, Any]] = []

    async def delete_one(self, query: dict[str, Any]) -> None:
        self.deleted.append(query)


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


async def test_a_stream_that_loses_its_history_drops_the_token_alerts_and_hands_the_error_on() -> None:
    reasons: list[str] = []
    db = FakeDatabase()
    feed = ChangeFeed(db, batch_size=10, on_history_lost=reasons.append)  # type: ignore[arg-type]
    await feed._read(StreamThatLostItsHistory([{"_id": 1}, {"_id": 2}]))  # type: ignore[arg-type]

    assert len(reasons) == 1 and "286" in reasons[0]
    assert db.state.deleted == [{"_id": RESUME_TOKEN_ID}]
    # What arrived before is published first; then the loop gets the error and starts over
    # (a new stream and a full scan of unpublished events, never "from now" alone).
    assert await feed.changes(0.1) == [{"_id": 1}, {"_id": 2}]
    with pytest.raises(OperationFailure):
        await feed.changes(0.1)
