"""Registration at its exact boundaries (address, name, password policy), and the times users and
refresh tokens record: always the command's clock, in UTC milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from command_api.domain.errors import FieldError, InvalidInput
from command_api.domain.refresh_token import RefreshToken
from command_api.domain.user import User, check_registration, password_problems

NOW = datetime(2027, 1, 10, 14, 0, 0, 999_500, tzinfo=timezone(timedelta(hours=2)))
NOW_MS = datetime(2027, 1, 10, 12, 0, 0, 999_000, tzinfo=UTC)
GOOD = "abcde12345"  # ten characters, ten different ones, in no list


def refused(email: str = "ana@example.com", name: str = "Ana", password: str = GOOD) -> list[FieldError]:
    with pytest.raises(InvalidInput) as excinfo:
        check_registration(email=email, name=name, password=password)
    return excinfo.value.errors


@pytest.mark.parametrize("email", ["a@b@c", "ana@example.com@evil.com", "@example.com", "ana@", "ana"])
def test_anything_but_one_local_part_at_one_domain_is_refused_as_an_address(email: str) -> None:
    assert refused(email=email) == [FieldError("email", "must be an e-mail address")]


def test_a_minimal_address_is_accepted() -> None:
    check_registration(email="a@b", name="Ana", password=GOOD)


@pytest.mark.parametrize("name", ["A", " A ", "n" * 200])
def test_names_of_1_to_200_characters_are_accepted(name: str) -> None:
    check_registration(email="ana@example.com", name=name, password=GOOD)


@pytest.mark.parametrize("name", ["", "   ", "n" * 201])
def test_names_outside_1_to_200_characters_are_refused(name: str) -> None:
    assert refused(name=name) == [FieldError("name", "must be 1 to 200 characters")]


@pytest.mark.parametrize(
    "password",
    [
        GOOD,  # exactly the minimum length
        ("abcde" * 26)[:128],  # exactly the maximum length
        "aabbccddee",  # exactly the minimum of different characters
    ],
)
def test_passwords_at_the_policy_boundaries_are_accepted(password: str) -> None:
    assert password_problems(password, email="ana@example.com", name="Ana") == []


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        (GOOD[:9], "must be at least 10 characters"),
        (("abcde" * 26)[:129], "must be at most 128 characters"),
        ("aaabbbcccd", "must use at least 5 different characters"),
        (" Password123 ", "is one of the most common passwords"),
        ("Ana.Smith.@EXAMPLE.com", "must not be your e-mail address or name"),
        ("ANA.SMITH.", "must not be your e-mail address or name"),
        (" Ana Smithson ", "must not be your e-mail address or name"),
    ],
)
def test_passwords_just_outside_the_policy_are_refused_with_the_reason(password: str, problem: str) -> None:
    problems = password_problems(password, email="ana.smith.@Example.com", name="Ana Smithson")
    assert problems == [problem]
    assert refused(email="ana.smith.@Example.com", name="Ana Smithson", password=password) == [
        FieldError("password", problem)
    ]


def test_registration_records_the_user_at_the_command_time() -> None:
    user = User.register(user_id="u-1", email="Ana@Example.com", name="Ana", password_hash="h", now=NOW)
    [event] = user.collect_events()
    assert (user.id, event.aggregate_id, event.occurred_at, user.created_at) == ("u-1", "u-1", NOW_MS, NOW_MS)
    assert user.created_at.tzinfo is UTC


def test_logins_and_grants_are_recorded_at_the_command_time() -> None:
    user = User.register(user_id="u-1", email="ana@example.com", name="Ana", password_hash="h", now=NOW)
    later = NOW + timedelta(days=1)
    user.record_login(later)
    assert user.grant("admin", later)
    login, grant = user.collect_events()[1:]
    assert (login.occurred_at, grant.occurred_at, user.last_login_at) == (NOW_MS + timedelta(days=1),) * 3


def test_refresh_tokens_are_issued_at_the_command_time_and_an_expired_one_says_so() -> None:
    lifetime = timedelta(days=7)
    first = RefreshToken.first_of_family(
        token_hash="h1", family_id="f", user_id="u-1", now=NOW, lifetime=lifetime
    )
    assert (first.issued_at, first.expires_at) == (NOW_MS, NOW_MS + lifetime)
    used, successor = first.rotate(token_hash="h2", now=NOW + timedelta(days=1), lifetime=lifetime)
    assert successor.issued_at == used.used_at == NOW_MS + timedelta(days=1)
    with pytest.raises(ValueError, match=r"^cannot rotate a expired refresh token$"):
        successor.rotate(token_hash="h3", now=NOW + timedelta(days=9), lifetime=lifetime)


def test_the_policy_bounds_are_settings_the_registration_check_follows() -> None:
    from command_api.bootstrap import password_policy
    from command_api.domain.user import check_new_password
    from service_runtime.settings import Settings

    strict = password_policy(
        Settings(password_min_length=16, password_max_length=64, password_min_distinct=12)
    )
    assert password_problems(GOOD, email="ana@example.com", name="Ana", policy=strict) == [
        "must be at least 16 characters",
        "must use at least 12 different characters",
    ]
    assert password_problems("abcdefghijklm" * 5, email="a@b", name="A", policy=strict) == [
        "must be at most 64 characters"
    ]
    with pytest.raises(InvalidInput) as excinfo:
        check_registration(email="ana@example.com", name="Ana", password=GOOD, policy=strict)
    assert {e.field for e in excinfo.value.errors} == {"password"}
    user = User.register(user_id="u", email="ana@example.com", name="Ana", password_hash="h", now=NOW)
    check_new_password(user=user, current_password=GOOD, new_password="abcdefghijkl5678", policy=strict)
    with pytest.raises(InvalidInput) as excinfo:
        check_new_password(user=user, current_password=GOOD, new_password=GOOD)
    assert excinfo.value.errors == [FieldError("new_password", "must differ from the current password")]


def test_a_password_change_records_an_event_without_the_hash() -> None:
    user = User.register(user_id="u", email="ana@example.com", name="Ana", password_hash="old", now=NOW)
    user.collect_events()
    user.change_password("new-hash", NOW)
    (event,) = user.collect_events()
    assert event.event_type == "UserPasswordChanged" and event.aggregate_version == 2
    assert event.payload.model_dump() == {} and event.occurred_at == NOW_MS
    assert user.password_hash == "new-hash"
