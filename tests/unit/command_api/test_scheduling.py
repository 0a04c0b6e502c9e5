"""The scheduler on an injected clock and in-memory ports: it fires each due transition once,
at its due time, through the same handler and unit of work as any command."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from command_api.application import campaign_handlers
from command_api.application.commands import (
    ChangeCampaignStatus,
    CreateCampaign,
    FireDueTransition,
    FireDueTransitions,
)
from command_api.application.scheduling import Scheduler, SchedulerConfig
from command_api.domain.campaign import SCHEDULER_ACTOR_ID, Actor, DueTimer
from tests.unit.command_api.fakes import FakeStore, FakeUnitOfWork

OWNER = Actor("owner")
START = datetime(2099, 1, 10, 12, 0, tzinfo=UTC)


class FakeClock:
    """Time stands still until someone sleeps; sleeping moves it on at once."""

    def __init__(self, now: datetime) -> None:
        self.current = now
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self.current

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.current += timedelta(seconds=seconds)
        await asyncio.sleep(0)


@dataclass
class FakeTimers:
    """The timer store over FakeStore.timers: reads by due time, like the MongoDB one."""

    store: FakeStore
    discarded: list[str] = field(default_factory=list)
    # The lower bound of each read (None: a sweep from the earliest due time).
    sinces: list[datetime | None] = field(default_factory=list)
    # How many timers each read's due-time range held: what SecantusDB decodes for it.
    in_range: list[int] = field(default_factory=list)

    async def read_due(self, until: datetime, limit: int, since: datetime | None = None) -> list[DueTimer]:
        self.sinces.append(since)
        timers = self.store.timers.values()
        in_range = [t for t in timers if t.due_at <= until and (since is None or t.due_at >= since)]
        self.in_range.append(len(in_range))
        return sorted(in_range, key=lambda t: t.due_at)[:limit]

    async def discard(self, timers: Sequence[DueTimer]) -> None:
        for timer in timers:
            current = self.store.timers.get(timer.campaign_id)
            if current is not None and current.timer_id == timer.timer_id:
                del self.store.timers[timer.campaign_id]
            self.discarded.append(timer.timer_id)


class RecordingObserver:
    def __init__(self) -> None:
        self.firings: list[tuple[str, timedelta]] = []
        self.skips: list[str] = []
        self.failures: list[str] = []

    def fired(self, timer: DueTimer, lateness: timedelta) -> None:
        self.firings.append((timer.timer_id, lateness))

    def skipped(self, timer: DueTimer) -> None:
        self.skips.append(timer.timer_id)

    def failed(self, timer: DueTimer, error: BaseException) -> None:
        self.failures.append(timer.timer_id)


async def new_campaign(store: FakeStore, starts_at: datetime, ends_at: datetime) -> str:
    command = CreateCampaign(
        actor=OWNER,
        name="Spring",
        description="",
        channel="email",
        budget_amount="1.00",
        budget_currency="EUR",
        starts_at=starts_at,
        ends_at=ends_at,
        tags=[],
    )
    return (await campaign_handlers.create_campaign(command, FakeUnitOfWork(store))).id


async def scheduled_campaign(store: FakeStore, starts_at: datetime, ends_at: datetime) -> str:
    campaign_id = await new_campaign(store, starts_at, ends_at)
    await campaign_handlers.change_campaign_status(
        ChangeCampaignStatus(actor=OWNER, campaign_id=campaign_id, action="schedule"), FakeUnitOfWork(store)
    )
    return campaign_id


def scheduler_on(store: FakeStore, clock: FakeClock, **config: float) -> tuple[Scheduler, RecordingObserver]:
    observer = RecordingObserver()
    scheduler = Scheduler(
        store=FakeTimers(store),
        unit_of_work=lambda: FakeUnitOfWork(store),
        clock=clock,
        observer=observer,
        config=SchedulerConfig(**config),  # type: ignore[arg-type]
    )
    return scheduler, observer


async def test_scheduling_through_the_handler_stores_the_timer_with_the_command() -> None:
    store = FakeStore()
    campaign_id = await scheduled_campaign(store, START + timedelta(hours=1), START + timedelta(hours=2))
    timer = store.timers[campaign_id]
    assert (timer.action, timer.due_at) == ("activate", START + timedelta(hours=1))
    await campaign_handlers.change_campaign_status(
        ChangeCampaignStatus(actor=OWNER, campaign_id=campaign_id, action="unschedule"), FakeUnitOfWork(store)
    )
    assert campaign_id not in store.timers


async def test_the_scheduler_fires_each_transition_at_its_due_time_as_the_scheduler() -> None:
    store = FakeStore()
    starts, ends = START + timedelta(seconds=2), START + timedelta(seconds=5)
    campaign_id = await scheduled_campaign(store, starts, ends)
    clock = FakeClock(START)
    scheduler, observer = scheduler_on(store, clock, lookahead_seconds=0.5)
    for _ in range(40):  # 40 passes of at most 0.5 s lookahead (and sleeps) cover the 5 s
        await scheduler.run_once()
        await scheduler.drain()
        if clock.now() < ends:
            await clock.sleep(0.25)
    assert store.event_types(campaign_id) == [
        "CampaignCreated",
        "CampaignScheduled",
        "CampaignActivated",
        "CampaignCompleted",
    ]
    activated, completed = [(e, actor) for e, actor in store.events if e.aggregate_id == campaign_id][2:]
    assert activated[0].occurred_at == starts
    assert completed[0].occurred_at == ends
    assert activated[1] == completed[1] == SCHEDULER_ACTOR_ID
    assert store.causes[(campaign_id, 3)] == f"timer:{campaign_id}:v2:activate"
    assert store.causes[(campaign_id, 4)] == f"timer:{campaign_id}:v3:complete"
    assert [lateness for _, lateness in observer.firings] == [timedelta(0), timedelta(0)]
    assert campaign_id not in store.timers


async def test_a_scheduler_is_behind_while_a_timer_it_holds_is_due_and_not_fired() -> None:
    store = FakeStore()
    starts = START + timedelta(seconds=1)
    await scheduled_campaign(store, starts, starts + timedelta(hours=1))
    clock = FakeClock(START)
    scheduler, _ = scheduler_on(store, clock, lookahead_seconds=2.0)
    await scheduler.claim()
    assert not scheduler.behind()  # held, not due yet
    await clock.sleep(1.5)
    assert scheduler.behind()  # due, waiting for a firing
    await scheduler.fire_due()
    await scheduler.drain()
    assert not scheduler.behind()


async def test_a_transition_that_fell_due_while_no_scheduler_ran_fires_at_once_late() -> None:
    store = FakeStore()
    starts = START + timedelta(seconds=1)
    campaign_id = await scheduled_campaign(store, starts, START + timedelta(hours=1))
    clock = FakeClock(starts + timedelta(seconds=30))  # the scheduler was down meanwhile
    scheduler, observer = scheduler_on(store, clock)
    await scheduler.run_once()
    await scheduler.drain()
    assert observer.firings == [(f"timer:{campaign_id}:v2:activate", timedelta(seconds=30))]
    activated = [e for e, _ in store.events if e.event_type == "CampaignActivated"]
    assert activated[0].payload.model_dump()["timer"]["lateness_ms"] == 30_000


async def test_firing_the_same_timer_twice_records_one_event() -> None:
    store = FakeStore()
    starts = START + timedelta(seconds=1)
    campaign_id = await scheduled_campaign(store, starts, START + timedelta(hours=1))
    timer = store.timers[campaign_id]
    command = FireDueTransition(timer=timer, now=starts)
    first = await campaign_handlers.fire_due_transition(command, FakeUnitOfWork(store))
    second = await campaign_handlers.fire_due_transition(command, FakeUnitOfWork(store))
    assert first is not None
    assert second is None
    assert store.event_types(campaign_id).count("CampaignActivated") == 1


async def test_a_firing_that_loses_the_race_to_another_is_decided_again_and_records_nothing() -> None:
    store = FakeStore()
    starts = START + timedelta(seconds=1)
    campaign_id = await scheduled_campaign(store, starts, START + timedelta(hours=1))
    timer = store.timers[campaign_id]
    command = FireDueTransition(timer=timer, now=starts)

    def other_scheduler_fires_first() -> None:
        campaign = store.campaigns[campaign_id]
        assert campaign.fire(timer, starts)
        store.events.extend((e, SCHEDULER_ACTOR_ID) for e in campaign.collect_events())

    store.before_commit = other_scheduler_fires_first
    assert await campaign_handlers.fire_due_transition(command, FakeUnitOfWork(store)) is None
    assert store.event_types(campaign_id).count("CampaignActivated") == 1


async def test_a_stale_timer_is_skipped_and_discarded() -> None:
    store = FakeStore()
    starts = START + timedelta(seconds=1)
    campaign_id = await scheduled_campaign(store, starts, START + timedelta(hours=1))
    stale = store.timers[campaign_id]
    # The campaign moved on (activated by hand) while the timer's replacement was not seen.
    await campaign_handlers.change_campaign_status(
        ChangeCampaignStatus(actor=OWNER, campaign_id=campaign_id, action="activate"), FakeUnitOfWork(store)
    )
    store.timers[campaign_id] = stale
    clock = FakeClock(starts)
    scheduler, observer = scheduler_on(store, clock)
    await scheduler.run_once()
    await scheduler.drain()
    assert observer.skips == [stale.timer_id]
    assert campaign_id not in store.timers
    assert store.event_types(campaign_id).count("CampaignActivated") == 1


async def test_a_campaign_scheduled_after_its_start_is_active_without_the_scheduler() -> None:
    store = FakeStore()
    now = datetime.now(UTC)
    campaign_id = await scheduled_campaign(store, now - timedelta(minutes=1), now + timedelta(hours=1))
    assert store.event_types(campaign_id)[-2:] == ["CampaignScheduled", "CampaignActivated"]
    assert store.timers[campaign_id].action == "complete"


async def test_timers_due_together_fire_in_one_transaction_and_a_stale_one_fires_nothing() -> None:
    store = FakeStore()
    starts = START + timedelta(seconds=1)
    ids = [await scheduled_campaign(store, starts, START + timedelta(hours=1)) for _ in range(3)]
    timers = [store.timers[i] for i in ids]
    await campaign_handlers.change_campaign_status(
        ChangeCampaignStatus(actor=OWNER, campaign_id=ids[1], action="unschedule"), FakeUnitOfWork(store)
    )
    uow = FakeUnitOfWork(store)
    results = await campaign_handlers.fire_due_transitions(FireDueTransitions(timers=timers, now=starts), uow)
    assert [r is not None for r in results] == [True, False, True]
    assert uow.commits == 1
    assert [store.event_types(i)[-1] for i in ids] == [
        "CampaignActivated",
        "CampaignUnscheduled",
        "CampaignActivated",
    ]
    assert store.causes[(ids[0], 3)] == timers[0].timer_id


async def test_a_batch_that_loses_a_version_check_is_decided_once_more_as_a_batch() -> None:
    store = FakeStore()
    starts = START + timedelta(seconds=1)
    ids = [await scheduled_campaign(store, starts, START + timedelta(hours=1)) for _ in range(3)]
    timers = [store.timers[i] for i in ids]

    def someone_renames_the_first() -> None:
        store.campaigns[ids[0]].version += 1  # a command committed on it meanwhile

    store.before_commit = someone_renames_the_first
    uow = FakeUnitOfWork(store)
    results = await campaign_handlers.fire_due_transitions(FireDueTransitions(timers=timers, now=starts), uow)
    assert all(r is not None for r in results)
    assert [store.event_types(i).count("CampaignActivated") for i in ids] == [1, 1, 1]
    assert uow.commits == 1  # the second try, on fresh reads, committed them all at once


async def test_a_batch_that_loses_twice_fires_each_timer_on_its_own() -> None:
    store = FakeStore()
    starts = START + timedelta(seconds=1)
    ids = [await scheduled_campaign(store, starts, START + timedelta(hours=1)) for _ in range(3)]
    timers = [store.timers[i] for i in ids]
    moves = 0

    def someone_renames_the_first() -> None:
        nonlocal moves
        moves += 1
        store.campaigns[ids[0]].version += 1  # a command committed on it meanwhile
        if moves < 2:
            store.before_commit = someone_renames_the_first  # and again before the second try

    store.before_commit = someone_renames_the_first
    uow = FakeUnitOfWork(store)
    results = await campaign_handlers.fire_due_transitions(FireDueTransitions(timers=timers, now=starts), uow)
    assert all(r is not None for r in results)
    assert [store.event_types(i).count("CampaignActivated") for i in ids] == [1, 1, 1]
    assert (moves, uow.commits) == (2, 3)  # two batches lost, then one commit a timer


async def test_a_burst_due_at_once_is_fired_in_few_transactions() -> None:
    store = FakeStore()
    starts = START + timedelta(seconds=1)
    ids = [await scheduled_campaign(store, starts, START + timedelta(hours=1)) for _ in range(50)]
    clock = FakeClock(starts)
    scheduler, observer = scheduler_on(store, clock, fire_batch=20)
    used: list[FakeUnitOfWork] = []

    def unit_of_work() -> FakeUnitOfWork:
        used.append(FakeUnitOfWork(store))
        return used[-1]

    scheduler.unit_of_work = unit_of_work
    await scheduler.run_once()
    await scheduler.drain()
    assert len(observer.firings) == 50
    assert sum(uow.commits for uow in used) == 3  # 20 + 20 + 10
    assert all(store.event_types(i)[-1] == "CampaignActivated" for i in ids)


async def test_a_firing_that_hangs_is_abandoned_and_its_timer_fired_again_by_the_next_read() -> None:
    store = FakeStore()
    starts = START + timedelta(seconds=1)
    campaign_id = await scheduled_campaign(store, starts, START + timedelta(hours=1))
    scheduler, observer = scheduler_on(store, FakeClock(starts), firing_timeout_seconds=0.05)
    timer = store.timers[campaign_id]

    class HangingUnitOfWork(FakeUnitOfWork):
        async def commit(self, *, actor_id: str | None, causation_id: str | None = None) -> None:
            await asyncio.Event().wait()  # a server that never answers

    scheduler.unit_of_work = lambda: HangingUnitOfWork(store)
    assert await scheduler.run_once() == 1
    await scheduler.drain()
    assert observer.failures == [timer.timer_id]
    assert "CampaignActivated" not in store.event_types(campaign_id)
    assert scheduler.next_due_at() is None  # no longer held

    scheduler.unit_of_work = lambda: FakeUnitOfWork(store)
    assert await scheduler.run_once() == 1  # read again (a sweep), fired this time
    await scheduler.drain()
    assert [timer_id for timer_id, _ in observer.firings] == [timer.timer_id]
    assert store.event_types(campaign_id).count("CampaignActivated") == 1


async def test_during_a_burst_each_read_starts_where_the_last_full_one_ended_and_sweeps_catch_up() -> None:
    store = FakeStore()
    starts = [START + timedelta(seconds=1, milliseconds=n) for n in range(7)]
    for at in starts:
        await scheduled_campaign(store, at, START + timedelta(hours=1))
    clock = FakeClock(START + timedelta(seconds=1))
    scheduler, _ = scheduler_on(store, clock, batch_size=3, sweep_seconds=5.0)
    timers = scheduler.store
    assert isinstance(timers, FakeTimers)

    assert await scheduler.claim() == 3  # a sweep, and full: 0, 1, 2
    assert await scheduler.claim() == 2  # from the last one's latest due time: 2 (held), 3, 4
    # A command writes a timer due behind the reads' point.
    behind = await scheduled_campaign(store, START + timedelta(milliseconds=500), START + timedelta(hours=1))
    assert await scheduler.claim() == 2  # 4 (held), 5, 6
    assert timers.sinces == [None, starts[2], starts[4]]
    assert scheduler.next_due_at() == starts[0]  # the one behind is not read while reads are full

    clock.current += timedelta(seconds=5)  # the sweep interval has passed
    assert await scheduler.claim() == 1  # the one behind (and 0, 1 held): full
    assert timers.sinces[-1] is None
    assert scheduler.next_due_at() == store.timers[behind].due_at
    assert await scheduler.claim() == 0  # from where that sweep ended: 1, 2, 3, all held
    assert timers.sinces[-1] == starts[1]


async def keep_claiming_for(scheduler: Scheduler, ticks: int) -> None:
    """Run the scheduler's claiming loop for `ticks` turns of the event loop, then stop it."""
    claiming = asyncio.create_task(scheduler._keep_claiming())
    for _ in range(ticks):
        await asyncio.sleep(0)
    claiming.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await claiming


async def test_a_full_read_of_timers_already_held_waits_instead_of_reading_again_at_once() -> None:
    store = FakeStore()
    due = START + timedelta(seconds=1)
    for _ in range(5):  # more due at the very same moment than one read takes
        await scheduled_campaign(store, due, START + timedelta(hours=1))
    clock = FakeClock(START + timedelta(milliseconds=500))
    scheduler, _ = scheduler_on(store, clock, batch_size=3, poll_seconds=0.25)
    await keep_claiming_for(scheduler, ticks=20)
    timers = scheduler.store
    assert isinstance(timers, FakeTimers)
    # The first read is full and new (read again at once); the second brings nothing new: wait.
    assert clock.slept[:1] == [0.25]
    assert len(timers.sinces) == len(clock.slept) + 1


class FakeLease:
    def __init__(self, held: bool) -> None:
        self.held = held

    async def keep(self) -> None:
        await asyncio.Event().wait()


async def test_without_the_lease_a_scheduler_reads_nothing_and_drops_what_it_held() -> None:
    store = FakeStore()
    starts = START + timedelta(seconds=1)
    campaign_id = await scheduled_campaign(store, starts, START + timedelta(hours=1))
    clock = FakeClock(START + timedelta(milliseconds=500))
    scheduler, observer = scheduler_on(store, clock)
    lease = FakeLease(held=True)
    scheduler.lease = lease
    assert await scheduler.claim() == 1
    assert scheduler.next_due_at() == starts
    lease.held = False  # another scheduler took over
    clock.current = starts
    await scheduler.fire_due()
    await scheduler.drain()
    assert observer.firings == []
    assert scheduler.next_due_at() is None
    assert await scheduler.claim() == 0
    assert store.timers[campaign_id].due_at == starts  # left for the holder of the lease
    lease.held = True
    assert await scheduler.run_once() == 1
    await scheduler.drain()
    assert [timer_id for timer_id, _ in observer.firings] == [f"timer:{campaign_id}:v2:activate"]


async def test_with_plenty_queued_the_scheduler_reads_nothing_until_the_queue_runs_low() -> None:
    store = FakeStore()
    due = START + timedelta(seconds=1)
    for n in range(9):
        await scheduled_campaign(store, due + timedelta(milliseconds=n), START + timedelta(hours=1))
    clock = FakeClock(START + timedelta(milliseconds=500))
    scheduler, _ = scheduler_on(store, clock, batch_size=2, poll_seconds=0.25)
    await keep_claiming_for(scheduler, ticks=50)
    timers = scheduler.store
    assert isinstance(timers, FakeTimers)
    # Reads went on at once while full and new (the first brings 2, each next one 1 beside the
    # bound it rereads) until 4 reads' worth (8) were queued; then the loop only polled.
    assert len(timers.sinces) == 7
    assert len(clock.slept) >= 10
    assert scheduler.next_due_at() == due


async def test_reads_through_a_backlog_each_span_about_one_read_of_due_time() -> None:
    store = FakeStore()
    first = START + timedelta(seconds=1)
    ids = [
        await scheduled_campaign(store, first + timedelta(milliseconds=10 * n), START + timedelta(hours=1))
        for n in range(60)
    ]
    # The scheduler started before the burst fell due, then fell behind: all 60 are overdue.
    clock = FakeClock(first - timedelta(milliseconds=500))
    scheduler, _ = scheduler_on(store, clock, batch_size=4, lookahead_seconds=1.0, sweep_seconds=3600)
    timers = scheduler.store
    assert isinstance(timers, FakeTimers)
    assert await scheduler.claim() == 4  # a sweep: the 50 due within the lookahead are in range
    clock.current = first + timedelta(seconds=5)
    for _ in range(40):
        await scheduler.claim()
        if len(scheduler._held) == len(ids):
            break
    assert len(scheduler._held) == len(ids)
    forward = timers.in_range[1:]
    # Each forward read's window held about one read (4), never the backlog (up to 56).
    assert max(forward) <= 2 * 4
    assert len(forward) <= 2 * len(ids) // 4
    assert all(since is not None for since in timers.sinces[1:])
