"""The relay's watermark as its change feed keeps it: where it resumes, what a scan leaves it,
when it moves and when it is saved (MongoDB's side faked at the boundary)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo.errors import DuplicateKeyError, OperationFailure

from command_api.adapters import relay_change_feed
from command_api.adapters.relay_change_feed import WATERMARK_SAVE_SECONDS, ChangeFeed
from events.envelope import utc_now
from events.log import WATERMARK_ID
from tests.support.clock import Clock

T0 = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)
MARGIN = 300.0


class Stream:
    """A change stream that brings nothing (the tests hand changes to the feed themselves)."""

    alive = True

    def __init__(self, token: Any) -> None:
        self.resume_token = token
        self.closed = False

    async def try_next(self) -> None:
        await asyncio.Event().wait()

    async def close(self) -> None:
        self.closed = True


class Bringing(Stream):
    """A change stream that brings these changes, then nothing."""

    def __init__(self, token: Any, changes: list[dict[str, Any]]) -> None:
        super().__init__(token)
        self._changes = changes

    async def try_next(self) -> dict[str, Any] | None:
        if self._changes:
            return self._changes.pop(0)
        await asyncio.Event().wait()
        return None


class Cursor:
    """Hands out the pages it was given, one a `to_list`."""

    def __init__(self, pages: list[list[dict[str, Any]]]) -> None:
        self._pages = pages
        self.lengths: list[int] = []
        self.closed = False

    async def to_list(self, length: int) -> list[dict[str, Any]]:
        self.lengths.append(length)
        return self._pages.pop(0) if self._pages else []

    async def close(self) -> None:
        self.closed = True


class Events:
    """The log: `watch` refuses `refused` tokens as history lost; `find` opens a cursor over the
    pages in `pages` (each query and its options are kept)."""

    def __init__(self, *, refused: Any = None) -> None:
        self.refused = refused
        self.pages: list[list[dict[str, Any]]] = []
        self.queries: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self.cursors: list[Cursor] = []
        self.resumed_after: list[Any] = []
        # What a stream opened anew brings.
        self.brings: list[dict[str, Any]] = []

    async def watch(self, pipeline: Any, *, resume_after: Any = None, **_: Any) -> Stream:
        if resume_after is not None:
            if resume_after == self.refused:
                raise OperationFailure("Resume of change stream was not possible", code=286)
            self.resumed_after.append(resume_after)
            return Stream(resume_after)
        return Bringing({"_data": "opened"}, self.brings)

    def find(self, query: dict[str, Any], **options: Any) -> Cursor:
        self.queries.append((query, options))
        self.cursors.append(Cursor(self.pages))
        return self.cursors[-1]


class State:
    """relay_state: the watermark document; `newer` makes the next save meet a newer one."""

    def __init__(self, saved: dict[str, Any] | None) -> None:
        self.saved = saved
        self.updates: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self.newer = False

    async def find_one(self, query: dict[str, Any]) -> dict[str, Any] | None:
        return self.saved

    async def update_one(self, query: dict[str, Any], change: dict[str, Any], upsert: bool = False) -> None:
        self.updates.append((query, change))
        if self.newer:
            raise DuplicateKeyError("E11000 duplicate key")


class Database:
    def __init__(self, events: Events, state: State) -> None:
        self.events, self.state = events, state

    def get_collection(self, name: str, **_: Any) -> Events:
        return self.events

    def __getitem__(self, name: str) -> State:
        return self.state


def feed_over(
    saved: dict[str, Any] | None, *, events: Events | None = None, clock: Clock | None = None
) -> tuple[ChangeFeed, Events, State, list[str]]:
    events = events or Events()
    state = State(saved)
    alerts: list[str] = []
    feed = ChangeFeed(
        Database(events, state),  # type: ignore[arg-type]
        batch_size=2,
        on_history_lost=alerts.append,
        rescan_margin_seconds=MARGIN,
        clock=clock or Clock(),
    )
    return feed, events, state, alerts


def opened(feed: ChangeFeed) -> Stream:
    assert isinstance(feed._stream, Stream)
    return feed._stream


def event(aggregate: str, version: int, recorded_at: datetime) -> dict[str, Any]:
    return {"aggregate_id": aggregate, "aggregate_version": version, "recorded_at": recorded_at}


async def test_a_saved_watermark_is_resumed_from_and_nothing_is_scanned() -> None:
    feed, events, state, alerts = feed_over({"token": {"_data": "w"}, "recorded_through": T0})
    async with feed:
        assert not feed.scanning
        assert events.resumed_after == [{"_data": "w"}]
        assert feed.recorded_through == T0
    assert events.queries == [] and alerts == []
    assert state.updates == []  # it did not move: nothing to save


async def test_with_no_watermark_the_whole_log_is_scanned_and_the_watermark_saved_only_at_its_end() -> None:
    feed, events, state, _ = feed_over(None)
    events.pages = [
        [event("a", 1, T0), event("a", 2, T0 + timedelta(seconds=2))],
        [event("b", 1, T0 + timedelta(seconds=1))],
    ]
    async with feed:
        assert feed.scanning
        assert len(await feed.scan_page()) == 2
        # One query, in aggregate/version order, for everything not marked published by an
        # older release; read a page (the batch size) at a time.
        [(query, options)] = events.queries
        assert query == {"published": {"$ne": True}, "quarantine": {"$exists": False}}
        assert options["sort"] == [("aggregate_id", 1), ("aggregate_version", 1)]
        assert feed.recorded_through is None  # a scan stopped here must be done again whole
        assert [e["aggregate_id"] for e in await feed.scan_page()] == ["b"]
        assert await feed.scan_page() == []
        assert len(events.queries) == 1 and events.cursors[0].lengths == [2, 2, 2]
        assert events.cursors[0].closed
        assert not feed.scanning
        assert feed.recorded_through == T0 + timedelta(seconds=2)
        await feed.save_position()
    [(query, change)] = state.updates
    assert query["_id"] == WATERMARK_ID
    # Where the stream opened, before the scan: every change after it the stream brings.
    assert change["$set"]["token"] == {"_data": "opened"}
    assert change["$set"]["recorded_through"] == T0 + timedelta(seconds=2)


async def test_the_streams_copies_of_what_the_scan_handed_out_since_it_opened_are_not_handed_out_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(relay_change_feed, "SCANNED_MAX", 2)
    now = utc_now()
    # Recorded since the stream opened (the scan finds them, and so does the stream); one
    # recorded an hour before, which the scan does not remember; one after the scan.
    a1, a2, a3 = ({**event("a", v, now), "_id": f"a{v}"} for v in (1, 2, 3))
    old = {**event("o", 1, now - timedelta(hours=1)), "_id": "o1"}
    after = {**event("b", 1, now), "_id": "b1"}
    feed, events, state, _ = feed_over(None)
    events.pages = [[a1, old], [a2, a3]]
    events.brings = [{"_id": {"_data": d["_id"]}, "fullDocument": d} for d in (a1, a2, a3, old, after)]
    async with feed:
        scanned = await feed.scan_page() + await feed.scan_page()
        assert await feed.scan_page() == [] and not feed.scanning
        assert [d["_id"] for d in scanned] == ["a1", "o1", "a2", "a3"]
        changes = []
        while len(changes) < 3:
            changes += await feed.changes(1.0)
        # a1 and a2 were remembered; a3 was past the bound (SCANNED_MAX), so it goes out twice.
        assert [c["fullDocument"]["_id"] for c in changes] == ["a3", "o1", "b1"]
        feed.published(changes)
        await feed.save_position()
        # The watermark passes the skipped copies with what was published after them.
        assert state.updates[-1][1]["$set"]["token"] == {"_data": "b1"}
        assert await feed.changes(0.05) == []


async def test_a_scan_interrupted_half_way_saves_nothing() -> None:
    feed, events, state, _ = feed_over(None)
    events.pages = [[event("a", 1, T0), event("a", 2, T0)]]
    async with feed:
        await feed.scan_page()
    assert state.updates == []
    assert events.cursors[0].closed


async def test_a_token_the_server_refuses_alerts_and_scans_from_the_margin_before_the_watermark() -> None:
    lost = {"_data": "lost"}
    feed, events, state, alerts = feed_over(
        {"token": lost, "recorded_through": T0}, events=Events(refused=lost)
    )
    async with feed:
        assert len(alerts) == 1 and "286" in alerts[0]
        assert state.updates[0] == ({"_id": WATERMARK_ID}, {"$unset": {"token": ""}})
        assert feed.scanning
        await feed.scan_page()
    assert events.queries[0][0]["recorded_at"] == {"$gte": T0 - timedelta(seconds=MARGIN)}


async def test_published_changes_move_the_watermark_which_is_saved_about_once_a_second() -> None:
    clock = Clock()
    feed, _, state, _ = feed_over({"token": {"_data": "w"}, "recorded_through": T0}, clock=clock)
    async with feed:
        newer = T0 + timedelta(seconds=5)
        feed.published(
            [
                {"_id": {"_data": "c1"}, "fullDocument": event("a", 1, newer)},
                {"_id": {"_data": "c2"}, "fullDocument": event("b", 1, T0 + timedelta(seconds=3))},
            ]
        )
        await feed.remember_position()
        await asyncio.sleep(0)
        [(query, change)] = state.updates
        assert change["$set"]["token"] == {"_data": "c2"}
        assert change["$set"]["recorded_through"] == newer
        # Never over a newer watermark another relay saved.
        assert query["$or"] == [{"recorded_through": None}, {"recorded_through": {"$lte": newer}}]

        feed.published([{"_id": {"_data": "c3"}, "fullDocument": event("a", 2, newer)}])
        await feed.remember_position()
        await asyncio.sleep(0)
        assert len(state.updates) == 1  # not due yet
        clock.now += WATERMARK_SAVE_SECONDS
        await feed.remember_position()
        await asyncio.sleep(0)
        assert state.updates[-1][1]["$set"]["token"] == {"_data": "c3"}


async def test_a_newer_watermark_saved_by_another_relay_stays() -> None:
    feed, _, state, _ = feed_over({"token": {"_data": "w"}, "recorded_through": T0})
    async with feed:
        state.newer = True
        feed.published([{"_id": {"_data": "c1"}, "fullDocument": event("a", 1, T0)}])
    assert len(state.updates) == 1  # tried once as the feed closed; the newer one was kept


async def test_when_idle_the_watermark_follows_the_streams_own_position() -> None:
    feed, _, _, _ = feed_over({"token": {"_data": "w"}, "recorded_through": T0})
    async with feed:
        stream = opened(feed)
        stream.resume_token = {"_data": "later"}
        feed.caught_up()
        assert feed._token == {"_data": "later"}
        # A change queued, not yet published: the stream's position may be past it.
        feed._queue.put_nowait((0.0, {"_id": {"_data": "queued"}}))
        stream.resume_token = {"_data": "past the queued one"}
        feed.caught_up()
        assert feed._token == {"_data": "later"}


@pytest.mark.parametrize("saved", [None, {"recorded_through": T0}])
async def test_while_scanning_the_streams_position_is_no_watermark(saved: dict[str, Any] | None) -> None:
    feed, _, _, _ = feed_over(saved)
    async with feed:
        assert feed.scanning
        opened(feed).resume_token = {"_data": "later"}
        feed.caught_up()
        assert feed._token is None
