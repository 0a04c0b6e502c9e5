"""User commands: register, log in, rotate and revoke refresh tokens, change the password, grant
and revoke the admin role. Logout, logout-all, a password change and a role change also end the
user's access tokens (`SessionEnder`)."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from command_api.application.commands import (
    ChangePassword,
    ChangeRoles,
    LogIn,
    LogOut,
    LogOutEverywhere,
    RefreshSession,
    RegisterUser,
)
from command_api.application.errors import (
    ConcurrencyConflict,
    EmailTaken,
    InvalidCredentials,
    SessionRejected,
    WrongCurrentPassword,
)
from command_api.application.ports import (
    AccessTokenIssuer,
    CommandResult,
    LoginThrottle,
    PasswordHasher,
    RefreshGrace,
    SessionEnder,
    UnitOfWork,
)
from command_api.domain.refresh_token import RefreshToken, RefreshVerdict, hash_refresh_token
from command_api.domain.user import (
    DEFAULT_POLICY,
    PasswordPolicy,
    User,
    check_new_password,
    check_registration,
    normalise_email,
)
from events.envelope import utc_now

CONFLICT_ATTEMPTS = 5


@dataclass(frozen=True)
class SessionTokens:
    access_token: str
    refresh_token: str
    expires_in: int
    device: str | None = None  # the device cookie to set (logins only)


@dataclass(frozen=True)
class Credentials:
    """What signing in needs besides the unit of work."""

    hasher: PasswordHasher
    throttle: LoginThrottle
    access_tokens: AccessTokenIssuer
    refresh_lifetime: timedelta
    sessions: SessionEnder
    grace: RefreshGrace
    family_lifetime: timedelta = timedelta(days=30)  # a family's absolute end, from its login
    refresh_grace: timedelta = timedelta(seconds=10)  # a second refresh of one token within it
    password_policy: PasswordPolicy = DEFAULT_POLICY


async def register_user(command: RegisterUser, uow: UnitOfWork, credentials: Credentials) -> CommandResult:
    email = normalise_email(command.email)
    check_registration(
        email=email, name=command.name, password=command.password, policy=credentials.password_policy
    )
    await credentials.throttle.admit_registration(command.client)
    async with uow:
        # Hash first, whether or not the e-mail is taken: the answer for a registered e-mail
        # costs the same work as for a new one, so its timing tells nothing.
        password_hash = await credentials.hasher.hash(command.password)
        if await uow.users.get_by_email(email) is not None:
            raise EmailTaken(f"{email} is already registered")
        user = User.register(
            user_id=str(uuid.uuid4()),
            email=email,
            name=command.name,
            password_hash=password_hash,
            now=utc_now(),
        )
        uow.users.add(user)
        # The unique index on e-mail decides between two registrations racing past the check above.
        await uow.commit(actor_id=user.id)
        return CommandResult(user.id, user.version)


async def log_in(command: LogIn, uow: UnitOfWork, credentials: Credentials) -> SessionTokens:
    email = normalise_email(command.email)
    admission = await credentials.throttle.admit(email, command.client, command.device)
    for attempt in range(CONFLICT_ATTEMPTS):
        async with uow:
            user = await uow.users.get_by_email(email)
            # Verify even without a user, so a wrong e-mail costs the same time as a wrong password.
            valid = await credentials.hasher.verify(user.password_hash if user else None, command.password)
            if user is None or not valid:
                raise InvalidCredentials("wrong e-mail or password")
            user.record_login(utc_now())
            uow.users.save(user)
            raw, token = _new_family(user.id, credentials)
            uow.refresh_tokens.add(token)
            try:
                await uow.commit(actor_id=user.id)
            except ConcurrencyConflict:
                # Two logins of one user at once: both are fine, the second just goes again.
                if attempt == CONFLICT_ATTEMPTS - 1:
                    raise
                continue
            device = await credentials.throttle.succeeded(admission, command.device)
            access = credentials.access_tokens.issue(user.id, list(user.roles))
            return SessionTokens(access.token, raw, access.expires_in, device)
    raise AssertionError("unreachable")


async def refresh_session(
    command: RefreshSession, uow: UnitOfWork, credentials: Credentials
) -> SessionTokens:
    presented = hash_refresh_token(command.refresh_token)
    async with uow:
        token = await uow.refresh_tokens.get(presented)
        if token is None:
            raise SessionRejected("unknown refresh token")
        now = utc_now()
        verdict = token.verdict(now)
        if verdict is RefreshVerdict.REUSED:
            # Within the grace window the same client refreshing twice (two tabs) gets the
            # successor the first refresh made; otherwise a copy is held by the client or a thief.
            used_at = token.used_at
            if used_at is not None and now - used_at < credentials.refresh_grace:
                repeated = await _repeat_rotation(command.refresh_token, token.user_id, uow, credentials)
                if repeated is not None:
                    return repeated
            await _revoke_family(uow, token.family_id, token.user_id, now)
            raise SessionRejected("refresh token already used; every session of its family is revoked")
        if verdict is not RefreshVerdict.VALID:
            raise SessionRejected(f"refresh token {verdict.value}")
        user = await uow.users.get(token.user_id)
        if user is None:
            raise SessionRejected("the token's user no longer exists")
        raw = _new_secret()
        used, successor = token.rotate(
            token_hash=hash_refresh_token(raw), now=now, lifetime=credentials.refresh_lifetime
        )
        uow.refresh_tokens.mark_used(used)
        uow.refresh_tokens.add(successor)
        try:
            await uow.commit(actor_id=user.id)
        except ConcurrencyConflict:
            # Someone rotated this very token a moment ago: a second tab, or a copy.
            repeated = await _repeat_rotation(command.refresh_token, token.user_id, uow, credentials)
            if repeated is not None:
                return repeated
            await _revoke_family(uow, token.family_id, token.user_id, now)
            raise SessionRejected(
                "refresh token already used; every session of its family is revoked"
            ) from None
        await credentials.grace.remember(command.refresh_token, raw)
        # Roles come from the user as they are now, so a granted role arrives with the next refresh.
        access = credentials.access_tokens.issue(user.id, list(user.roles))
        return SessionTokens(access.token, raw, access.expires_in)


async def _revoke_family(uow: UnitOfWork, family_id: str, user_id: str, now: datetime) -> None:
    """Revoke a family in a unit of work of its own, committed before the refusal that follows
    (whatever the enclosing one had staged, a rotation that lost its race, is discarded)."""
    async with uow:
        uow.refresh_tokens.revoke_family(family_id, now)
        await uow.commit(actor_id=user_id)


async def _repeat_rotation(
    presented: str, user_id: str, uow: UnitOfWork, credentials: Credentials
) -> SessionTokens | None:
    """The answer for a token rotated within the grace window: the same successor, if it is still
    usable, with a fresh access token; else None."""
    successor_raw = await credentials.grace.recall(presented)
    if successor_raw is None:
        return None
    successor = await uow.refresh_tokens.get(hash_refresh_token(successor_raw))
    if successor is None or successor.revoked_at is not None:
        return None
    user = await uow.users.get(user_id)
    if user is None:
        return None
    access = credentials.access_tokens.issue(user.id, list(user.roles))
    return SessionTokens(access.token, successor_raw, access.expires_in)


async def log_out(command: LogOut, uow: UnitOfWork, sessions: SessionEnder) -> None:
    """Revoke the token's whole family and end the user's access tokens (other sessions get new
    ones with their refresh tokens); an unknown token is not an error (nothing to end)."""
    async with uow:
        token = await uow.refresh_tokens.get(hash_refresh_token(command.refresh_token))
        if token is not None and token.revoked_at is None:
            uow.refresh_tokens.revoke_family(token.family_id, utc_now())
            await uow.commit(actor_id=token.user_id)
            await sessions.end_sessions(token.user_id)


async def log_out_everywhere(command: LogOutEverywhere, uow: UnitOfWork, sessions: SessionEnder) -> None:
    """Revoke every refresh family of the user and end all their access tokens."""
    async with uow:
        uow.refresh_tokens.revoke_user(command.user_id, utc_now())
        await uow.commit(actor_id=command.user_id)
    await sessions.end_sessions(command.user_id)


async def change_password(
    command: ChangePassword, uow: UnitOfWork, credentials: Credentials
) -> SessionTokens:
    """Check the current password (throttled like a login: it is a guess at the password, made
    with an access token that may be stolen), apply the policy to the new one, store its argon2
    hash with a UserPasswordChanged event, and end every session but this one: every other
    refresh family is revoked and every access token issued before now is refused within
    seconds on both APIs (monitor sockets close). This client continues in a new family."""
    for attempt in range(CONFLICT_ATTEMPTS):
        async with uow:
            user = await uow.users.get(command.user_id)
            if user is None:
                raise SessionRejected("the token's user no longer exists")
            # Before the throttle and the hashing: a refused new password costs no guess.
            check_new_password(
                user=user,
                current_password=command.current_password,
                new_password=command.new_password,
                policy=credentials.password_policy,
            )
            admission = await credentials.throttle.admit(user.email, command.client, command.device)
            if not await credentials.hasher.verify(user.password_hash, command.current_password):
                raise WrongCurrentPassword()
            now = utc_now()
            user.change_password(await credentials.hasher.hash(command.new_password), now)
            uow.users.save(user)
            raw, token = _new_family(user.id, credentials)
            uow.refresh_tokens.add(token)
            # Every other family revoked in the same transaction as the new hash.
            uow.refresh_tokens.revoke_user(user.id, now, keep_family=token.family_id)
            try:
                await uow.commit(actor_id=user.id)
            except ConcurrencyConflict:
                # The user changed meanwhile (a login, another change): decide again on the new state.
                await credentials.throttle.succeeded(admission, command.device)
                if attempt == CONFLICT_ATTEMPTS - 1:
                    raise
                continue
            await credentials.sessions.end_sessions(user.id)
            device = await credentials.throttle.succeeded(admission, command.device)
            # Issued after the sessions ended, so it is not refused with the others.
            access = credentials.access_tokens.issue(user.id, list(user.roles))
            return SessionTokens(access.token, raw, access.expires_in, device)
    raise AssertionError("unreachable")


async def change_roles(command: ChangeRoles, uow: UnitOfWork, sessions: SessionEnder) -> str:
    """Grant or revoke the admin role (records UserRolesChanged) and end the user's access
    tokens, so the change holds within seconds rather than at their expiry."""
    email = normalise_email(command.email)
    for attempt in range(CONFLICT_ATTEMPTS):
        async with uow:
            user = await uow.users.get_by_email(email)
            if user is None:
                raise LookupError(f"no user with e-mail {email}")
            now = utc_now()
            changed = user.grant("admin", now) if command.admin else user.revoke("admin", now)
            if not changed:
                return f"{email} is already an admin" if command.admin else f"{email} is not an admin"
            uow.users.save(user)
            try:
                await uow.commit(actor_id=None)
            except ConcurrencyConflict:
                if attempt == CONFLICT_ATTEMPTS - 1:
                    raise
                continue
            await sessions.end_sessions(user.id)
            state = "now an admin" if command.admin else "no longer an admin"
            return f"{email} is {state} (user {user.id}, version {user.version})"
    raise AssertionError("unreachable")


def _new_secret() -> str:
    return secrets.token_urlsafe(32)


def _new_family(user_id: str, credentials: Credentials) -> tuple[str, RefreshToken]:
    raw = _new_secret()
    token = RefreshToken.first_of_family(
        token_hash=hash_refresh_token(raw),
        family_id=str(uuid.uuid4()),
        user_id=user_id,
        now=utc_now(),
        lifetime=credentials.refresh_lifetime,
        family_lifetime=credentials.family_lifetime,
    )
    return raw, token
