"""The scheduler's status report reads the timer queue from MongoDB only now and then."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from command_api.adapters.due_transitions import TimerQueue
from command_api.adapters.mongo_unit_of_work import chunked
from command_api.adapters.scheduler_status import QueueReading, SchedulerReport

NOW = datetime(2027, 1, 10, 12, 0, tzinfo=UTC)


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_the_queue_is_read_at_most_every_interval_and_reused_in_between() -> None:
    reads: list[tuple[datetime, datetime | None]] = []

    async def read(now: datetime, next_due_at: datetime | None) -> TimerQueue:
        reads.append((now, next_due_at))
        return TimerQueue(pending=10 + len(reads), overdue=0, next_due_at=NOW + timedelta(hours=1))

    ticks = Ticks()
    queue = QueueReading(read=read, every=10.0, monotonic=ticks)
    assert (await queue.current(NOW, None)).pending == 11
    ticks.now += 9.9
    assert (await queue.current(NOW, None)).pending == 11  # the last reading, no query
    ticks.now += 0.1
    assert (await queue.current(NOW, None)).pending == 12
    assert len(reads) == 2


async def test_the_next_due_time_is_the_schedulers_own_while_it_holds_timers() -> None:
    async def read(now: datetime, next_due_at: datetime | None) -> TimerQueue:
        return TimerQueue(pending=3, overdue=0, next_due_at=next_due_at or NOW + timedelta(hours=1))

    ticks = Ticks()
    queue = QueueReading(read=read, every=10.0, monotonic=ticks)
    held = NOW + timedelta(seconds=2)
    assert (await queue.current(NOW, held)).next_due_at == held
    later = NOW + timedelta(seconds=3)  # that one fired: the next it holds, between readings
    assert (await queue.current(NOW, later)).next_due_at == later
    assert (await queue.current(NOW, None)).next_due_at == held  # none held: the last reading's


async def test_while_a_backlog_fires_the_counts_wait_and_say_how_old_they_are() -> None:
    reads: list[datetime] = []

    async def read(now: datetime, next_due_at: datetime | None) -> TimerQueue:
        reads.append(now)
        return TimerQueue(pending=100 - len(reads), overdue=5, next_due_at=NOW)

    ticks = Ticks()
    queue = QueueReading(read=read, every=10.0, deferred=60.0, monotonic=ticks)
    first = await queue.current(NOW, None)
    assert (first.counted_at, first.deferred) == (NOW, False)
    ticks.now += 30.0
    later = NOW + timedelta(seconds=30)
    waiting = await queue.current(later, None, behind=True)
    # The last counts, not a read: the database is left to the firings.
    assert (waiting.pending, waiting.counted_at, waiting.deferred) == (99, NOW, True)
    caught_up = await queue.current(later, None, behind=False)  # the backlog fired: counted again
    assert (caught_up.pending, caught_up.counted_at, caught_up.deferred) == (98, later, False)
    ticks.now += 60.0
    longest = NOW + timedelta(seconds=90)
    # Behind for a whole `deferred`: counted all the same, so the counts are never older than that.
    assert (await queue.current(longest, None, behind=True)).counted_at == longest
    assert reads == [NOW, later, longest]


async def test_behind_or_not_the_counts_are_read_no_more_often_than_every_interval() -> None:
    reads: list[datetime] = []

    async def read(now: datetime, next_due_at: datetime | None) -> TimerQueue:
        reads.append(now)
        return TimerQueue(pending=1, overdue=0, next_due_at=None)

    ticks = Ticks()
    queue = QueueReading(read=read, every=10.0, deferred=5.0, monotonic=ticks)
    await queue.current(NOW, None)
    ticks.now += 6.0
    assert not (await queue.current(NOW, None, behind=True)).deferred
    assert len(reads) == 1


def test_an_overdue_count_at_its_limit_is_reported_as_capped() -> None:
    report = SchedulerReport("s1")
    capped = report.status(TimerQueue(pending=5000, overdue=1000, next_due_at=NOW, overdue_capped=True), NOW)
    assert (capped["overdue"], capped["overdue_capped"]) == (1000, True)
    exact = report.status(TimerQueue(pending=5, overdue=2, next_due_at=NOW), NOW)
    assert (exact["overdue"], exact["overdue_capped"]) == (2, False)


def test_the_report_says_whether_this_scheduler_holds_the_lease() -> None:
    report = SchedulerReport("s1")
    queue = TimerQueue(pending=1, overdue=0, next_due_at=NOW)
    assert report.status(queue, NOW)["leading"] is True
    assert report.status(queue, NOW, leading=False)["leading"] is False


def test_id_lists_are_cut_into_slices_of_at_most_the_chunk_size() -> None:
    assert chunked(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert chunked([], 3) == []
