"""The caller's identity: `verify_access_token` (the command side's own check), remembered per token,
then the user's "valid after" instant (service_runtime/sessions.py), read at most once a second.

A token's signature and claims do not change, so remembering that check until `exp` changes no
decision and takes it (tens of microseconds) off every read after the first. What ends a token
early (logout, logout-all, a role change) is the per-user instant, checked on every request.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from service_runtime.problems import Problem
from service_runtime.sessions import SessionCutoffs
from service_runtime.settings import Settings
from service_runtime.tokens import InvalidToken, Principal, VerifiedAccessTokens


class TokenVerifier:
    def __init__(
        self, settings: Settings, cutoffs: SessionCutoffs, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.cutoffs = cutoffs
        # The command API's memory of verified tokens (`CAMPAIGNS_ACCESS_TOKEN_CACHE_SIZE`); the
        # clock is injected by tests.
        self._tokens = VerifiedAccessTokens(settings, size=settings.access_token_cache_size, clock=clock)

    async def principal(self, token: str) -> Principal:
        """The token's principal, or InvalidToken (also for a token its user's sessions outlived)."""
        principal = self._tokens.principal(token)
        if not await self.cutoffs.allows(principal):
            raise InvalidToken("the session was ended")
        return principal

    def remembered(self, authorization: str | None) -> Principal | None:
        """The caller, when everything `authenticate` checks is already remembered and holds (a
        verified token not yet expired, its user's instant read within the second and before the
        token): the same answer without a coroutine. None: ask `authenticate`, which decides
        (and refuses) as always."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        principal = self._tokens.remembered(token.strip())
        if principal is None:
            return None
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
