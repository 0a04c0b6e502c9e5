"""What the handlers need from the outside world, as protocols the adapters implement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from command_api.domain.campaign import Campaign
from command_api.domain.refresh_token import RefreshToken
from command_api.domain.user import User


@dataclass(frozen=True)
class CommandResult:
    id: str
    version: int


@dataclass(frozen=True)
class IdempotentOutcome:
    """The answer given to the first request under an Idempotency-Key, replayed to its repeats."""

    scope: str
    key: str
    fingerprint: str
    result: CommandResult
    created_at: datetime


class UserRepository(Protocol):
    async def get(self, user_id: str) -> User | None: ...
    async def get_by_email(self, email: str) -> User | None: ...
    def add(self, user: User) -> None: ...
    def save(self, user: User) -> None: ...


class CampaignRepository(Protocol):
    """`add` and `save` also stage the campaign's durable timer (`Campaign.due_timer`) when its
    pending events move it, so the timer commits, or not, with them."""

    async def get(self, campaign_id: str) -> Campaign | None: ...
    async def get_many(self, campaign_ids: list[str]) -> dict[str, Campaign]:
        """The campaigns found among these ids, by id (one round trip for a batch of firings)."""
        ...

    async def count_live(self, owner_id: str, limit: int) -> int:
        """The owner's campaigns neither deleted nor completed, counted up to `limit`."""
        ...

    def add(self, campaign: Campaign) -> None: ...
    def save(self, campaign: Campaign) -> None: ...
    def save_many(self, campaigns: Sequence[Campaign]) -> None:
        """`save` of each, every campaign still version-checked, in as few writes as they allow
        (read with `get_many` in the same unit of work)."""
        ...


class RefreshTokenRepository(Protocol):
    async def get(self, token_hash: str) -> RefreshToken | None: ...
    def add(self, token: RefreshToken) -> None: ...
    def mark_used(self, token: RefreshToken) -> None:
        """Stage: the stored token becomes used, provided it is still unused and unrevoked."""
        ...

    def revoke_family(self, family_id: str, now: datetime) -> None:
        """Stage: every unrevoked token of the family is revoked (committed with the unit of
        work; a revocation that precedes a refusal is committed before the refusal is raised)."""
        ...

    def revoke_user(self, user_id: str, now: datetime, *, keep_family: str | None = None) -> None:
        """Stage: every unrevoked family of the user but `keep_family` (logout-all, password
        change: the session that changed it goes on in a new family, in the same transaction)."""
        ...


class IdempotencyRepository(Protocol):
    async def get(self, scope: str, key: str) -> IdempotentOutcome | None: ...
    def add(self, outcome: IdempotentOutcome) -> None: ...


class UnitOfWork(Protocol):
    """Staged changes to aggregates, committed with their events atomically, or not at all.

    `async with uow:` starts afresh; leaving without `commit` discards what was staged.
    `commit` raises ConcurrencyConflict when an aggregate's stored version moved (or its next
    event version exists already), EmailTaken when the e-mail is someone's already, and
    IdempotencyKeyTaken when another request under the same key committed first.
    """

    @property
    def users(self) -> UserRepository: ...
    @property
    def campaigns(self) -> CampaignRepository: ...
    @property
    def refresh_tokens(self) -> RefreshTokenRepository: ...
    @property
    def idempotency(self) -> IdempotencyRepository: ...

    async def __aenter__(self) -> Self: ...
    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...
    async def commit(self, *, actor_id: str | None, causation_id: str | None = None) -> None: ...


class PasswordHasher(Protocol):
    async def hash(self, password: str) -> str: ...
    async def verify(self, password_hash: str | None, password: str) -> bool:
        """False for a wrong password, and for no hash at all (after the same work as a check)."""
        ...


@dataclass(frozen=True)
class LoginAdmission:
    """A login attempt let through to the password check, and what a success gives back."""

    account: str  # a digest of the e-mail
    group: str  # the client's address group
    take_back: tuple[str, ...]


class LoginThrottle(Protocol):
    async def admit(self, email: str, client: str, device: str | None) -> LoginAdmission:
        """Reserve this attempt against the budgets that apply to this client; raise
        LoginThrottled (counting nothing) when one is spent."""
        ...

    async def succeeded(self, admission: LoginAdmission, device: str | None) -> str:
        """A successful login: give back what only failures use; return the device cookie."""
        ...

    async def admit_registration(self, client: str) -> None:
        """Count one registration from this client; raise RegistrationThrottled over the limit."""
        ...


@dataclass(frozen=True)
class AccessToken:
    token: str
    expires_in: int


class AccessTokenIssuer(Protocol):
    def issue(self, user_id: str, roles: list[str]) -> AccessToken: ...


class SessionEnder(Protocol):
    async def end_sessions(self, user_id: str) -> float:
        """Refuse from now on (within seconds, on both APIs) every access token of this user
        issued before now; return the instant."""
        ...


class RefreshGrace(Protocol):
    """The successor of a refresh token rotated moments ago, for a second presenter of the same
    token (two tabs refreshing at once) within the grace window."""

    async def remember(self, presented: str, successor: str) -> None: ...
    async def recall(self, presented: str) -> str | None:
        """The successor, waiting briefly for a rotation still committing; None when none."""
        ...
