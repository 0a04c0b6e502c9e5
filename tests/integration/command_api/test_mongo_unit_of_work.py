"""The MongoDB unit of work: state and events commit together or not at all, versions guard writes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from command_api.adapters.mongo_documents import campaign_document
from command_api.adapters.mongo_schema import Document
from command_api.adapters.mongo_unit_of_work import MongoUnitOfWork
from command_api.application.errors import ConcurrencyConflict, EmailTaken
from command_api.bootstrap import CommandSide, open_command_side
from command_api.domain.campaign import SCHEDULER_ACTOR_ID, Campaign, CampaignDetails
from command_api.domain.user import User
from events import from_log_document
from service_runtime.settings import Settings

NOW = datetime(2027, 1, 10, tzinfo=UTC)


@pytest.fixture
async def side(settings: Settings) -> AsyncIterator[CommandSide]:
    side = open_command_side(settings)
    yield side
    await side.close()


def draft(campaign_id: str = "c-1") -> Campaign:
    details = CampaignDetails.parse(
        name="Spring",
        description="",
        channel="sms",
        budget_amount="10.00",
        budget_currency="EUR",
        starts_at=datetime(2027, 3, 1, tzinfo=UTC),
        ends_at=datetime(2027, 3, 2, tzinfo=UTC),
        tags=[],
    )
    return Campaign.create(campaign_id=campaign_id, owner_id="owner", details=details, now=NOW)


async def stored_campaign(side: CommandSide) -> Campaign:
    async with side.unit_of_work() as uow:
        campaign = await uow.campaigns.get("c-1")
    assert campaign is not None
    return campaign


async def test_state_and_events_are_committed_together_as_log_documents(
    side: CommandSide, db: AsyncDatabase[Document]
) -> None:
    async with side.unit_of_work() as uow:
        uow.campaigns.add(draft())
        await uow.commit(actor_id="owner")
    [document] = await db["events"].find().to_list()
    assert "published" not in document  # the relay keeps a watermark, never marks an event
    assert document["recorded_at"] is not None
    assert document["_id"] == document["event_id"]
    envelope = from_log_document(document)
    assert (envelope.event_type, envelope.aggregate_id, envelope.aggregate_version) == (
        "CampaignCreated",
        "c-1",
        1,
    )
    assert envelope.actor_id == "owner"
    assert (await stored_campaign(side)).version == 1


async def test_a_failing_event_insert_leaves_the_state_unchanged(
    side: CommandSide, db: AsyncDatabase[Document]
) -> None:
    async with side.unit_of_work() as uow:
        uow.campaigns.add(draft())
        await uow.commit(actor_id="owner")
    # A stray event already holds (c-1, version 2): the next command's event insert must fail.
    stray = {
        **(await db["events"].find_one({"aggregate_id": "c-1"}) or {}),
        "_id": "stray",
        "aggregate_version": 2,
    }
    await db["events"].insert_one(stray)

    async with side.unit_of_work() as uow:
        campaign = await uow.campaigns.get("c-1")
        assert campaign is not None
        campaign.activate(NOW)
        uow.campaigns.save(campaign)
        with pytest.raises(ConcurrencyConflict):
            await uow.commit(actor_id="owner")

    state = await db["campaigns"].find_one({"_id": "c-1"})
    assert state is not None
    assert (state["status"], state["version"]) == ("draft", 1)
    assert await db["events"].count_documents({"event_type": "CampaignActivated"}) == 0


async def test_of_two_concurrent_updates_on_one_version_exactly_one_wins(
    side: CommandSide, db: AsyncDatabase[Document]
) -> None:
    async with side.unit_of_work() as uow:
        uow.campaigns.add(draft())
        await uow.commit(actor_id="owner")

    async def activate_and_commit(loaded: asyncio.Event, go: asyncio.Event) -> str:
        async with side.unit_of_work() as uow:
            campaign = await uow.campaigns.get("c-1")
            assert campaign is not None
            loaded.set()
            await go.wait()  # both decided on version 1 before either commits
            campaign.activate(NOW)
            uow.campaigns.save(campaign)
            try:
                await uow.commit(actor_id="owner")
            except ConcurrencyConflict:
                return "conflict"
            return "committed"

    loaded = [asyncio.Event(), asyncio.Event()]
    go = asyncio.Event()
    racers = [asyncio.create_task(activate_and_commit(loaded[i], go)) for i in range(2)]
    await asyncio.gather(*(e.wait() for e in loaded))
    go.set()
    assert sorted(await asyncio.gather(*racers)) == ["committed", "conflict"]
    state = await db["campaigns"].find_one({"_id": "c-1"})
    assert state is not None and state["version"] == 2
    assert await db["events"].count_documents({"aggregate_id": "c-1"}) == 2


async def test_a_transient_write_conflict_is_retried_until_the_command_commits(
    side: CommandSide, db: AsyncDatabase[Document]
) -> None:
    async with side.unit_of_work() as uow:
        uow.campaigns.add(draft())
        await uow.commit(actor_id="owner")
    # Another transaction holds a write on the same document (without changing its version).
    async with side.mongo.start_session() as blocker:
        await blocker.start_transaction()
        await side.db["campaigns"].update_one({"_id": "c-1"}, {"$set": {"touched": True}}, session=blocker)
        async with side.unit_of_work() as uow:
            campaign = await uow.campaigns.get("c-1")
            assert campaign is not None
            campaign.activate(NOW)
            uow.campaigns.save(campaign)
            committing = asyncio.create_task(uow.commit(actor_id="owner"))
            await asyncio.sleep(0.05)
            assert not committing.done()  # it meets the write conflict and retries
            await blocker.commit_transaction()
            await committing
    state = await db["campaigns"].find_one({"_id": "c-1"})
    assert state is not None
    assert (state["status"], state["version"], state["touched"]) == ("active", 2, True)


async def test_a_taken_email_aborts_the_registration_and_writes_no_event(
    side: CommandSide, db: AsyncDatabase[Document]
) -> None:
    for user_id in ("u-1", "u-2"):
        async with side.unit_of_work() as uow:
            uow.users.add(
                User.register(user_id=user_id, email="same@example.com", name="S", password_hash="h", now=NOW)
            )
            if user_id == "u-1":
                await uow.commit(actor_id=user_id)
            else:
                with pytest.raises(EmailTaken):
                    await uow.commit(actor_id=user_id)
    assert await db["users"].count_documents({}) == 1
    assert await db["events"].count_documents({}) == 1


async def test_indexes_exist_after_the_first_unit_of_work(
    side: CommandSide, db: AsyncDatabase[Document]
) -> None:
    async with side.unit_of_work():
        pass
    events = await db["events"].index_information()
    assert events["aggregate_version_unique"]["unique"] is True
    assert events["recorded_at"]["key"] == [("recorded_at", 1)]  # the relay's backlog counts by it
    assert (await db["users"].index_information())["email_unique"]["unique"] is True


async def scheduled(side: CommandSide, count: int) -> list[Campaign]:
    """`count` campaigns scheduled through the unit of work (activation timers at starts_at)."""
    campaigns = []
    for n in range(count):
        campaign = draft(f"c-{n}")
        campaign.schedule(NOW)
        async with side.unit_of_work() as uow:
            uow.campaigns.add(campaign)
            await uow.commit(actor_id="owner")
        campaigns.append(campaign)
    return campaigns


async def test_save_many_writes_what_save_would_with_one_update_for_campaigns_changed_alike(
    side: CommandSide, db: AsyncDatabase[Document]
) -> None:
    stored = await scheduled(side, 5)
    fire_at = datetime(2027, 3, 1, 0, 0, 1, tzinfo=UTC)
    async with side.unit_of_work() as uow:
        campaigns = await uow.campaigns.get_many([c.id for c in stored])
        for campaign in campaigns.values():
            timer = campaign.due_timer()
            assert timer is not None and campaign.fire(timer, fire_at)
        next_timers = {c.id: c.due_timer() for c in campaigns.values()}
        # With each campaign's own next timer, as `save` writes it (the update computes it).
        expected = {c.id: campaign_document(c, next_timers[c.id]) for c in campaigns.values()}
        uow.campaigns.save_many(list(campaigns.values()))
        await uow.commit(actor_id=SCHEDULER_ACTOR_ID)
    assert {doc["_id"]: doc for doc in await db["campaigns"].find().to_list()} == expected
    for timer in next_timers.values():
        assert timer is not None and timer.action == "complete"
    activations = await db["events"].find({"event_type": "CampaignActivated"}).to_list()
    assert sorted(e["aggregate_id"] for e in activations) == sorted(expected)
    for event in activations:
        assert (event["aggregate_version"], event["actor_id"]) == (3, SCHEDULER_ACTOR_ID)
        assert event["causation_id"] == f"timer:{event['aggregate_id']}:v2:activate"


async def test_save_many_commits_nothing_when_one_campaign_moved_since_it_was_read(
    side: CommandSide, db: AsyncDatabase[Document]
) -> None:
    stored = await scheduled(side, 5)
    fire_at = datetime(2027, 3, 1, 0, 0, 1, tzinfo=UTC)
    async with side.unit_of_work() as uow:
        campaigns = await uow.campaigns.get_many([c.id for c in stored])
        for campaign in campaigns.values():
            timer = campaign.due_timer()
            assert timer is not None and campaign.fire(timer, fire_at)
        # A user's command on one of them commits meanwhile.
        async with side.unit_of_work() as other:
            moved = await other.campaigns.get("c-3")
            assert moved is not None
            moved.unschedule(NOW)
            other.campaigns.save(moved)
            await other.commit(actor_id="owner")
        uow.campaigns.save_many(list(campaigns.values()))
        with pytest.raises(ConcurrencyConflict):
            await uow.commit(actor_id=SCHEDULER_ACTOR_ID)
    assert await db["events"].count_documents({"event_type": "CampaignActivated"}) == 0
    statuses = {doc["_id"]: doc["status"] for doc in await db["campaigns"].find().to_list()}
    assert statuses == {**{c.id: "scheduled" for c in stored}, "c-3": "draft"}
    timers = {
        doc["_id"]: doc["timer"]["action"] for doc in await db["campaigns"].find().to_list() if "timer" in doc
    }
    assert timers == {c.id: "activate" for c in stored if c.id != "c-3"}


async def test_many_inserts_into_one_collection_go_as_one_statement_and_keep_their_duplicate_errors(
    side: CommandSide, db: AsyncDatabase[Document]
) -> None:
    """A batch's event inserts go as one `insert`: a version another command took still aborts
    the whole transaction as a conflict."""
    stored = await scheduled(side, 5)
    fire_at = datetime(2027, 3, 1, 0, 0, 1, tzinfo=UTC)
    async with side.unit_of_work() as uow:
        campaigns = await uow.campaigns.get_many([c.id for c in stored])
        for campaign in campaigns.values():
            timer = campaign.due_timer()
            assert timer is not None and campaign.fire(timer, fire_at)
        for campaign in campaigns.values():
            uow.campaigns.save(campaign)
        # The version the last one records is taken already (its state document not yet moved).
        await db["events"].insert_one({"aggregate_id": "c-4", "aggregate_version": 3, "event_type": "X"})
        with pytest.raises(ConcurrencyConflict, match="c-4 already has version 3"):
            await uow.commit(actor_id=SCHEDULER_ACTOR_ID)
    assert await db["events"].count_documents({"event_type": "CampaignActivated"}) == 0
    assert await db["campaigns"].count_documents({"status": "scheduled"}) == 5


async def test_no_more_transactions_run_at_once_than_the_process_allows(settings: Settings) -> None:
    # mongo_transactions_in_flight: the rest wait in the process, not in the server's registry.
    side = open_command_side(settings.model_copy(update={"mongo_transactions_in_flight": 2}))
    running = peak = 0
    start_session = side.mongo.start_session

    class Counted:
        def __init__(self, session: Any) -> None:
            self.session = session

        async def __aenter__(self) -> Any:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.05)  # long enough for the others to pile up, were they let in
            return await self.session.__aenter__()

        async def __aexit__(self, *exc: Any) -> Any:
            nonlocal running
            running -= 1
            return await self.session.__aexit__(*exc)

    def counted_session(*args: Any, **kwargs: Any) -> Counted:
        return Counted(start_session(*args, **kwargs))

    side.mongo.start_session = counted_session  # type: ignore[method-assign]

    async def create(n: int) -> None:
        async with side.unit_of_work() as uow:
            uow.campaigns.add(draft(f"c-{n}"))
            await uow.commit(actor_id="owner")

    try:
        await asyncio.gather(*(create(n) for n in range(8)))
        assert peak == 2
        assert await side.db["campaigns"].count_documents({}) == 8
        assert await side.db["events"].count_documents({}) == 8
    finally:
        await side.close()


async def one_at_a_time(settings: Settings) -> CommandSide:
    """A command side that runs one transaction at a time: what queues meanwhile goes as a group."""
    return open_command_side(settings.model_copy(update={"mongo_transactions_in_flight": 1}))


async def test_commands_queued_for_a_transaction_commit_together_as_if_each_alone(settings: Settings) -> None:
    side = await one_at_a_time(settings)
    assert side.transactions is not None
    go = asyncio.Event()

    async def create(n: int) -> None:
        async with side.unit_of_work() as uow:
            uow.campaigns.add(draft(f"c-{n}"))
            await go.wait()
            await uow.commit(actor_id="owner")

    try:
        creating = [asyncio.create_task(create(n)) for n in range(8)]
        await asyncio.sleep(0.05)
        go.set()  # the first commits alone; the seven behind it queue and go as one transaction
        await asyncio.gather(*creating)
        assert (side.transactions.transactions, side.transactions.grouped_commands) == (2, 7)
        for n in range(8):
            [event] = await side.db["events"].find({"aggregate_id": f"c-{n}"}).to_list()
            state = await side.db["campaigns"].find_one({"_id": f"c-{n}"})
            assert state is not None and state["version"] == 1
            assert from_log_document(event).event_type == "CampaignCreated"
    finally:
        await side.close()


async def test_a_group_with_a_conflict_and_a_taken_email_commits_every_other_command(
    settings: Settings,
) -> None:
    side = await one_at_a_time(settings)
    try:
        async with side.unit_of_work() as uow:
            uow.campaigns.add(draft("c-0"))
            await uow.commit(actor_id="owner")
        go = asyncio.Event()

        async def create(uow: MongoUnitOfWork, n: int) -> None:
            uow.campaigns.add(draft(f"c-{n}"))

        async def activate(uow: MongoUnitOfWork, _: int) -> None:
            campaign = await uow.campaigns.get("c-0")  # both read version 1
            assert campaign is not None
            campaign.activate(NOW)
            uow.campaigns.save(campaign)

        async def register(uow: MongoUnitOfWork, n: int) -> None:
            user = User.register(
                user_id=f"u-{n}", email="same@example.com", name="S", password_hash="h", now=NOW
            )
            uow.users.add(user)

        async def command(stage: Callable[[MongoUnitOfWork, int], Awaitable[None]], n: int) -> str:
            async with side.unit_of_work() as uow:
                await stage(uow, n)
                await go.wait()
                try:
                    await uow.commit(actor_id="owner")
                except (ConcurrencyConflict, EmailTaken) as exc:
                    return type(exc).__name__
                return "committed"

        stages = [create, activate, activate, register, register, create]
        commands = [asyncio.create_task(command(stage, n)) for n, stage in enumerate(stages, start=1)]
        await asyncio.sleep(0.05)
        # The first alone; the five behind it as a group, refused for the second registration's
        # e-mail, then for the second activation's version: the three others commit together, then
        # those two run alone and get their own answers.
        go.set()
        outcomes = await asyncio.gather(*commands)
        ok = "committed"
        assert outcomes == [ok, ok, "ConcurrencyConflict", ok, "EmailTaken", ok]
        assert side.transactions is not None
        assert (side.transactions.transactions, side.transactions.grouped_commands) == (7, 3)
        c0 = await side.db["campaigns"].find_one({"_id": "c-0"})
        assert c0 is not None and (c0["status"], c0["version"]) == ("active", 2)
        assert await side.db["campaigns"].count_documents({"_id": {"$in": ["c-1", "c-6"]}}) == 2
        assert [u["_id"] for u in await side.db["users"].find().to_list()] == ["u-4"]
        counts = {
            aggregate: await side.db["events"].count_documents({"aggregate_id": aggregate})
            for aggregate in ("c-0", "c-1", "c-6", "u-4", "u-5")
        }
        assert counts == {"c-0": 2, "c-1": 1, "c-6": 1, "u-4": 1, "u-5": 0}
    finally:
        await side.close()
