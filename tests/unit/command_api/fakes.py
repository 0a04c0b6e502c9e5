"""In-memory stand-ins for the ports, so handlers are tested in milliseconds (unit tests only)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self

from command_api.application.errors import (
    ConcurrencyConflict,
    EmailTaken,
    IdempotencyKeyTaken,
    LoginThrottled,
    RegistrationThrottled,
)
from command_api.application.ports import AccessToken, IdempotentOutcome, LoginAdmission
from command_api.application.user_handlers import Credentials
from command_api.domain.aggregate import Aggregate, DomainEvent
from command_api.domain.campaign import Campaign, DueTimer
from command_api.domain.refresh_token import RefreshToken
from command_api.domain.user import User


class FakeStore:
    """What MongoDB would hold: aggregates by id, the event log, tokens, idempotency records."""

    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.campaigns: dict[str, Campaign] = {}
        self.events: list[tuple[DomainEvent, str | None]] = []
        self.tokens: dict[str, RefreshToken] = {}
        self.outcomes: dict[tuple[str, str], IdempotentOutcome] = {}
        # The durable timers, by campaign id, and each event's causation by (aggregate, version).
        self.timers: dict[str, DueTimer] = {}
        self.causes: dict[tuple[str, int], str | None] = {}
        # Runs just before a commit is checked: lets a test slip in a concurrent writer.
        self.before_commit: Callable[[], None] | None = None

    def event_types(self, aggregate_id: str) -> list[str]:
        return [e.event_type for e, _ in self.events if e.aggregate_id == aggregate_id]


class _Repository:
    def __init__(self, uow: FakeUnitOfWork, table: dict[str, Any]) -> None:
        self._uow = uow
        self._table = table

    async def get(self, key: str) -> Any:
        found = self._table.get(key)
        return copy.deepcopy(found)

    async def get_many(self, keys: list[str]) -> dict[str, Any]:
        return {key: copy.deepcopy(self._table[key]) for key in keys if key in self._table}

    def add(self, aggregate: Aggregate) -> None:
        self._uow.staged.append(("add", self._table, aggregate))

    def save(self, aggregate: Aggregate) -> None:
        self._uow.staged.append(("save", self._table, aggregate))


class FakeCampaigns(_Repository):
    def save_many(self, campaigns: Sequence[Campaign]) -> None:
        for campaign in campaigns:
            self.save(campaign)

    async def count_live(self, owner_id: str, limit: int) -> int:
        ended = ("deleted", "completed")
        live = [c for c in self._table.values() if c.owner_id == owner_id and c.status.value not in ended]
        return min(limit, len(live))


class FakeUsers(_Repository):
    async def get_by_email(self, email: str) -> User | None:
        for user in self._table.values():
            if user.email == email:
                return copy.deepcopy(user)  # type: ignore[no-any-return]
        return None


class FakeRefreshTokens:
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    async def get(self, token_hash: str) -> RefreshToken | None:
        return self._uow.store.tokens.get(token_hash)

    def add(self, token: RefreshToken) -> None:
        self._uow.staged.append(("token", None, token))

    def mark_used(self, token: RefreshToken) -> None:
        self._uow.staged.append(("token-used", None, token))

    def revoke_family(self, family_id: str, now: datetime) -> None:
        self._uow.staged.append(("revoke", None, (lambda t: t.family_id == family_id, now)))

    def revoke_user(self, user_id: str, now: datetime, *, keep_family: str | None = None) -> None:
        def revoked(token: RefreshToken) -> bool:
            return token.user_id == user_id and token.family_id != keep_family

        self._uow.staged.append(("revoke", None, (revoked, now)))


class FakeIdempotency:
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    async def get(self, scope: str, key: str) -> IdempotentOutcome | None:
        return self._uow.store.outcomes.get((scope, key))

    def add(self, outcome: IdempotentOutcome) -> None:
        self._uow.staged.append(("outcome", None, outcome))


class FakeUnitOfWork:
    """Commits all staged changes or none, with the same refusals as the MongoDB one."""

    def __init__(self, store: FakeStore | None = None) -> None:
        self.store = store or FakeStore()
        self.staged: list[tuple[str, Any, Any]] = []
        self.users = FakeUsers(self, self.store.users)
        self.campaigns = FakeCampaigns(self, self.store.campaigns)
        self.refresh_tokens = FakeRefreshTokens(self)
        self.idempotency = FakeIdempotency(self)
        self.commits = 0

    async def __aenter__(self) -> Self:
        self.staged = []
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.staged = []

    async def commit(self, *, actor_id: str | None, causation_id: str | None = None) -> None:
        if self.store.before_commit is not None:
            hook, self.store.before_commit = self.store.before_commit, None
            hook()
        self._check()
        for kind, table, item in self.staged:
            if kind in ("add", "save"):
                if isinstance(item, Campaign) and item.moves_timer():
                    timer = item.due_timer()
                    if timer is None:
                        self.store.timers.pop(item.id, None)
                    else:
                        self.store.timers[item.id] = timer
                for event in item.collect_events():
                    self.store.events.append((event, actor_id))
                    cause = event.causation_id or causation_id
                    self.store.causes[(event.aggregate_id, event.aggregate_version)] = cause
                table[item.id] = copy.deepcopy(item)
            elif kind in ("token", "token-used"):
                self.store.tokens[item.token_hash] = item
            elif kind == "revoke":
                chosen, now = item
                tokens = self.store.tokens
                for key, token in tokens.items():
                    if token.revoked_at is None and chosen(token):
                        tokens[key] = replace(token, revoked_at=now)
            else:
                self.store.outcomes[(item.scope, item.key)] = item
        self.staged = []
        self.commits += 1

    def _check(self) -> None:
        for kind, table, item in self.staged:
            if kind == "add" and isinstance(item, User):
                if any(u.email == item.email for u in table.values()):
                    raise EmailTaken(item.email)
            elif kind == "save" and table[item.id].version != item.stored_version:
                raise ConcurrencyConflict(item.id)
            elif kind == "token-used":
                stored = self.store.tokens[item.token_hash]
                if stored.used_at is not None or stored.revoked_at is not None:
                    raise ConcurrencyConflict("token used meanwhile")
            elif kind == "outcome" and (item.scope, item.key) in self.store.outcomes:
                raise IdempotencyKeyTaken(item.key)


class FakeHasher:
    def __init__(self) -> None:
        self.hashed = 0

    async def hash(self, password: str) -> str:
        self.hashed += 1
        return f"hashed:{password}"

    async def verify(self, password_hash: str | None, password: str) -> bool:
        return password_hash == f"hashed:{password}"


class FakeThrottle:
    """Counts attempts per e-mail and hands a success's reservation back (no Redis, no clock)."""

    def __init__(self, limit: int = 100, registrations: int = 100) -> None:
        self.limit = limit
        self.registrations = registrations
        self.attempts: dict[str, int] = {}
        self.successes = 0

    async def admit(self, email: str, client: str, device: str | None) -> LoginAdmission:
        if self.attempts.get(email, 0) >= self.limit:
            raise LoginThrottled(retry_after=30)
        self.attempts[email] = self.attempts.get(email, 0) + 1
        return LoginAdmission(account=email, group=client, take_back=(email,))

    async def succeeded(self, admission: LoginAdmission, device: str | None) -> str:
        for key in admission.take_back:
            self.attempts[key] -= 1
        self.successes += 1
        return device or f"device-{self.successes}"

    async def admit_registration(self, client: str) -> None:
        if self.registrations <= 0:
            raise RegistrationThrottled(retry_after=60)
        self.registrations -= 1


class FakeTokens:
    def issue(self, user_id: str, roles: list[str]) -> AccessToken:
        return AccessToken(token=f"access:{user_id}:{','.join(roles)}", expires_in=900)


class FakeSessions:
    """Records whose sessions were ended."""

    def __init__(self) -> None:
        self.ended: list[str] = []

    async def end_sessions(self, user_id: str) -> float:
        self.ended.append(user_id)
        return float(len(self.ended))


class FakeGrace:
    """The successors remembered per presented refresh token (the window is the handler's)."""

    def __init__(self) -> None:
        self.successors: dict[str, str] = {}

    async def remember(self, presented: str, successor: str) -> None:
        self.successors.setdefault(presented, successor)

    async def recall(self, presented: str) -> str | None:
        return self.successors.get(presented)


def fake_credentials(
    throttle: FakeThrottle | None = None,
    hasher: FakeHasher | None = None,
    *,
    grace: timedelta = timedelta(seconds=10),
    family_lifetime: timedelta = timedelta(days=30),
) -> Credentials:
    return Credentials(
        hasher=hasher or FakeHasher(),
        throttle=throttle or FakeThrottle(),
        access_tokens=FakeTokens(),
        refresh_lifetime=timedelta(days=1),
        sessions=FakeSessions(),
        grace=FakeGrace(),
        family_lifetime=family_lifetime,
        refresh_grace=grace,
    )
