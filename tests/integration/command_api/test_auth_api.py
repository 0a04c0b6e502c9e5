"""/auth over HTTP against real MongoDB and Redis: register, login, refresh rotation, logout."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from pymongo.asynchronous.database import AsyncDatabase

from command_api.adapters.mongo_schema import Document
from command_api.domain.refresh_token import hash_refresh_token
from command_api.entrypoints.admin import grant_admin
from service_runtime.problems import PROBLEM_JSON
from service_runtime.settings import Settings
from service_runtime.tokens import verify_access_token
from tests.integration.command_api.accounts import PASSWORD, log_in, new_email, register, signed_up
from tests.integration.command_api.conftest import running_api


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, object] = response.json()
    assert body["status"] == status
    return body


def fields_of(problem: dict[str, object]) -> set[str]:
    errors = problem["errors"]
    assert isinstance(errors, list)
    return {e["field"] for e in errors}


async def test_register_creates_a_user_at_version_1_with_a_hashed_password_and_an_event(
    api: httpx.AsyncClient, db: AsyncDatabase[Document]
) -> None:
    response = await api.post(
        "/auth/register", json={"email": "  Ana.Silva@Example.COM", "password": PASSWORD, "name": "Ana"}
    )
    assert response.status_code == 201
    body = response.json()
    assert body["version"] == 1
    stored = await db["users"].find_one({"_id": body["id"]})
    assert stored is not None
    assert stored["email"] == "ana.silva@example.com"
    assert stored["roles"] == ["user"]
    assert stored["password_hash"].startswith("$argon2id$")
    assert PASSWORD not in str(stored)
    [event] = await db["events"].find({"aggregate_id": body["id"]}).to_list()
    assert event["event_type"] == "UserRegistered"
    assert event["payload"]["email"] == "ana.silva@example.com"
    assert "published" not in event


async def test_register_refuses_an_email_taken_in_any_letter_case(api: httpx.AsyncClient) -> None:
    await register(api, "dup@example.com")
    response = await api.post(
        "/auth/register", json={"email": "DUP@Example.com", "password": PASSWORD, "name": "Other"}
    )
    problem = assert_problem(response, 409)
    assert fields_of(problem) == {"email"}


async def test_two_simultaneous_registrations_of_one_email_create_one_user(
    api: httpx.AsyncClient, db: AsyncDatabase[Document]
) -> None:
    body = {"email": "race@example.com", "password": PASSWORD, "name": "Race"}
    responses = await asyncio.gather(*(api.post("/auth/register", json=body) for _ in range(4)))
    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409]
    assert await db["users"].count_documents({"email": "race@example.com"}) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "weak@example.com", "password": "short", "name": "Weak"}, "password"),
        ({"email": "weak@example.com", "password": "password123", "name": "Weak"}, "password"),
        ({"email": "not-an-email", "password": PASSWORD, "name": "Bad"}, "email"),
        ({"email": "noname@example.com", "password": PASSWORD, "name": ""}, "name"),
        ({"email": "nopass@example.com", "name": "No password"}, "password"),
        ({"email": {"$gt": ""}, "password": PASSWORD, "name": "Injection"}, "email"),
        ({"email": "role@example.com", "password": PASSWORD, "name": "R", "roles": ["admin"]}, "roles"),
    ],
)
async def test_register_refuses_an_invalid_body_naming_the_field(
    api: httpx.AsyncClient, db: AsyncDatabase[Document], body: dict[str, object], field: str
) -> None:
    problem = assert_problem(await api.post("/auth/register", json=body), 422)
    assert field in fields_of(problem)
    assert await db["users"].count_documents({}) == 0


async def test_weak_password_problem_says_every_reason(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/auth/register", json={"email": "w@example.com", "password": "aaaa", "name": "W"}
    )
    problem = assert_problem(response, 422)
    errors = problem["errors"]
    assert isinstance(errors, list)
    reasons = " ".join(e["reason"] for e in errors if e["field"] == "password")
    assert "at least 10 characters" in reasons
    assert "different characters" in reasons


async def test_register_refuses_an_oversized_body(api: httpx.AsyncClient, settings: Settings) -> None:
    body = {"email": "big@example.com", "password": PASSWORD, "name": "x" * settings.max_body_bytes}
    assert_problem(await api.post("/auth/register", json=body), 413)


async def test_login_returns_a_bearer_pair_and_records_user_logged_in(
    api: httpx.AsyncClient, db: AsyncDatabase[Document], settings: Settings
) -> None:
    user_id, email = await register(api)
    response = await api.post("/auth/login", json={"email": email.upper(), "password": PASSWORD})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == settings.access_token_ttl_seconds
    principal = verify_access_token(settings, body["access_token"])
    assert principal.user_id == user_id
    assert principal.roles == ("user",)
    assert len(body["refresh_token"]) >= 32
    types = [
        e["event_type"] async for e in db["events"].find({"aggregate_id": user_id}).sort("aggregate_version")
    ]
    assert types == ["UserRegistered", "UserLoggedIn"]
    stored = await db["users"].find_one({"_id": user_id})
    assert stored is not None and stored["version"] == 2


@pytest.mark.parametrize("wrong", ["password", "email"])
async def test_login_with_bad_credentials_is_401_without_saying_which_part(
    api: httpx.AsyncClient, wrong: str
) -> None:
    _, email = await register(api)
    body = {"email": email, "password": PASSWORD}
    body[wrong] = "nobody@example.com" if wrong == "email" else "wrong password 123"
    problem = assert_problem(await api.post("/auth/login", json=body), 401)
    assert problem["detail"] == "wrong e-mail or password"


async def test_login_refuses_an_invalid_body(api: httpx.AsyncClient) -> None:
    problem = assert_problem(await api.post("/auth/login", json={"email": "a@example.com"}), 422)
    assert fields_of(problem) == {"password"}


async def test_login_is_throttled_per_account_with_retry_after(settings: Settings) -> None:
    limited = settings.model_copy(update={"login_account_max_guesses": 3, "login_account_window_seconds": 30})
    async with running_api(limited) as api:
        _, email = await register(api)
        for _ in range(3):
            assert (
                await api.post("/auth/login", json={"email": email, "password": "wrong pass 1234"})
            ).status_code == 401
        throttled = await api.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert_problem(throttled, 429)
        assert 1 <= int(throttled.headers["retry-after"]) <= 30
    # Another address the account never logged in from is held back too, for this e-mail.
    async with running_api(limited, client_address="10.0.0.9") as other:
        assert_problem(await other.post("/auth/login", json={"email": email, "password": PASSWORD}), 429)


async def test_login_is_throttled_per_client_address_across_emails(settings: Settings) -> None:
    limited = settings.model_copy(update={"login_address_max_failures": 3})
    async with running_api(limited, client_address="10.0.0.7") as api:
        _, email = await register(api)
        for _ in range(3):
            response = await api.post(
                "/auth/login", json={"email": new_email(), "password": "guess guess 12"}
            )
            assert response.status_code == 401
        assert_problem(await api.post("/auth/login", json={"email": email, "password": PASSWORD}), 429)
    async with running_api(limited, client_address="10.0.0.8") as elsewhere:
        assert (
            await elsewhere.post("/auth/login", json={"email": email, "password": PASSWORD})
        ).status_code == 200


async def test_successful_logins_do_not_use_up_the_allowance(settings: Settings) -> None:
    async with running_api(settings.model_copy(update={"login_address_max_failures": 2})) as api:
        _, email = await register(api)
        for _ in range(5):
            await log_in(api, email)


async def test_refresh_rotates_the_pair_and_the_new_tokens_work(
    api: httpx.AsyncClient, db: AsyncDatabase[Document], settings: Settings
) -> None:
    account = await signed_up(api)
    response = await api.post("/auth/refresh", json={"refresh_token": account.refresh_token})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    pair = response.json()
    assert pair["refresh_token"] != account.refresh_token
    assert verify_access_token(settings, pair["access_token"]).user_id == account.user_id
    again = await api.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert again.status_code == 200
    old = await db["refresh_tokens"].find_one({"_id": hash_refresh_token(account.refresh_token)})
    assert old is not None and old["used_at"] is not None
    # Only digests are stored.
    assert await db["refresh_tokens"].count_documents({"_id": account.refresh_token}) == 0
    assert await db["refresh_tokens"].count_documents({"family_id": old["family_id"]}) == 3


async def test_reused_refresh_token_revokes_family(settings: Settings) -> None:
    # No grace window: any second presentation is a reuse.
    async with running_api(settings.model_copy(update={"refresh_grace_seconds": 0.0})) as api:
        account = await signed_up(api)
        rotated = await api.post("/auth/refresh", json={"refresh_token": account.refresh_token})
        assert rotated.status_code == 200
        current = rotated.json()["refresh_token"]

        reuse = await api.post("/auth/refresh", json={"refresh_token": account.refresh_token})
        assert_problem(reuse, 401)

        # The thief's replay also ended the legitimate holder's session: the family is gone.
        assert_problem(await api.post("/auth/refresh", json={"refresh_token": current}), 401)


async def test_a_second_refresh_within_the_grace_window_gets_the_same_successor(
    api: httpx.AsyncClient,
) -> None:
    account = await signed_up(api)
    first = await api.post("/auth/refresh", json={"refresh_token": account.refresh_token})
    second = await api.post("/auth/refresh", json={"refresh_token": account.refresh_token})
    assert first.status_code == second.status_code == 200
    assert first.json()["refresh_token"] == second.json()["refresh_token"]
    assert (
        await api.post("/auth/refresh", json={"refresh_token": first.json()["refresh_token"]})
    ).status_code == 200


async def test_a_second_login_starts_its_own_family_untouched_by_revoking_another(
    api: httpx.AsyncClient,
) -> None:
    account = await signed_up(api)
    other_session = await log_in(api, account.email)
    await api.post("/auth/logout", json={"refresh_token": account.refresh_token})
    response = await api.post("/auth/refresh", json={"refresh_token": other_session["refresh_token"]})
    assert response.status_code == 200


async def test_refresh_refuses_unknown_tokens_and_invalid_bodies(api: httpx.AsyncClient) -> None:
    assert_problem(await api.post("/auth/refresh", json={"refresh_token": "made-up-token"}), 401)
    assert_problem(await api.post("/auth/refresh", json={}), 422)


async def test_logout_revokes_the_family_and_answers_204(api: httpx.AsyncClient) -> None:
    account = await signed_up(api)
    rotated = (await api.post("/auth/refresh", json={"refresh_token": account.refresh_token})).json()
    response = await api.post("/auth/logout", json={"refresh_token": rotated["refresh_token"]})
    assert response.status_code == 204
    assert response.content == b""
    assert_problem(await api.post("/auth/refresh", json={"refresh_token": rotated["refresh_token"]}), 401)


async def test_logout_with_an_unknown_token_is_still_204(api: httpx.AsyncClient) -> None:
    assert (await api.post("/auth/logout", json={"refresh_token": "never-issued"})).status_code == 204
    assert_problem(await api.post("/auth/logout", json={"token": "x"}), 422)


async def test_grant_admin_adds_the_role_records_it_and_a_refresh_carries_it(
    api: httpx.AsyncClient, db: AsyncDatabase[Document], settings: Settings
) -> None:
    account = await signed_up(api)
    message = await grant_admin(settings, account.email.upper())
    assert account.email in message
    stored = await db["users"].find_one({"_id": account.user_id})
    assert stored is not None and stored["roles"] == ["user", "admin"]
    last = await db["events"].find_one({"aggregate_id": account.user_id}, sort=[("aggregate_version", -1)])
    assert last is not None
    assert last["event_type"] == "UserRolesChanged"
    assert last["payload"] == {"roles": ["user", "admin"]}
    refreshed = (await api.post("/auth/refresh", json={"refresh_token": account.refresh_token})).json()
    assert verify_access_token(settings, refreshed["access_token"]).is_admin
    assert "already" in await grant_admin(settings, account.email)
    assert await db["events"].count_documents({"event_type": "UserRolesChanged"}) == 1


async def test_grant_admin_to_an_unknown_email_raises_lookup_error(settings: Settings) -> None:
    with pytest.raises(LookupError, match=r"nobody@example\.com"):
        await grant_admin(settings, "nobody@example.com")


async def test_register_answers_503_when_mongodb_is_unreachable(settings: Settings) -> None:
    unreachable = settings.model_copy(
        update={"mongo_url": "mongodb://127.0.0.1:9/?directConnection=true&serverSelectionTimeoutMS=300"}
    )
    async with running_api(unreachable) as api:
        response = await api.post(
            "/auth/register", json={"email": "down@example.com", "password": PASSWORD, "name": "Down"}
        )
        assert_problem(response, 503)
        assert response.headers["retry-after"]


NEW_PASSWORD = "a brand new pass phrase 42"


async def test_a_password_change_stores_a_new_hash_and_ends_every_other_session(
    api: httpx.AsyncClient, db: AsyncDatabase[Document], settings: Settings
) -> None:
    account = await signed_up(api)
    other = await log_in(api, account.email)
    before = await db["users"].find_one({"_id": account.user_id})
    assert before is not None
    changed = await api.post(
        "/auth/password",
        headers=account.auth,
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert changed.status_code == 200, changed.text
    assert changed.headers["cache-control"] == "no-store"
    pair = changed.json()
    assert verify_access_token(settings, pair["access_token"]).user_id == account.user_id

    stored = await db["users"].find_one({"_id": account.user_id})
    assert stored is not None and stored["version"] == before["version"] + 1
    assert stored["password_hash"].startswith("$argon2id$")
    assert stored["password_hash"] != before["password_hash"]
    last = await db["events"].find_one({"aggregate_id": account.user_id}, sort=[("aggregate_version", -1)])
    assert last is not None and last["event_type"] == "UserPasswordChanged"
    assert last["payload"] == {} and last["actor_id"] == account.user_id

    # Every access token issued before the change is refused, and every other refresh token.
    stale = await api.post("/auth/logout-all", headers=account.auth)
    assert_problem(stale, 401)
    for refresh_token in (account.refresh_token, other["refresh_token"]):
        assert_problem(await api.post("/auth/refresh", json={"refresh_token": refresh_token}), 401)
    # The old password no longer opens the account; the new one does, and the new pair works.
    wrong = await api.post("/auth/login", json={"email": account.email, "password": PASSWORD})
    assert_problem(wrong, 401)
    await log_in(api, account.email, NEW_PASSWORD)
    refreshed = await api.post("/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    fresh = {"Authorization": f"Bearer {pair['access_token']}"}
    assert (await api.post("/auth/logout-all", headers=fresh)).status_code == 204


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"current_password": "not my password", "new_password": NEW_PASSWORD}, 403, "current_password"),
        ({"current_password": PASSWORD, "new_password": "short"}, 422, "new_password"),
        ({"current_password": PASSWORD, "new_password": PASSWORD}, 422, "new_password"),
        ({"current_password": PASSWORD, "new_password": "password123"}, 422, "new_password"),
        ({"current_password": PASSWORD}, 422, "new_password"),
        ({"current_password": "", "new_password": NEW_PASSWORD}, 422, "current_password"),
        ({"current_password": PASSWORD, "new_password": NEW_PASSWORD, "roles": ["admin"]}, 422, "roles"),
    ],
)
async def test_a_refused_password_change_names_the_field_and_changes_nothing(
    api: httpx.AsyncClient,
    db: AsyncDatabase[Document],
    body: dict[str, object],
    status: int,
    field: str,
) -> None:
    account = await signed_up(api)
    problem = assert_problem(await api.post("/auth/password", headers=account.auth, json=body), status)
    assert fields_of(problem) == {field}
    assert await db["events"].count_documents({"aggregate_id": account.user_id}) == 2
    assert (await api.post("/auth/refresh", json={"refresh_token": account.refresh_token})).status_code == 200


async def test_a_password_change_needs_an_access_token(api: httpx.AsyncClient) -> None:
    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    assert_problem(await api.post("/auth/password", json=body), 401)


async def test_guesses_at_the_current_password_are_throttled_like_failed_logins(settings: Settings) -> None:
    limited = settings.model_copy(update={"login_trusted_max_failures": 2, "login_account_max_guesses": 2})
    async with running_api(limited) as api:
        account = await signed_up(api)
        guess = {"current_password": "a wrong guess 123", "new_password": NEW_PASSWORD}
        # This client logged in before (a known address): its own small budget first, then the
        # account's, as for logins.
        for _ in range(4):
            assert_problem(await api.post("/auth/password", headers=account.auth, json=guess), 403)
        right = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
        throttled = await api.post("/auth/password", headers=account.auth, json=right)
        assert "login attempts" in str(assert_problem(throttled, 429)["detail"])
        assert int(throttled.headers["retry-after"]) >= 1
