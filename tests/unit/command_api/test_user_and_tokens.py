"""Users (e-mail, password policy, logins, roles) and refresh-token rotation rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from command_api.domain.errors import InvalidInput
from command_api.domain.refresh_token import RefreshToken, RefreshVerdict, hash_refresh_token
from command_api.domain.user import User, check_registration, normalise_email, password_problems

NOW = datetime(2027, 1, 10, 12, 0, tzinfo=UTC)
GOOD_PASSWORD = "correct horse battery 9"


def registered() -> User:
    user = User.register(user_id="u-1", email="Ana@Example.com ", name=" Ana ", password_hash="h", now=NOW)
    user.collect_events()
    return user


def test_email_is_normalised_so_uniqueness_is_case_insensitive() -> None:
    assert normalise_email("  Ana.Silva@Example.COM ") == "ana.silva@example.com"


def test_registration_records_user_registered_with_the_user_role_only() -> None:
    user = User.register(user_id="u-1", email="Ana@Example.com", name="Ana", password_hash="h", now=NOW)
    [event] = user.collect_events()
    assert event.event_type == "UserRegistered"
    assert event.aggregate_version == user.version == 1
    assert event.payload.model_dump() == {"email": "ana@example.com", "name": "Ana", "roles": ["user"]}
    assert user.roles == ("user",)
    assert not user.is_admin


def test_a_login_records_user_logged_in_and_bumps_the_version() -> None:
    user = registered()
    user.record_login(NOW)
    [event] = user.collect_events()
    assert event.event_type == "UserLoggedIn"
    assert user.version == 2
    assert user.last_login_at == NOW


def test_granting_admin_records_the_new_roles_once() -> None:
    user = registered()
    assert user.grant("admin", NOW) is True
    [event] = user.collect_events()
    assert event.event_type == "UserRolesChanged"
    assert event.payload.model_dump() == {"roles": ["user", "admin"]}
    assert user.is_admin
    assert user.grant("admin", NOW) is False
    assert user.pending_events == []


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short 1", "at least 10 characters"),
        ("x" * 129, "at most 128 characters"),
        ("abababababab", "different characters"),
        ("password123", "most common passwords"),
        ("1234567890", "most common passwords"),
        ("ana.silva.long", "e-mail address or name"),
        ("Ana Silva Maria", "e-mail address or name"),
    ],
)
def test_password_policy_says_what_is_wrong(password: str, reason: str) -> None:
    problems = password_problems(password, email="ana.silva.long@example.com", name="Ana Silva Maria")
    assert any(reason in p for p in problems), problems


def test_a_long_passphrase_passes_the_policy() -> None:
    assert password_problems(GOOD_PASSWORD, email="ana@example.com", name="Ana") == []


def test_registration_check_names_each_bad_field() -> None:
    with pytest.raises(InvalidInput) as excinfo:
        check_registration(email="not-an-address", name=" ", password="short")
    assert {e.field for e in excinfo.value.errors} == {"email", "name", "password"}


def token(**changes: object) -> RefreshToken:
    first = RefreshToken.first_of_family(
        token_hash=hash_refresh_token("raw"),
        family_id="f-1",
        user_id="u-1",
        now=NOW,
        lifetime=timedelta(days=1),
    )
    return RefreshToken(**{**first.__dict__, **changes})  # type: ignore[arg-type]


def test_refresh_tokens_are_stored_as_a_sha256_digest_never_the_raw_value() -> None:
    digest = hash_refresh_token("secret-value")
    assert digest != "secret-value"
    assert len(digest) == 64
    assert digest == hash_refresh_token("secret-value")


def test_a_fresh_refresh_token_is_valid_until_it_expires() -> None:
    assert token().verdict(NOW + timedelta(hours=23)) is RefreshVerdict.VALID
    assert token().verdict(NOW + timedelta(days=1)) is RefreshVerdict.EXPIRED


def test_rotation_uses_up_the_token_and_continues_its_family() -> None:
    used, successor = token().rotate(token_hash="next", now=NOW, lifetime=timedelta(days=1))
    assert used.used_at == NOW
    assert used.verdict(NOW) is RefreshVerdict.REUSED
    assert successor.family_id == "f-1"
    assert successor.user_id == "u-1"
    assert successor.verdict(NOW) is RefreshVerdict.VALID
    assert successor.expires_at == NOW + timedelta(days=1)


def test_revoked_wins_over_every_other_verdict_and_nothing_but_valid_rotates() -> None:
    revoked = token(revoked_at=NOW, used_at=NOW)
    assert revoked.verdict(NOW) is RefreshVerdict.REVOKED
    for unusable in (revoked, token(used_at=NOW)):
        with pytest.raises(ValueError, match="cannot rotate"):
            unusable.rotate(token_hash="next", now=NOW, lifetime=timedelta(days=1))
