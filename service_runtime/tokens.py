"""Access tokens: issued by the command API, verified by both APIs with this same code."""

from __future__ import annotations

import math
import uuid
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
    return Principal(
        user_id=claims["sub"], roles=tuple(roles), token_id=str(claims["jti"]), issued_at=float(issued_at)
    )
