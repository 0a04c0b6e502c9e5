"""/campaigns over HTTP against real MongoDB: every route and every status of the command table."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from command_api.adapters.mongo_schema import Document
from command_api.entrypoints.admin import grant_admin
from service_runtime.settings import Settings
from service_runtime.tokens import issue_access_token
from tests.integration.command_api.accounts import (
    CAMPAIGN,
    Account,
    create_campaign,
    if_match,
    log_in,
    signed_up,
)
from tests.integration.command_api.conftest import running_api
from tests.integration.command_api.test_auth_api import assert_problem, fields_of


@pytest.fixture
async def owner(api: httpx.AsyncClient) -> Account:
    return await signed_up(api)


async def events_of(db: AsyncDatabase[Document], aggregate_id: str) -> list[Document]:
    return await db["events"].find({"aggregate_id": aggregate_id}).sort("aggregate_version").to_list()


# ---------------------------------------------------------------- create


async def test_create_answers_201_with_location_and_records_campaign_created(
    api: httpx.AsyncClient, owner: Account, db: AsyncDatabase[Document]
) -> None:
    response = await api.post("/campaigns", json=CAMPAIGN, headers=owner.auth)
    assert response.status_code == 201
    body = response.json()
    assert body["version"] == 1
    assert response.headers["location"] == f"/campaigns/{body['id']}"
    assert response.headers["etag"] == '"1"'
    state = await db["campaigns"].find_one({"_id": body["id"]})
    assert state is not None
    assert (state["owner_id"], state["status"], state["version"]) == (owner.user_id, "draft", 1)
    assert state["budget"] == {"amount": "2500.00", "currency": "EUR"}
    [event] = await events_of(db, body["id"])
    assert event["event_type"] == "CampaignCreated"
    assert event["_id"] == event["event_id"]
    assert event["actor_id"] == owner.user_id
    assert "published" not in event
    assert event["payload"]["name"] == "Spring launch"


async def test_every_event_carries_the_request_correlation_id(
    api: httpx.AsyncClient, owner: Account, db: AsyncDatabase[Document]
) -> None:
    response = await api.post(
        "/campaigns", json=CAMPAIGN, headers={**owner.auth, "X-Correlation-ID": "trace-42"}
    )
    assert response.headers["x-correlation-id"] == "trace-42"
    [event] = await events_of(db, response.json()["id"])
    assert event["correlation_id"] == "trace-42"


def forged_token(settings: Settings, user_id: str) -> str:
    now = datetime.now(UTC)
    claims = {
        "sub": user_id,
        "roles": ["admin"],
        "type": "access",
        "jti": "x",
        "iat": now,
        "exp": now + timedelta(minutes=5),
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
    }
    return jwt.encode(claims, "not-the-secret-not-the-secret-not-the-secret", algorithm="HS256")


@pytest.mark.parametrize("kind", ["missing", "expired", "forged", "garbage", "refresh-token"])
async def test_commands_need_a_valid_access_token(
    api: httpx.AsyncClient, owner: Account, settings: Settings, db: AsyncDatabase[Document], kind: str
) -> None:
    headers = {
        "missing": {},
        "expired": {
            "Authorization": "Bearer "
            + issue_access_token(
                settings, owner.user_id, ["user"], now=datetime.now(UTC) - timedelta(hours=2)
            )
        },
        "forged": {"Authorization": f"Bearer {forged_token(settings, owner.user_id)}"},
        "garbage": {"Authorization": "Bearer not.a.jwt"},
        "refresh-token": {"Authorization": f"Bearer {owner.refresh_token}"},
    }[kind]
    response = await api.post("/campaigns", json=CAMPAIGN, headers=headers)
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert await db["campaigns"].count_documents({}) == 0


@pytest.mark.parametrize(
    ("changes", "fields"),
    [
        ({"name": "x" * 201}, {"name"}),
        ({"name": ""}, {"name"}),
        ({"channel": "fax"}, {"channel"}),
        ({"budget": {"amount": "-1", "currency": "EUR"}}, {"budget.amount"}),
        ({"budget": {"amount": "10", "currency": "eur"}}, {"budget.currency"}),
        ({"budget": {"amount": "10", "currency": "ZZZ"}}, {"budget.currency"}),
        ({"budget": {"amount": 10, "currency": "EUR"}}, {"budget.amount"}),
        ({"ends_at": "2027-02-01T00:00:00Z"}, {"ends_at"}),
        ({"starts_at": "2027-03-01T00:00:00"}, {"starts_at"}),
        ({"tags": ["ok", ""]}, {"tags.1"}),
        ({"name": {"$gt": ""}}, {"name"}),
        ({"owner_id": "someone-else"}, {"owner_id"}),
        ({"status": "active"}, {"status"}),
        ({"version": 7}, {"version"}),
        ({"surprise": True}, {"surprise"}),
        ({"channel": "fax", "name": ""}, {"channel", "name"}),
    ],
)
async def test_create_refuses_invalid_bodies_naming_each_field_and_writes_nothing(
    api: httpx.AsyncClient,
    owner: Account,
    db: AsyncDatabase[Document],
    changes: dict[str, Any],
    fields: set[str],
) -> None:
    response = await api.post("/campaigns", json={**CAMPAIGN, **changes}, headers=owner.auth)
    problem = assert_problem(response, 422)
    assert fields_of(problem) == fields
    assert await db["campaigns"].count_documents({}) == 0
    assert await db["events"].count_documents({"aggregate_type": "campaign"}) == 0


async def test_create_refuses_oversized_and_too_deeply_nested_bodies(
    api: httpx.AsyncClient, owner: Account, settings: Settings
) -> None:
    huge = {**CAMPAIGN, "description": "x" * settings.max_body_bytes}
    assert_problem(await api.post("/campaigns", json=huge, headers=owner.auth), 413)
    deep: Any = []
    for _ in range(settings.max_json_depth + 1):
        deep = [deep]
    assert_problem(await api.post("/campaigns", json={**CAMPAIGN, "tags": deep}, headers=owner.auth), 422)


async def test_idempotency_key_replays_the_first_answer_and_records_one_event(
    api: httpx.AsyncClient, owner: Account, db: AsyncDatabase[Document]
) -> None:
    headers = {**owner.auth, "Idempotency-Key": "create-1"}
    first = await api.post("/campaigns", json=CAMPAIGN, headers=headers)
    second = await api.post("/campaigns", json=CAMPAIGN, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers["location"] == first.headers["location"]
    assert await db["campaigns"].count_documents({}) == 1
    assert await db["events"].count_documents({"event_type": "CampaignCreated"}) == 1


async def test_idempotency_key_with_another_body_is_refused(
    api: httpx.AsyncClient, owner: Account, db: AsyncDatabase[Document]
) -> None:
    headers = {**owner.auth, "Idempotency-Key": "create-2"}
    assert (await api.post("/campaigns", json=CAMPAIGN, headers=headers)).status_code == 201
    other = await api.post("/campaigns", json={**CAMPAIGN, "name": "Other"}, headers=headers)
    problem = assert_problem(other, 422)
    assert fields_of(problem) == {"Idempotency-Key"}
    assert await db["campaigns"].count_documents({}) == 1


async def test_simultaneous_requests_under_one_idempotency_key_create_one_campaign(
    api: httpx.AsyncClient, owner: Account, db: AsyncDatabase[Document]
) -> None:
    headers = {**owner.auth, "Idempotency-Key": "burst"}
    responses = await asyncio.gather(
        *(api.post("/campaigns", json=CAMPAIGN, headers=headers) for _ in range(5))
    )
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1
    assert await db["events"].count_documents({"event_type": "CampaignCreated"}) == 1


async def test_idempotency_keys_belong_to_their_user(api: httpx.AsyncClient, owner: Account) -> None:
    other = await signed_up(api)
    first = await api.post("/campaigns", json=CAMPAIGN, headers={**owner.auth, "Idempotency-Key": "k"})
    second = await api.post("/campaigns", json=CAMPAIGN, headers={**other.auth, "Idempotency-Key": "k"})
    assert first.json()["id"] != second.json()["id"]


# ---------------------------------------------------------------- update


async def test_patch_with_if_match_records_only_the_changed_fields(
    api: httpx.AsyncClient, owner: Account, db: AsyncDatabase[Document]
) -> None:
    campaign_id = await create_campaign(api, owner)
    response = await api.patch(
        f"/campaigns/{campaign_id}",
        json={
            "name": "Summer launch",
            "channel": "email",
            "budget": {"amount": "3000.00", "currency": "EUR"},
        },
        headers={**owner.auth, **if_match(1)},
    )
    assert response.status_code == 200
    assert response.json() == {"id": campaign_id, "version": 2}
    assert response.headers["etag"] == '"2"'
    updated = (await events_of(db, campaign_id))[-1]
    assert updated["event_type"] == "CampaignUpdated"
    assert updated["payload"] == {"name": "Summer launch", "budget": {"amount": "3000.00", "currency": "EUR"}}
    state = await db["campaigns"].find_one({"_id": campaign_id})
    assert state is not None and (state["name"], state["version"]) == ("Summer launch", 2)


async def test_patch_without_if_match_is_428(api: httpx.AsyncClient, owner: Account) -> None:
    campaign_id = await create_campaign(api, owner)
    assert_problem(await api.patch(f"/campaigns/{campaign_id}", json={"name": "X"}, headers=owner.auth), 428)


@pytest.mark.parametrize("tag", ['"7"', '"0"', "banana"])
async def test_patch_on_a_stale_or_unknown_version_is_412_and_changes_nothing(
    api: httpx.AsyncClient, owner: Account, db: AsyncDatabase[Document], tag: str
) -> None:
    campaign_id = await create_campaign(api, owner)
    response = await api.patch(
        f"/campaigns/{campaign_id}", json={"name": "X"}, headers={**owner.auth, "If-Match": tag}
    )
    assert_problem(response, 412)
    state = await db["campaigns"].find_one({"_id": campaign_id})
    assert state is not None and state["version"] == 1


async def test_of_two_concurrent_patches_on_one_version_exactly_one_wins(
    api: httpx.AsyncClient, owner: Account, db: AsyncDatabase[Document]
) -> None:
    campaign_id = await create_campaign(api, owner)
    responses = await asyncio.gather(
        *(
            api.patch(
                f"/campaigns/{campaign_id}", json={"name": f"Name {i}"}, headers={**owner.auth, **if_match(1)}
            )
            for i in range(2)
        )
    )
    assert sorted(r.status_code for r in responses) == [200, 412]
    assert [e["aggregate_version"] for e in await events_of(db, campaign_id)] == [1, 2]


async def test_patch_refuses_invalid_values_and_nulls(api: httpx.AsyncClient, owner: Account) -> None:
    campaign_id = await create_campaign(api, owner)
    headers = {**owner.auth, **if_match(1)}
    for body, fields in [
        ({"ends_at": "2027-01-01T00:00:00Z"}, {"ends_at"}),
        ({"name": None}, {"name"}),
        ({"budget": {"amount": "1"}}, {"budget.currency"}),
        ({"owner_id": "me"}, {"owner_id"}),
        ({}, {"body"}),
    ]:
        problem = assert_problem(
            await api.patch(f"/campaigns/{campaign_id}", json=body, headers=headers), 422
        )
        assert fields_of(problem) == fields, body


async def test_patch_of_a_completed_campaign_is_409(api: httpx.AsyncClient, owner: Account) -> None:
    campaign_id = await create_campaign(api, owner)
    await api.post(f"/campaigns/{campaign_id}/activate", headers=owner.auth)
    await api.post(f"/campaigns/{campaign_id}/complete", headers=owner.auth)
    response = await api.patch(
        f"/campaigns/{campaign_id}", json={"name": "X"}, headers={**owner.auth, **if_match(3)}
    )
    assert_problem(response, 409)


async def test_a_patch_that_changes_nothing_keeps_the_version(
    api: httpx.AsyncClient, owner: Account, db: AsyncDatabase[Document]
) -> None:
    campaign_id = await create_campaign(api, owner)
    response = await api.patch(
        f"/campaigns/{campaign_id}", json={"name": CAMPAIGN["name"]}, headers={**owner.auth, **if_match(1)}
    )
    assert response.json()["version"] == 1
    assert len(await events_of(db, campaign_id)) == 1


# ---------------------------------------------------------------- lifecycle


async def test_lifecycle_draft_active_paused_active_completed(
    api: httpx.AsyncClient, owner: Account, db: AsyncDatabase[Document]
) -> None:
    campaign_id = await create_campaign(api, owner)
    versions = []
    for action in ("activate", "pause", "activate", "complete"):
        response = await api.post(f"/campaigns/{campaign_id}/{action}", headers=owner.auth)
        assert response.status_code == 200, response.text
        versions.append(response.json()["version"])
    assert versions == [2, 3, 4, 5]
    types = [e["event_type"] for e in await events_of(db, campaign_id)]
    assert types == [
        "CampaignCreated",
        "CampaignActivated",
        "CampaignPaused",
        "CampaignActivated",
        "CampaignCompleted",
    ]
    state = await db["campaigns"].find_one({"_id": campaign_id})
    assert state is not None and state["status"] == "completed"


@pytest.mark.parametrize("action", ["pause", "complete"])
async def test_invalid_transitions_are_409_and_change_nothing(
    api: httpx.AsyncClient, owner: Account, db: AsyncDatabase[Document], action: str
) -> None:
    campaign_id = await create_campaign(api, owner)
    problem = assert_problem(await api.post(f"/campaigns/{campaign_id}/{action}", headers=owner.auth), 409)
    assert "draft" in str(problem["detail"])
    assert len(await events_of(db, campaign_id)) == 1


async def test_lifecycle_honours_an_if_match_when_given(api: httpx.AsyncClient, owner: Account) -> None:
    campaign_id = await create_campaign(api, owner)
    stale = await api.post(f"/campaigns/{campaign_id}/activate", headers={**owner.auth, **if_match(5)})
    assert_problem(stale, 412)
    current = await api.post(f"/campaigns/{campaign_id}/activate", headers={**owner.auth, **if_match(1)})
    assert current.json()["version"] == 2


async def test_simultaneous_lifecycle_commands_without_if_match_are_both_decided_on_fresh_state(
    api: httpx.AsyncClient, owner: Account, db: AsyncDatabase[Document]
) -> None:
    campaign_id = await create_campaign(api, owner)
    responses = await asyncio.gather(
        *(api.post(f"/campaigns/{campaign_id}/activate", headers=owner.auth) for _ in range(3))
    )
    # One activates; the others see an active campaign and are refused as invalid transitions.
    assert sorted(r.status_code for r in responses) == [200, 409, 409]
    assert [e["aggregate_version"] for e in await events_of(db, campaign_id)] == [1, 2]


# ---------------------------------------------------------------- delete


async def test_delete_answers_204_leaves_a_tombstone_and_the_campaign_is_then_404(
    api: httpx.AsyncClient, owner: Account, db: AsyncDatabase[Document]
) -> None:
    campaign_id = await create_campaign(api, owner)
    await api.post(f"/campaigns/{campaign_id}/activate", headers=owner.auth)
    response = await api.delete(f"/campaigns/{campaign_id}", headers=owner.auth)
    assert response.status_code == 204
    assert response.content == b""
    assert (await events_of(db, campaign_id))[-1]["event_type"] == "CampaignDeleted"
    for request in (
        api.delete(f"/campaigns/{campaign_id}", headers=owner.auth),
        api.post(f"/campaigns/{campaign_id}/activate", headers=owner.auth),
        api.patch(f"/campaigns/{campaign_id}", json={"name": "X"}, headers={**owner.auth, **if_match(3)}),
    ):
        assert_problem(await request, 404)
    assert len(await events_of(db, campaign_id)) == 3


async def test_delete_with_a_stale_if_match_is_412(api: httpx.AsyncClient, owner: Account) -> None:
    campaign_id = await create_campaign(api, owner)
    assert_problem(await api.delete(f"/campaigns/{campaign_id}", headers={**owner.auth, **if_match(9)}), 412)
    assert (
        await api.delete(f"/campaigns/{campaign_id}", headers={**owner.auth, **if_match(1)})
    ).status_code == 204


# ---------------------------------------------------------------- who may change what


async def test_another_users_campaign_answers_404_to_every_write(
    api: httpx.AsyncClient, owner: Account, db: AsyncDatabase[Document]
) -> None:
    campaign_id = await create_campaign(api, owner)
    intruder = await signed_up(api)
    for request in (
        api.patch(
            f"/campaigns/{campaign_id}", json={"name": "Mine"}, headers={**intruder.auth, **if_match(1)}
        ),
        api.post(f"/campaigns/{campaign_id}/activate", headers=intruder.auth),
        api.post(f"/campaigns/{campaign_id}/pause", headers=intruder.auth),
        api.post(f"/campaigns/{campaign_id}/complete", headers=intruder.auth),
        api.delete(f"/campaigns/{campaign_id}", headers=intruder.auth),
    ):
        problem = assert_problem(await request, 404)
        unknown = assert_problem(
            await api.post("/campaigns/00000000-0000-0000-0000-000000000000/activate", headers=intruder.auth),
            404,
        )
        # Indistinguishable from an id that does not exist.
        assert problem["title"] == unknown["title"]
    assert len(await events_of(db, campaign_id)) == 1


async def test_unknown_ids_are_404(api: httpx.AsyncClient, owner: Account) -> None:
    for path in ("/campaigns/nope/activate", "/campaigns/nope/pause", "/campaigns/nope/complete"):
        assert_problem(await api.post(path, headers=owner.auth), 404)
    assert_problem(await api.delete("/campaigns/nope", headers=owner.auth), 404)
    assert_problem(
        await api.patch("/campaigns/nope", json={"name": "X"}, headers={**owner.auth, **if_match(1)}), 404
    )


async def test_an_admin_may_change_anyones_campaign(
    api: httpx.AsyncClient, owner: Account, settings: Settings, db: AsyncDatabase[Document]
) -> None:
    campaign_id = await create_campaign(api, owner)
    admin = await signed_up(api)
    await grant_admin(settings, admin.email)
    admin_auth = {"Authorization": f"Bearer {(await log_in(api, admin.email))['access_token']}"}
    patched = await api.patch(
        f"/campaigns/{campaign_id}", json={"description": "moderated"}, headers={**admin_auth, **if_match(1)}
    )
    assert patched.status_code == 200
    assert (await api.post(f"/campaigns/{campaign_id}/activate", headers=admin_auth)).status_code == 200
    assert (await api.delete(f"/campaigns/{campaign_id}", headers=admin_auth)).status_code == 204
    events = await events_of(db, campaign_id)
    assert [e["actor_id"] for e in events] == [owner.user_id, admin.user_id, admin.user_id, admin.user_id]
    state = await db["campaigns"].find_one({"_id": campaign_id})
    assert state is not None and state["owner_id"] == owner.user_id


# ---------------------------------------------------------------- servers down


async def test_commands_answer_503_and_write_nothing_when_mongodb_is_unreachable(
    settings: Settings, db: AsyncDatabase[Document]
) -> None:
    unreachable = settings.model_copy(
        update={"mongo_url": "mongodb://127.0.0.1:9/?directConnection=true&serverSelectionTimeoutMS=300"}
    )
    token = issue_access_token(settings, "user-1", ["user"])
    async with running_api(unreachable) as api:
        response = await api.post("/campaigns", json=CAMPAIGN, headers={"Authorization": f"Bearer {token}"})
        problem = assert_problem(response, 503)
        assert "nothing was changed" in str(problem["detail"])
    assert await db["events"].count_documents({}) == 0
