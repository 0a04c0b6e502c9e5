"""The user aggregate: e-mail identity, password policy, logins and roles."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from command_api.domain.aggregate import Aggregate, to_millisecond_utc
from command_api.domain.errors import CONTROL_CHARACTERS_REASON, FieldChecks, has_control_characters
from events.types import UserLoggedIn, UserRegistered, UserRolesChanged

Role = Literal["user", "admin"]
NAME_MAX = 200
PASSWORD_MIN = 10
# argon2 takes any length, but an unbounded password is a cheap way to burn server CPU.
PASSWORD_MAX = 128
PASSWORD_MIN_DISTINCT = 5
# The passwords every credential-stuffing list starts with; refused whatever their length.
COMMON_PASSWORDS = frozenset(
    {
        "1234567890",
        "12345678910",
        "123456789012",
        "0123456789",
        "qwertyuiop",
        "qwertyuiop123",
        "1q2w3e4r5t",
        "1q2w3e4r5t6y",
        "password123",
        "password1234",
        "password12345",
        "passw0rd123",
        "iloveyou123",
        "letmein1234",
        "administrator",
        "welcome1234",
        "changeme123",
        "abcdefghij",
        "abc1234567",
        "aaaaaaaaaa",
    }
)


def normalise_email(raw: str) -> str:
    """E-mail addresses are unique case-insensitively: the stored form is trimmed and lower-case."""
    return raw.strip().lower()


def check_registration(*, email: str, name: str, password: str) -> None:
    """The password policy and the name's bounds; raises InvalidInput naming each bad field."""
    checks = FieldChecks()
    local, _, domain = email.partition("@")
    if not local or not domain or "@" in domain:
        checks.fail("email", "must be an e-mail address")
    if not 1 <= len(name.strip()) <= NAME_MAX:
        checks.fail("name", f"must be 1 to {NAME_MAX} characters")
    if has_control_characters(name):
        checks.fail("name", CONTROL_CHARACTERS_REASON)
    for reason in password_problems(password, email=email, name=name):
        checks.fail("password", reason)
    checks.raise_if_any()


def password_problems(password: str, *, email: str, name: str) -> list[str]:
    """Every way `password` breaks the policy (an empty list when it is acceptable)."""
    problems = []
    if len(password) < PASSWORD_MIN:
        problems.append(f"must be at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        problems.append(f"must be at most {PASSWORD_MAX} characters")
    if len(set(password)) < PASSWORD_MIN_DISTINCT:
        problems.append(f"must use at least {PASSWORD_MIN_DISTINCT} different characters")
    lowered = password.strip().lower()
    if lowered in COMMON_PASSWORDS:
        problems.append("is one of the most common passwords")
    personal = {email.lower(), email.lower().partition("@")[0], name.strip().lower()}
    if lowered in {p for p in personal if p}:
        problems.append("must not be your e-mail address or name")
    return problems


@dataclass(eq=False)
class User(Aggregate):
    email: str
    name: str
    password_hash: str
    roles: tuple[Role, ...]
    created_at: datetime
    last_login_at: datetime | None = None

    @classmethod
    def register(cls, *, user_id: str, email: str, name: str, password_hash: str, now: datetime) -> User:
        """A new user with the `user` role; roles beyond it are granted only by an administrator."""
        now = to_millisecond_utc(now)
        user = cls(
            id=user_id,
            version=0,
            email=normalise_email(email),
            name=name.strip(),
            password_hash=password_hash,
            roles=("user",),
            created_at=now,
        )
        user._record(UserRegistered(email=user.email, name=user.name, roles=list(user.roles)), now)
        return user

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    def record_login(self, now: datetime) -> None:
        now = to_millisecond_utc(now)
        self.last_login_at = now
        self._record(UserLoggedIn(), now)

    def grant(self, role: Role, now: datetime) -> bool:
        """Add `role`; False (and no event) when the user already has it."""
        if role in self.roles:
            return False
        self.roles = (*self.roles, role)
        self._record(UserRolesChanged(roles=list(self.roles)), to_millisecond_utc(now))
        return True

    def revoke(self, role: Role, now: datetime) -> bool:
        """Remove `role` (never the base `user` role); False (and no event) when it is not held."""
        if role == "user":
            raise ValueError("the user role cannot be revoked")
        if role not in self.roles:
            return False
        self.roles = tuple(r for r in self.roles if r != role)
        self._record(UserRolesChanged(roles=list(self.roles)), to_millisecond_utc(now))
        return True
