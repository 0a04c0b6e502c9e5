"""The user aggregate: e-mail identity, password policy, logins, password changes and roles."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from command_api.domain.aggregate import Aggregate, to_millisecond_utc
from command_api.domain.errors import CONTROL_CHARACTERS_REASON, FieldChecks, has_control_characters
from events.types import UserLoggedIn, UserPasswordChanged, UserRegistered, UserRolesChanged

Role = Literal["user", "admin"]
NAME_MAX = 200
# The policy's defaults (each is a setting: CAMPAIGNS_PASSWORD_MIN_LENGTH, ..._MAX_LENGTH,
# ..._MIN_DISTINCT). argon2 takes any length, but an unbounded password is a cheap way to burn
# server CPU.
PASSWORD_MIN = 10
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


@dataclass(frozen=True)
class PasswordPolicy:
    """NIST SP 800-63B §5.1.1.2: a length floor and ceiling, no composition rules beyond a few
    distinct characters, and a blocklist of common and personal values."""

    min_length: int = PASSWORD_MIN
    max_length: int = PASSWORD_MAX
    min_distinct: int = PASSWORD_MIN_DISTINCT
    blocked: frozenset[str] = field(default=frozenset(), repr=False)  # beyond COMMON_PASSWORDS


DEFAULT_POLICY = PasswordPolicy()


def check_registration(
    *, email: str, name: str, password: str, policy: PasswordPolicy = DEFAULT_POLICY
) -> None:
    """The password policy and the name's bounds; raises InvalidInput naming each bad field."""
    checks = FieldChecks()
    local, _, domain = email.partition("@")
    if not local or not domain or "@" in domain:
        checks.fail("email", "must be an e-mail address")
    if not 1 <= len(name.strip()) <= NAME_MAX:
        checks.fail("name", f"must be 1 to {NAME_MAX} characters")
    if has_control_characters(name):
        checks.fail("name", CONTROL_CHARACTERS_REASON)
    for reason in password_problems(password, email=email, name=name, policy=policy):
        checks.fail("password", reason)
    checks.raise_if_any()


def check_new_password(
    *, user: User, current_password: str, new_password: str, policy: PasswordPolicy = DEFAULT_POLICY
) -> None:
    """A new password must meet the policy and differ from the current one; raises InvalidInput
    naming `new_password`."""
    checks = FieldChecks()
    for reason in password_problems(new_password, email=user.email, name=user.name, policy=policy):
        checks.fail("new_password", reason)
    if new_password == current_password:
        checks.fail("new_password", "must differ from the current password")
    checks.raise_if_any()


def password_problems(
    password: str, *, email: str, name: str, policy: PasswordPolicy = DEFAULT_POLICY
) -> list[str]:
    """Every way `password` breaks the policy (an empty list when it is acceptable)."""
    problems = []
    if len(password) < policy.min_length:
        problems.append(f"must be at least {policy.min_length} characters")
    if len(password) > policy.max_length:
        problems.append(f"must be at most {policy.max_length} characters")
    if len(set(password)) < policy.min_distinct:
        problems.append(f"must use at least {policy.min_distinct} different characters")
    lowered = password.strip().lower()
    if lowered in COMMON_PASSWORDS or lowered in policy.blocked:
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

    def change_password(self, password_hash: str, now: datetime) -> None:
        """Replace the password hash; the event carries no hash, only that it changed and when."""
        self.password_hash = password_hash
        self._record(UserPasswordChanged(), to_millisecond_utc(now))

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
