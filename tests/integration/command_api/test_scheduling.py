"""Scheduling on real MongoDB: the routes keep the durable timer in the command's transaction, and
real scheduler loops fire each due transition exactly once, late after an outage, never twice
with two schedulers at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from command_api.adapters.mongo_schema import LEGACY_DUE_TRANSITIONS, Document
from command_api.application.campaign_handlers import change_campaign_status, fire_due_transitions
from command_api.application.commands import ChangeCampaignStatus, FireDueTransitions
from command_api.bootstrap import SchedulerSide, open_command_side, open_scheduler_side
from command_api.domain.campaign import SCHEDULER_ACTOR_ID, Actor, Campaign, CampaignDetails
from query_api.adapters.monitor_state import MonitorState
from service_runtime.redis_client import connect_redis
from service_runtime.settings import Settings
from tests.integration.command_api.accounts import Account, create_campaign, if_match, signed_up
from tests.support.factories import STARTS_AT


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def events_of(db: AsyncDatabase[Document], aggregate_id: str) -> list[Document]:
    return await db["events"].find({"aggregate_id": aggregate_id}).sort("aggregate_version").to_list()


async def timer_of(db: AsyncDatabase[Document], campaign_id: str) -> Document | None:
    """The campaign's durable timer (its document's `timer` field), if it has one."""
    state = await db["campaigns"].find_one({"_id": campaign_id})
    assert state is not None
    timer: Document | None = state.get("timer")
    return timer


async def timers_in(db: AsyncDatabase[Document]) -> int:
    return await db["campaigns"].count_documents({"timer.due_at": {"$exists": True}})


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    """Wait for a condition (bounded, so a broken scheduler fails the test instead of hanging it)."""
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not so after {within} s")
        await asyncio.sleep(0.05)


def fast(settings: Settings) -> Settings:
    return settings.model_copy(update={"scheduler_poll_seconds": 0.05, "scheduler_lease_seconds": 2.0})


@contextlib.asynccontextmanager
async def running_scheduler(settings: Settings, instance: str) -> AsyncIterator[SchedulerSide]:
    side = open_scheduler_side(fast(settings), instance=instance)
    task = asyncio.create_task(side.scheduler.run())
    try:
        yield side
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await side.close()


async def scheduled_campaigns(
    settings: Settings, count: int, starts_at: datetime, ends_at: datetime, prefix: str = "timed"
) -> list[str]:
    """`count` campaigns scheduled through the unit of work, as the schedule route does."""
    side = open_command_side(settings)
    details = CampaignDetails.parse(
        name="Timed",
        description="",
        channel="push",
        budget_amount="1.00",
        budget_currency="EUR",
        starts_at=starts_at,
        ends_at=ends_at,
        tags=[],
    )
    ids = []
    now = datetime.now(UTC)
    try:
        for n in range(count):
            async with side.unit_of_work() as uow:
                campaign = Campaign.create(
                    campaign_id=f"{prefix}-{n}", owner_id="owner", details=details, now=now
                )
                campaign.schedule(now)
                uow.campaigns.add(campaign)
                await uow.commit(actor_id="owner")
            ids.append(campaign.id)
    finally:
        await side.close()
    return ids


@pytest.fixture
async def owner(api: httpx.AsyncClient) -> Account:
    return await signed_up(api)


# ---------------------------------------------------------------- routes and timers


async def test_schedule_stores_the_timer_and_rescheduling_and_unscheduling_move_or_drop_it(
    api: httpx.AsyncClient, owner: Account, db: AsyncDatabase[Document]
) -> None:
    campaign_id = await create_campaign(api, owner)
    assert await timer_of(db, campaign_id) is None

    scheduled = await api.post(f"/campaigns/{campaign_id}/schedule", headers=owner.auth)
    assert scheduled.status_code == 200, scheduled.text
    assert scheduled.json()["version"] == 2
    state = await db["campaigns"].find_one({"_id": campaign_id})
    assert state is not None and state["status"] == "scheduled"
    timer = await timer_of(db, campaign_id)
    assert timer is not None
    assert (timer["action"], timer["due_at"]) == ("activate", STARTS_AT)
    assert timer["timer_id"] == f"timer:{campaign_id}:v2:activate"

    moved = await api.patch(
        f"/campaigns/{campaign_id}",
        json={"starts_at": (STARTS_AT + timedelta(days=4)).isoformat()},
        headers={**owner.auth, **if_match(2)},
    )
    assert moved.status_code == 200, moved.text
    timer = await timer_of(db, campaign_id)
    assert timer is not None and timer["due_at"] == STARTS_AT + timedelta(days=4)

    unscheduled = await api.post(f"/campaigns/{campaign_id}/unschedule", headers=owner.auth)
    assert unscheduled.status_code == 200, unscheduled.text
    assert await timer_of(db, campaign_id) is None
    types = [e["event_type"] for e in await events_of(db, campaign_id)]
    assert types == ["CampaignCreated", "CampaignScheduled", "CampaignUpdated", "CampaignUnscheduled"]


@pytest.mark.parametrize("action", ["schedule", "activate"])
async def test_schedule_or_activate_is_refused_with_409_once_ends_at_has_passed_changing_nothing(
    api: httpx.AsyncClient, owner: Account, db: AsyncDatabase[Document], action: str
) -> None:
    campaign_id = await create_campaign(
        api, owner, starts_at="2020-01-01T00:00:00Z", ends_at="2020-02-01T00:00:00Z"
    )
    refused = await api.post(f"/campaigns/{campaign_id}/{action}", headers=owner.auth)
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert f"cannot {action} the campaign: its ends_at has passed" in refused.json()["detail"]
    state = await db["campaigns"].find_one({"_id": campaign_id})
    assert state is not None and (state["status"], state["version"]) == ("draft", 1)
    assert [e["event_type"] for e in await events_of(db, campaign_id)] == ["CampaignCreated"]
    assert await timers_in(db) == 0


async def test_schedule_after_starts_at_activates_at_once_and_sets_the_completion_timer(
    api: httpx.AsyncClient, owner: Account, db: AsyncDatabase[Document]
) -> None:
    campaign_id = await create_campaign(api, owner, starts_at="2020-01-01T00:00:00Z")
    response = await api.post(f"/campaigns/{campaign_id}/schedule", headers={**owner.auth, **if_match(1)})
    assert response.status_code == 200, response.text
    assert response.json()["version"] == 3
    state = await db["campaigns"].find_one({"_id": campaign_id})
    assert state is not None and state["status"] == "active"
    timer = await timer_of(db, campaign_id)
    assert timer is not None and timer["action"] == "complete"


async def test_deleting_a_scheduled_campaign_cancels_its_timer_in_the_same_transaction(
    api: httpx.AsyncClient, owner: Account, db: AsyncDatabase[Document]
) -> None:
    campaign_id = await create_campaign(api, owner)
    await api.post(f"/campaigns/{campaign_id}/schedule", headers=owner.auth)
    stale = await api.delete(f"/campaigns/{campaign_id}", headers={**owner.auth, **if_match(1)})
    assert stale.status_code == 412
    assert await timer_of(db, campaign_id) is not None
    deleted = await api.delete(f"/campaigns/{campaign_id}", headers=owner.auth)
    assert deleted.status_code == 204
    assert await timer_of(db, campaign_id) is None


# ---------------------------------------------------------------- the scheduler


async def test_the_scheduler_activates_and_completes_through_the_command_path(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    now = datetime.now(UTC)
    [campaign_id] = await scheduled_campaigns(
        settings, 1, now + timedelta(seconds=1), now + timedelta(seconds=2)
    )
    async with running_scheduler(settings, "s-1") as side:

        async def completed() -> bool:
            return len(await events_of(db, campaign_id)) == 4

        await eventually(completed)
        assert side.report.fired_total == 2
    events = await events_of(db, campaign_id)
    assert [e["event_type"] for e in events] == [
        "CampaignCreated",
        "CampaignScheduled",
        "CampaignActivated",
        "CampaignCompleted",
    ]
    activated, completed_ = events[2], events[3]
    assert activated["actor_id"] == completed_["actor_id"] == "scheduler"
    assert activated["causation_id"] == f"timer:{campaign_id}:v2:activate"
    assert completed_["causation_id"] == f"timer:{campaign_id}:v3:complete"
    assert activated["payload"]["timer"]["timer_id"] == activated["causation_id"]
    due_at = datetime.fromisoformat(activated["payload"]["timer"]["due_at"])
    assert due_at == datetime.fromisoformat(iso(now + timedelta(seconds=1)))
    assert await timers_in(db) == 0
    state = await db["campaigns"].find_one({"_id": campaign_id})
    assert state is not None and (state["status"], state["version"]) == ("completed", 4)


async def test_a_transition_due_while_no_scheduler_ran_fires_once_at_start_with_its_lateness(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    now = datetime.now(UTC)
    # Far enough ahead that scheduling it on a busy server does not find it due already (the
    # schedule command would activate it itself: no timer, no scheduler).
    due = now + timedelta(seconds=2)
    [campaign_id] = await scheduled_campaigns(settings, 1, due, now + timedelta(hours=1))

    async def overdue() -> bool:
        return datetime.now(UTC) > due + timedelta(seconds=1)

    await eventually(overdue)
    async with running_scheduler(settings, "restarted"):

        async def activated() -> bool:
            return len(await events_of(db, campaign_id)) == 3

        await eventually(activated)
    [activation] = [e for e in await events_of(db, campaign_id) if e["event_type"] == "CampaignActivated"]
    assert activation["payload"]["timer"]["lateness_ms"] >= 1000
    timer = await timer_of(db, campaign_id)
    assert timer is not None and timer["action"] == "complete"


async def test_two_schedulers_at_once_fire_every_transition_exactly_once(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    now = datetime.now(UTC)
    count = 30
    ids = await scheduled_campaigns(settings, count, now + timedelta(seconds=2), now + timedelta(hours=1))
    async with running_scheduler(settings, "a") as first, running_scheduler(settings, "b") as second:

        async def all_activated() -> bool:
            return await db["events"].count_documents({"event_type": "CampaignActivated"}) >= count

        await eventually(all_activated)
        await first.scheduler.drain()
        await second.scheduler.drain()
        # A second firing would show as a second event, or as a firing counted twice.
        await asyncio.sleep(0.5)
        fired = first.report.fired_total + second.report.fired_total
    per_campaign: dict[str, int] = {}
    for event in await db["events"].find({"event_type": "CampaignActivated"}).to_list():
        per_campaign[event["aggregate_id"]] = per_campaign.get(event["aggregate_id"], 0) + 1
    assert per_campaign == dict.fromkeys(ids, 1)
    assert fired == count


async def test_one_scheduler_holds_the_lease_another_takes_over_when_it_dies_or_at_once_when_it_stops(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    short = settings.model_copy(update={"scheduler_lease_seconds": 0.5})
    first = open_scheduler_side(short, instance="x")
    second = open_scheduler_side(short, instance="y")
    third = open_scheduler_side(short, instance="z")
    try:
        assert await first.lease.try_acquire()
        assert first.scheduler.leading
        assert not await second.lease.try_acquire()
        assert not second.scheduler.leading
        # The first dies (no renewal): its lease expires on the database's clock.
        assert await first.lease.current_holder() == "x"

        async def taken_over() -> bool:
            return await second.lease.try_acquire()

        await eventually(taken_over, within=5.0)
        assert await second.lease.current_holder() == "y"
        # A clean stop hands the lease over at once, before its term.
        await second.lease.release()
        assert await third.lease.try_acquire()
    finally:
        for side in (first, second, third):
            await side.close()


async def test_a_read_takes_the_earliest_due_timers_up_to_its_limit_and_from_a_due_time(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)  # due times are stored to the millisecond
    early, late = now + timedelta(hours=1), now + timedelta(hours=1, seconds=1)
    early_ids = await scheduled_campaigns(settings, 3, early, now + timedelta(hours=2), prefix="early")
    late_ids = await scheduled_campaigns(settings, 3, late, now + timedelta(hours=2), prefix="late")
    later = await scheduled_campaigns(
        settings, 1, now + timedelta(hours=3), now + timedelta(hours=4), prefix="x"
    )
    side = open_scheduler_side(settings, instance="reader")
    before = await db["campaigns"].find().sort("_id").to_list()
    try:
        far = now + timedelta(hours=2)
        first = await side.timers.read_due(far, 4)
        assert [t.due_at for t in first] == [early] * 3 + [late]
        assert {t.campaign_id for t in first[:3]} == set(early_ids)
        rest = await side.timers.read_due(far, 10, since=late)
        assert {t.campaign_id for t in rest} == set(late_ids)
        assert later[0] not in {t.campaign_id for t in await side.timers.read_due(far, 10)}
        # Reading writes nothing: the campaigns and their timers are as the commands left them.
        assert await db["campaigns"].find().sort("_id").to_list() == before
    finally:
        await side.close()


async def test_a_batch_whose_later_id_list_loses_its_version_check_commits_nothing_and_fires_each_once(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    now = datetime.now(UTC)
    due = now + timedelta(seconds=30)
    ids = await scheduled_campaigns(settings, 60, due, now + timedelta(hours=2))
    side = open_scheduler_side(settings, instance="batch")
    try:
        timers = await side.timers.read_due(due, 100)
        assert len(timers) == 60
        moved = timers[-1].campaign_id  # in the second list of ids the batch's update sends
        uow = side.scheduler.unit_of_work()
        read = uow.campaigns.get_many
        moves: list[str] = []

        async def read_then_another_command_moves_one(campaign_ids: list[str]) -> dict[str, Campaign]:
            found = await read(campaign_ids)
            if not moves:
                # A command commits on that campaign between the firing's read and its commit.
                moves.append(moved)
                await db["campaigns"].update_one({"_id": moved}, {"$inc": {"version": 1}})
            return found

        uow.campaigns.get_many = read_then_another_command_moves_one  # type: ignore[method-assign]
        # Fired as at their due time (the scheduler's clock is its own business).
        results = await fire_due_transitions(FireDueTransitions(timers=timers, now=due), uow)
        # The batch lost its version check, then fired on fresh reads (the moved one on its own).
        assert all(result is not None for result in results)
        assert moves == [moved]
        for campaign_id in ids:
            events = await events_of(db, campaign_id)
            assert [e["event_type"] for e in events].count("CampaignActivated") == 1
        # The moved one was decided again on its fresh state, not written by the batch.
        [activation] = [e for e in await events_of(db, moved) if e["event_type"] == "CampaignActivated"]
        state = await db["campaigns"].find_one({"_id": moved})
        assert state is not None and (state["status"], state["version"]) == ("active", 4)
        assert activation["aggregate_version"] == 4
    finally:
        await side.close()


async def test_a_batch_beside_an_unscheduling_fires_the_others_once_and_fired_again_records_nothing(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    now = datetime.now(UTC)
    due = now + timedelta(seconds=30)
    ids = await scheduled_campaigns(settings, 5, due, now + timedelta(hours=2))
    side = open_scheduler_side(settings, instance="batch")
    users = open_command_side(settings)
    try:
        timers = await side.timers.read_due(due, 100)
        assert len(timers) == 5
        unscheduled = timers[2].campaign_id
        uow = side.scheduler.unit_of_work()
        read = uow.campaigns.get_many
        unscheduling: list[str] = []

        async def read_then_the_owner_unschedules_one(campaign_ids: list[str]) -> dict[str, Campaign]:
            found = await read(campaign_ids)
            if not unscheduling:
                # The owner's command commits between the firing's read and its commit.
                unscheduling.append(unscheduled)
                await change_campaign_status(
                    ChangeCampaignStatus(actor=Actor("owner"), campaign_id=unscheduled, action="unschedule"),
                    users.unit_of_work(),
                )
            return found

        uow.campaigns.get_many = read_then_the_owner_unschedules_one  # type: ignore[method-assign]
        results = await fire_due_transitions(FireDueTransitions(timers=timers, now=due), uow)
        fired = {t.campaign_id for t, r in zip(timers, results, strict=True) if r is not None}
        assert fired == set(ids) - {unscheduled}
        # The same batch fired again (a second scheduler, or a retry) records nothing more.
        batch = FireDueTransitions(timers=timers, now=due)
        again = await fire_due_transitions(batch, side.scheduler.unit_of_work())
        assert again == [None] * 5
        for timer in timers:
            events = await events_of(db, timer.campaign_id)
            activations = [e for e in events if e["event_type"] == "CampaignActivated"]
            if timer.campaign_id == unscheduled:
                assert activations == []
                assert events[-1]["event_type"] == "CampaignUnscheduled"
                continue
            [activation] = activations
            assert activation["actor_id"] == SCHEDULER_ACTOR_ID
            assert activation["causation_id"] == timer.timer_id
            assert activation["payload"]["timer"]["timer_id"] == timer.timer_id
        state = await db["campaigns"].find_one({"_id": unscheduled})
        assert state is not None and state["status"] == "draft"
        assert await timer_of(db, unscheduled) is None
        # The batch's one update gave each campaign its own completion timer, as the domain sets it.
        for campaign_id in fired:
            state = await db["campaigns"].find_one({"_id": campaign_id})
            assert state is not None and state["version"] == 3
            assert state["timer"] == {
                "timer_id": f"timer:{campaign_id}:v3:complete",
                "action": "complete",
                "target_at": state["ends_at"],
                "due_at": state["ends_at"],
            }
    finally:
        await users.close()
        await side.close()


async def test_the_monitor_shows_the_scheduler_its_next_due_time_and_its_lateness(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    now = datetime.now(UTC)
    # Far enough ahead that scheduling it on a busy server does not find it already due (then
    # the schedule command itself activates it, and the scheduler never fires).
    [soon] = await scheduled_campaigns(settings, 1, now + timedelta(seconds=2), now + timedelta(hours=2))
    async with running_scheduler(settings, "watched") as side:

        async def fired() -> bool:
            return side.report.fired_total == 1

        await eventually(fired)
        queue = await side.timers.queue(
            datetime.now(UTC),
            overdue_limit=settings.scheduler_overdue_count_limit,
            pending_limit=settings.scheduler_pending_count_limit,
        )
        await side.status.publish(side.instance, side.report.status(queue, datetime.now(UTC)))
        redis = connect_redis(settings)
        try:
            view = (await MonitorState(redis, settings.redis_prefix, [], []).services())["scheduler"]
        finally:
            await redis.aclose()
    assert view["state"] == "running"
    assert view["pending"] == 1  # the completion timer of the campaign just activated
    timer = await timer_of(db, soon)
    assert timer is not None
    assert datetime.fromisoformat(view["next_due_at"]) == timer["due_at"]
    assert view["last_lateness_ms"] is not None and view["fired_total"] == 1
    assert set(view["instances"]) == {"watched"}


async def test_timers_an_earlier_release_kept_apart_move_into_their_campaigns_once(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    due = now + timedelta(hours=1)
    adopted, newer = await scheduled_campaigns(settings, 2, due, now + timedelta(hours=2), prefix="legacy")
    # As an earlier release left them: each timer in a collection of its own, none in the campaign;
    # but a command since rewrote the second campaign's timer (a later due time, its own id).
    for campaign_id in (adopted, newer):
        timer = await timer_of(db, campaign_id)
        assert timer is not None
        await db[LEGACY_DUE_TRANSITIONS].insert_one({"_id": campaign_id, **timer})
    await db["campaigns"].update_one({"_id": adopted}, {"$unset": {"timer": ""}})
    rewritten = {
        "timer_id": f"timer:{newer}:v9:activate",
        "action": "activate",
        "target_at": due,
        "due_at": due,
    }
    await db["campaigns"].update_one({"_id": newer}, {"$set": {"timer": rewritten}})
    side = open_scheduler_side(settings, instance="adopter")
    try:
        assert await side.timers.adopt_legacy() == 2
        assert await timer_of(db, adopted) == {
            "timer_id": f"timer:{adopted}:v2:activate",
            "action": "activate",
            "target_at": due,
            "due_at": due,
        }
        assert await timer_of(db, newer) == rewritten  # the command's timer is kept
        assert LEGACY_DUE_TRANSITIONS not in await db.list_collection_names()
        assert {t.campaign_id for t in await side.timers.read_due(due, 10)} == {adopted, newer}
        assert await side.timers.adopt_legacy() == 0  # once: nothing is left to move
    finally:
        await side.close()
