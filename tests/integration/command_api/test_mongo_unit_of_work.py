"""The MongoDB unit of work: state and events commit together or not at all, versions guard writes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from pymongo.asynchronous.database import AsyncDatabase

from command_api.adapters.mongo_schema import Document
from command_api.application.errors import ConcurrencyConflict, EmailTaken
from command_api.bootstrap import CommandSide, open_command_side
from command_api.domain.campaign import Campaign, CampaignDetails
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
    assert document["published"] is False
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
    assert "unpublished_in_order" in events
    assert (await db["users"].index_information())["email_unique"]["unique"] is True
