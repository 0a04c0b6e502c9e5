"""Command handlers on an in-memory unit of work: authorisation, versions, idempotency, sessions."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from command_api.application import campaign_handlers, user_handlers
from command_api.application.commands import (
    ChangeCampaignStatus,
    ChangePassword,
    ChangeRoles,
    CreateCampaign,
    DeleteCampaign,
    LogIn,
    LogOut,
    LogOutEverywhere,
    RefreshSession,
    RegisterUser,
    UpdateCampaign,
)
from command_api.application.errors import (
    EmailTaken,
    IdempotencyKeyReused,
    InvalidCredentials,
    LoginThrottled,
    NotFound,
    RegistrationThrottled,
    SessionRejected,
    StaleVersion,
    TooManyLiveCampaigns,
    VersionRequired,
    WrongCurrentPassword,
)
from command_api.application.live_cap import LiveCampaignCap
from command_api.domain.campaign import Actor, CampaignChanges, CampaignDetails
from command_api.domain.errors import InvalidInput, InvalidTransition
from command_api.domain.refresh_token import hash_refresh_token
from command_api.domain.user import PasswordPolicy
from tests.support.factories import campaign_fields
from tests.unit.command_api.fakes import (
    FakeHasher,
    FakeSessions,
    FakeStore,
    FakeThrottle,
    FakeUnitOfWork,
    fake_credentials,
)

OWNER = Actor("owner")
PASSWORD = "correct horse battery 9"


def create_command(actor: Actor = OWNER, key: str | None = None, **overrides: Any) -> CreateCampaign:
    values: dict[str, Any] = {
        "actor": actor,
        "name": "Spring",
        "description": "",
        "channel": "email",
        "budget_amount": "10.00",
        "budget_currency": "EUR",
        "starts_at": datetime(2027, 3, 1, tzinfo=UTC),
        "ends_at": datetime(2027, 3, 31, tzinfo=UTC),
        "tags": [],
        "idempotency_key": key,
    }
    values.update(overrides)
    return CreateCampaign(**values)


async def created(uow: FakeUnitOfWork) -> str:
    return (await campaign_handlers.create_campaign(create_command(), uow)).id


async def test_create_with_a_repeated_idempotency_key_replays_the_result_and_records_once() -> None:
    uow = FakeUnitOfWork()
    first = await campaign_handlers.create_campaign(create_command(key="k1"), uow)
    again = await campaign_handlers.create_campaign(create_command(key="k1", tags=[]), uow)
    assert again == first
    assert len(uow.store.events) == 1
    with pytest.raises(IdempotencyKeyReused):
        await campaign_handlers.create_campaign(create_command(key="k1", name="Other"), uow)


async def test_equivalent_bodies_share_a_fingerprint() -> None:
    uow = FakeUnitOfWork()
    first = await campaign_handlers.create_campaign(create_command(key="k", name="Spring", tags=["A"]), uow)
    again = await campaign_handlers.create_campaign(create_command(key="k", name=" Spring ", tags=["a"]), uow)
    assert again == first


def test_a_fingerprint_keeps_its_bytes() -> None:
    """A fingerprint is stored with its Idempotency-Key: a retry after an upgrade must still match
    (this hex is what `dataclasses.asdict` and orjson made before the fingerprint was built
    without the deep copy)."""
    details = CampaignDetails.parse(**campaign_fields(tags=["launch", "spring"]))
    assert campaign_handlers._fingerprint(details) == (
        "2c28e0d2ec96d5595e26452e3f72190e2ecefcdd0a78a6652517b98df21df6c7"
    )


async def test_update_needs_the_version_it_was_decided_on() -> None:
    uow = FakeUnitOfWork()
    campaign_id = await created(uow)
    with pytest.raises(VersionRequired):
        await campaign_handlers.update_campaign(
            UpdateCampaign(OWNER, campaign_id, None, CampaignChanges(name="X")), uow
        )
    with pytest.raises(StaleVersion):
        await campaign_handlers.update_campaign(
            UpdateCampaign(OWNER, campaign_id, 4, CampaignChanges(name="X")), uow
        )
    result = await campaign_handlers.update_campaign(
        UpdateCampaign(OWNER, campaign_id, 1, CampaignChanges(name="X")), uow
    )
    assert result.version == 2
    assert uow.store.event_types(campaign_id) == ["CampaignCreated", "CampaignUpdated"]


async def test_a_concurrent_writer_makes_an_if_match_command_stale() -> None:
    uow = FakeUnitOfWork()
    campaign_id = await created(uow)

    def someone_else_writes() -> None:
        uow.store.campaigns[campaign_id].version = 2

    uow.store.before_commit = someone_else_writes
    with pytest.raises(StaleVersion):
        await campaign_handlers.update_campaign(
            UpdateCampaign(OWNER, campaign_id, 1, CampaignChanges(name="X")), uow
        )


async def test_without_if_match_a_lost_race_is_decided_again_on_the_fresh_state() -> None:
    uow = FakeUnitOfWork()
    campaign_id = await created(uow)

    def someone_else_edits() -> None:
        stored = uow.store.campaigns[campaign_id]
        stored.version = 2

    uow.store.before_commit = someone_else_edits
    result = await campaign_handlers.change_campaign_status(
        ChangeCampaignStatus(OWNER, campaign_id, "activate"), uow
    )
    assert result.version == 3
    assert uow.commits == 2  # the create, then the retried activation


async def test_other_users_campaigns_are_not_found_but_admins_may_act() -> None:
    uow = FakeUnitOfWork()
    campaign_id = await created(uow)
    stranger = Actor("stranger")
    for command in (
        campaign_handlers.change_campaign_status(
            ChangeCampaignStatus(stranger, campaign_id, "activate"), uow
        ),
        campaign_handlers.update_campaign(
            UpdateCampaign(stranger, campaign_id, 1, CampaignChanges(name="X")), uow
        ),
        campaign_handlers.delete_campaign(DeleteCampaign(stranger, campaign_id), uow),
    ):
        with pytest.raises(NotFound):
            await command
    admin = Actor("boss", is_admin=True)
    await campaign_handlers.change_campaign_status(ChangeCampaignStatus(admin, campaign_id, "activate"), uow)
    assert uow.store.events[-1][1] == "boss"


async def test_a_deleted_campaign_is_not_found_and_invalid_transitions_pass_through() -> None:
    uow = FakeUnitOfWork()
    campaign_id = await created(uow)
    with pytest.raises(InvalidTransition):
        await campaign_handlers.change_campaign_status(ChangeCampaignStatus(OWNER, campaign_id, "pause"), uow)
    await campaign_handlers.delete_campaign(DeleteCampaign(OWNER, campaign_id), uow)
    with pytest.raises(NotFound):
        await campaign_handlers.delete_campaign(DeleteCampaign(OWNER, campaign_id), uow)


async def registered(uow: FakeUnitOfWork, email: str = "ana@example.com") -> str:
    result = await user_handlers.register_user(RegisterUser(email, PASSWORD, "Ana"), uow, fake_credentials())
    return result.id


async def test_register_refuses_a_weak_password_before_hashing_and_hashes_for_a_taken_email() -> None:
    uow = FakeUnitOfWork()
    await registered(uow, "Ana@Example.com")
    hasher = FakeHasher()
    credentials = fake_credentials(hasher=hasher)
    with pytest.raises(EmailTaken):
        await user_handlers.register_user(RegisterUser("ana@EXAMPLE.com", PASSWORD, "Ana"), uow, credentials)
    # The same work as a new e-mail: the answer's timing does not tell the two apart.
    assert hasher.hashed == 1
    with pytest.raises(InvalidInput):
        await user_handlers.register_user(RegisterUser("bo@example.com", "short", "Bo"), uow, credentials)
    assert hasher.hashed == 1
    assert len(uow.store.users) == 1


async def test_registrations_are_throttled_per_client() -> None:
    uow = FakeUnitOfWork()
    credentials = fake_credentials(FakeThrottle(registrations=1))
    await user_handlers.register_user(RegisterUser("a@example.com", PASSWORD, "A"), uow, credentials)
    with pytest.raises(RegistrationThrottled):
        await user_handlers.register_user(RegisterUser("b@example.com", PASSWORD, "B"), uow, credentials)
    assert len(uow.store.users) == 1


async def test_login_checks_the_throttle_first_and_forgives_only_successes() -> None:
    uow = FakeUnitOfWork()
    await registered(uow)
    throttle = FakeThrottle(limit=2)
    credentials = fake_credentials(throttle)
    with pytest.raises(InvalidCredentials):
        await user_handlers.log_in(LogIn("ana@example.com", "wrong password!", "1.2.3.4"), uow, credentials)
    tokens = await user_handlers.log_in(LogIn("ANA@example.com", PASSWORD, "1.2.3.4"), uow, credentials)
    assert tokens.access_token.startswith("access:")
    assert tokens.device == "device-1"
    assert throttle.successes == 1
    with pytest.raises(InvalidCredentials):
        await user_handlers.log_in(LogIn("ana@example.com", "wrong password!", "1.2.3.4"), uow, credentials)
    with pytest.raises(LoginThrottled):
        await user_handlers.log_in(LogIn("ana@example.com", PASSWORD, "1.2.3.4"), uow, credentials)


async def test_reused_refresh_token_revokes_family_in_the_handler() -> None:
    store = FakeStore()
    uow = FakeUnitOfWork(store)
    await registered(uow)
    credentials = fake_credentials(grace=timedelta(0))
    first = await user_handlers.log_in(LogIn("ana@example.com", PASSWORD, "ip"), uow, credentials)
    second = await user_handlers.refresh_session(RefreshSession(first.refresh_token), uow, credentials)
    with pytest.raises(SessionRejected, match="already used"):
        await user_handlers.refresh_session(RefreshSession(first.refresh_token), uow, credentials)
    with pytest.raises(SessionRejected, match="revoked"):
        await user_handlers.refresh_session(RefreshSession(second.refresh_token), uow, credentials)
    assert all(token.revoked_at is not None for token in store.tokens.values())


async def test_a_second_refresh_within_the_grace_window_gets_the_same_successor() -> None:
    store = FakeStore()
    uow = FakeUnitOfWork(store)
    await registered(uow)
    credentials = fake_credentials()
    first = await user_handlers.log_in(LogIn("ana@example.com", PASSWORD, "ip"), uow, credentials)
    one = await user_handlers.refresh_session(RefreshSession(first.refresh_token), uow, credentials)
    two = await user_handlers.refresh_session(RefreshSession(first.refresh_token), uow, credentials)
    assert one.refresh_token == two.refresh_token
    assert all(token.revoked_at is None for token in store.tokens.values())
    await user_handlers.refresh_session(RefreshSession(two.refresh_token), uow, credentials)


async def test_a_family_ends_at_its_absolute_lifetime_however_often_it_is_rotated() -> None:
    store = FakeStore()
    uow = FakeUnitOfWork(store)
    await registered(uow)
    credentials = fake_credentials(family_lifetime=timedelta(hours=1))
    first = await user_handlers.log_in(LogIn("ana@example.com", PASSWORD, "ip"), uow, credentials)
    later = await user_handlers.refresh_session(RefreshSession(first.refresh_token), uow, credentials)
    family_end = {token.family_expires_at for token in store.tokens.values()}
    assert len(family_end) == 1
    assert all(token.expires_at <= next(iter(family_end)) for token in store.tokens.values())  # type: ignore[operator]
    successor = store.tokens[hash_refresh_token(later.refresh_token)]
    assert successor.expires_at - successor.issued_at <= timedelta(hours=1)


async def test_logout_revokes_the_family_ends_access_tokens_and_ignores_unknown_tokens() -> None:
    uow = FakeUnitOfWork()
    user_id = await registered(uow)
    credentials = fake_credentials()
    session = await user_handlers.log_in(LogIn("ana@example.com", PASSWORD, "ip"), uow, credentials)
    await user_handlers.log_out(LogOut("unknown"), uow, credentials.sessions)
    assert credentials.sessions.ended == []  # type: ignore[attr-defined]
    await user_handlers.log_out(LogOut(session.refresh_token), uow, credentials.sessions)
    assert credentials.sessions.ended == [user_id]  # type: ignore[attr-defined]
    with pytest.raises(SessionRejected):
        await user_handlers.refresh_session(RefreshSession(session.refresh_token), uow, credentials)


async def test_logout_everywhere_revokes_every_family_of_the_user() -> None:
    uow = FakeUnitOfWork()
    user_id = await registered(uow)
    credentials = fake_credentials()
    one = await user_handlers.log_in(LogIn("ana@example.com", PASSWORD, "ip"), uow, credentials)
    two = await user_handlers.log_in(LogIn("ana@example.com", PASSWORD, "ip"), uow, credentials)
    await user_handlers.log_out_everywhere(LogOutEverywhere(user_id), uow, credentials.sessions)
    assert credentials.sessions.ended == [user_id]  # type: ignore[attr-defined]
    for session in (one, two):
        with pytest.raises(SessionRejected):
            await user_handlers.refresh_session(RefreshSession(session.refresh_token), uow, credentials)


NEW_PASSWORD = "a new and long passphrase 7"


async def test_a_password_change_stores_the_new_hash_and_ends_every_other_session() -> None:
    store = FakeStore()
    uow = FakeUnitOfWork(store)
    user_id = await registered(uow)
    credentials = fake_credentials()
    other = await user_handlers.log_in(LogIn("ana@example.com", PASSWORD, "ip"), uow, credentials)
    changed = await user_handlers.change_password(
        ChangePassword(user_id, PASSWORD, NEW_PASSWORD, "ip"), uow, credentials
    )
    assert store.users[user_id].password_hash == f"hashed:{NEW_PASSWORD}"
    assert store.event_types(user_id) == ["UserRegistered", "UserLoggedIn", "UserPasswordChanged"]
    assert credentials.sessions.ended == [user_id]  # type: ignore[attr-defined]
    # Every other session's refresh token is revoked; this client's new one goes on.
    with pytest.raises(SessionRejected):
        await user_handlers.refresh_session(RefreshSession(other.refresh_token), uow, credentials)
    await user_handlers.refresh_session(RefreshSession(changed.refresh_token), uow, credentials)
    with pytest.raises(InvalidCredentials):
        await user_handlers.log_in(LogIn("ana@example.com", PASSWORD, "ip"), uow, credentials)
    await user_handlers.log_in(LogIn("ana@example.com", NEW_PASSWORD, "ip"), uow, credentials)


async def test_a_wrong_current_password_changes_nothing_and_counts_as_a_failed_guess() -> None:
    store = FakeStore()
    uow = FakeUnitOfWork(store)
    user_id = await registered(uow)
    throttle = FakeThrottle(limit=1)
    credentials = fake_credentials(throttle)
    with pytest.raises(WrongCurrentPassword):
        await user_handlers.change_password(
            ChangePassword(user_id, "not my password", NEW_PASSWORD, "ip"), uow, credentials
        )
    assert store.users[user_id].password_hash == f"hashed:{PASSWORD}"
    assert store.event_types(user_id) == ["UserRegistered"]
    assert credentials.sessions.ended == []  # type: ignore[attr-defined]
    # The failure used the account's budget: the next guess, even the right one, is throttled.
    with pytest.raises(LoginThrottled):
        await user_handlers.change_password(
            ChangePassword(user_id, PASSWORD, NEW_PASSWORD, "ip"), uow, credentials
        )


async def test_a_new_password_breaking_the_policy_is_refused_naming_the_field_before_any_guess() -> None:
    uow = FakeUnitOfWork()
    user_id = await registered(uow)
    hasher, throttle = FakeHasher(), FakeThrottle()
    credentials = replace(fake_credentials(throttle, hasher), password_policy=PasswordPolicy(min_length=30))
    for new in (NEW_PASSWORD, PASSWORD, "ana@example.com"):
        with pytest.raises(InvalidInput) as refused:
            await user_handlers.change_password(
                ChangePassword(user_id, PASSWORD, new, "ip"), uow, credentials
            )
        assert {e.field for e in refused.value.errors} == {"new_password"}
    assert "must be at least 30 characters" in str(refused.value)
    assert throttle.attempts == {} and hasher.hashed == 0
    assert uow.store.event_types(user_id) == ["UserRegistered"]


async def test_grant_and_revoke_admin_are_idempotent_end_sessions_and_refuse_unknown_users() -> None:
    uow = FakeUnitOfWork()
    user_id = await registered(uow)
    sessions = FakeSessions()
    grant, revoke = ChangeRoles("ANA@example.com", admin=True), ChangeRoles("ana@example.com", admin=False)
    assert "now an admin" in await user_handlers.change_roles(grant, uow, sessions)
    assert "already" in await user_handlers.change_roles(grant, uow, sessions)
    assert "no longer an admin" in await user_handlers.change_roles(revoke, uow, sessions)
    assert "not an admin" in await user_handlers.change_roles(revoke, uow, sessions)
    assert uow.store.event_types(user_id) == ["UserRegistered", "UserRolesChanged", "UserRolesChanged"]
    assert sessions.ended == [user_id, user_id]
    with pytest.raises(LookupError):
        await user_handlers.change_roles(ChangeRoles("nobody@example.com", admin=True), uow, sessions)


async def test_a_user_over_the_live_campaign_cap_is_refused_until_one_is_completed_or_deleted() -> None:
    uow = FakeUnitOfWork()
    cap = LiveCampaignCap(2, recount_seconds=60, tracked_owners=10, rate_per_second=5, burst=30)
    first = await campaign_handlers.create_campaign(create_command(), uow, live_cap=cap)
    await campaign_handlers.create_campaign(create_command(), uow, live_cap=cap)
    with pytest.raises(TooManyLiveCampaigns):
        await campaign_handlers.create_campaign(create_command(), uow, live_cap=cap)
    await campaign_handlers.delete_campaign(DeleteCampaign(OWNER, first.id, None), uow)
    # At the cap every create counts again, so the delete is seen at once.
    await campaign_handlers.create_campaign(create_command(), uow, live_cap=cap)
