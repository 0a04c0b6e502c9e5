"""Access tokens: issued by the command API, verified by both APIs with this same code."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from service_runtime.keys import KeyUnavailable, signing_key, verification_keys
from service_runtime.settings import Settings

ALGORITHM = "EdDSA"
ACCESS = "access"
TOKEN_TYPE = "at+jwt"  # noqa: S105 - RFC 9068: the header that tells an access token from any other JWT


class InvalidToken(Exception):
    """The token is missing, malformed, forged, expired or of the wrong kind."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user id and roles carried by a verified access token."""

    user_id: str
    roles: tuple[str, ...]
    token_id: str
    issued_at: float = 0.0  # `iat`, epoch seconds (milliseconds kept: see service_runtime/sessions.py)
    expires_at: float = math.inf  # `exp`, epoch seconds

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


def issue_access_token(
    settings: Settings, user_id: str, roles: list[str], now: datetime | None = None
) -> str:
    issued = now or datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": user_id,
        "roles": roles,
        "type": ACCESS,
        "jti": uuid.uuid4().hex,
        # Milliseconds, not PyJWT's whole seconds: a token issued just after a logout must not look
        # issued before it (service_runtime/sessions.py compares `iat` with the logout's instant).
        "iat": math.floor(issued.timestamp() * 1000) / 1000,
        "exp": issued + timedelta(seconds=settings.access_token_ttl_seconds),
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
    }
    key = signing_key(settings)
    return jwt.encode(claims, key.private, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": TOKEN_TYPE})


def verify_access_token(settings: Settings, token: str) -> Principal:
    """Check the header (`typ`, `kid`), signature (pinned algorithm), expiry, issuer, audience and
    type; or raise."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc
    if header.get("typ") != TOKEN_TYPE or header.get("alg") != ALGORITHM:
        raise InvalidToken("not an EdDSA at+jwt access token")
    try:
        key = verification_keys(settings).get(str(header.get("kid")))
    except KeyUnavailable as exc:
        raise InvalidToken(str(exc)) from exc
    if key is None:
        raise InvalidToken("unknown key id")
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": ["sub", "roles", "type", "jti", "iat", "exp", "iss", "aud"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc
    if claims.get("type") != ACCESS:
        raise InvalidToken("not an access token")
    roles = claims.get("roles")
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise InvalidToken("malformed roles claim")
    if not isinstance(claims["sub"], str):
        raise InvalidToken("malformed subject")
    issued_at = claims["iat"]
    if not isinstance(issued_at, int | float) or isinstance(issued_at, bool):
        raise InvalidToken("malformed iat")
    expires_at = claims["exp"]  # PyJWT checked it is a number in the future
    return Principal(
        user_id=claims["sub"],
        roles=tuple(roles),
        token_id=str(claims["jti"]),
        issued_at=float(issued_at),
        expires_at=float(expires_at),
    )


class VerifiedAccessTokens:
    """`verify_access_token`, remembered per token until its `exp`, for at most `size` tokens.

    A token's header, signature and claims never change, and the verification keys are read once
    per process, so a token that verified once verifies again until it expires: remembering the
    answer changes no decision and takes the Ed25519 check and the claim parsing (about 60 µs)
    off every request after a token's first. Only tokens that verified are remembered (a forged
    one is checked, and refused, every time), looked up by the whole token, and dropped at
    their `exp` on this clock. What ends a token early (logout, a role or password change) is
    the per-user "valid after" instant (service_runtime/sessions.py), which callers still check
    on every request. Full, the oldest remembered token is forgotten first; `size` 0 remembers
    none.
    """

    def __init__(self, settings: Settings, *, size: int, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._size = size
        self._clock = clock  # seconds since the epoch: the clock PyJWT checks `exp` against
        self._verified: dict[str, Principal] = {}

    def principal(self, token: str) -> Principal:
        """The principal of a valid, unexpired token; else InvalidToken."""
        now = self._clock()
        principal = self._verified.get(token)
        if principal is not None:
            if now < principal.expires_at:
                return principal
            del self._verified[token]
        principal = verify_access_token(self._settings, token)
        if now >= principal.expires_at:  # an injected clock may be ahead of PyJWT's
            raise InvalidToken("the token has expired")
        if self._size > 0:
            if len(self._verified) >= self._size:
                del self._verified[next(iter(self._verified))]
            self._verified[token] = principal
        return principal

    def remembered(self, token: str) -> Principal | None:
        """The principal of a token already verified and not yet expired, without verifying
        anything; None when it is not remembered (ask `principal`, which decides)."""
        principal = self._verified.get(token)
        if principal is None or self._clock() >= principal.expires_at:
            return None
        return principal

    def __len__(self) -> int:
        return len(self._verified)
