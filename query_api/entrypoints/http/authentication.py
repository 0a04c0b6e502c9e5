"""The caller's identity: `verify_access_token` (the command side's own check), remembered per token,
then the user's "valid after" instant (service_runtime/sessions.py), read at most once a second.

A token's signature and claims do not change, so remembering that check until `exp` changes no
decision and takes it (tens of microseconds) off every read after the first. What ends a token
early (logout, logout-all, a role change) is the per-user instant, checked on every request.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

import orjson

from service_runtime.problems import Problem
from service_runtime.sessions import SessionCutoffs
from service_runtime.settings import Settings
from service_runtime.tokens import InvalidToken, Principal, verify_access_token

MAX_REMEMBERED = 10_000


class TokenVerifier:
    def __init__(
        self, settings: Settings, cutoffs: SessionCutoffs, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.cutoffs = cutoffs
        self._clock = clock  # seconds since the epoch; injected by tests
        self._verified: dict[str, tuple[Principal, float]] = {}

    async def principal(self, token: str) -> Principal:
        """The token's principal, or InvalidToken (also for a token its user's sessions outlived)."""
        principal = self._verified_principal(token)
        if not await self.cutoffs.allows(principal):
            raise InvalidToken("the session was ended")
        return principal

    def _verified_principal(self, token: str) -> Principal:
        now = self._clock()
        remembered = self._verified.get(token)
        if remembered is not None and now < remembered[1]:
            return remembered[0]
        principal = verify_access_token(self.settings, token)
        if now >= _expiry(token):  # the same wall clock as verify_access_token's, unless injected
            raise InvalidToken("the token has expired")
        if len(self._verified) >= MAX_REMEMBERED:
            self._verified.clear()
        self._verified[token] = (principal, _expiry(token))
        return principal

    def remembered(self, authorization: str | None) -> Principal | None:
        """The caller, when everything `authenticate` checks is already remembered and holds (a
        verified token not yet expired, its user's instant read within the second and before the
        token): the same answer without a coroutine. None: ask `authenticate`, which decides
        (and refuses) as always."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        remembered = self._verified.get(token.strip())
        if remembered is None or self._clock() >= remembered[1]:
            return None
        principal = remembered[0]
        instant = self.cutoffs.remembered(principal.user_id)
        if instant is None or principal.issued_at < instant:
            return None
        return principal

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller named by an `Authorization: Bearer` header, or a 401 problem."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Problem(401, "a bearer access token is required", headers={"WWW-Authenticate": "Bearer"})
        try:
            return await self.principal(token.strip())
        except InvalidToken as exc:
            raise Problem(
                401,
                "the access token is invalid or expired",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            ) from exc


def _expiry(token: str) -> float:
    """`exp` of a token whose signature and claims were just verified."""
    payload = token.split(".")[1]
    claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return float(claims["exp"])
