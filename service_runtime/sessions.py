"""Revocable sessions and per-user limits, shared by both APIs.

Access tokens are stateless JWTs; what ends them before their `exp` is a per-user "valid after"
instant in Redis. Logout, logout-all, a role change and a password change set it to now; a token
whose `iat` is before it is refused. Each API process remembers the instant it read for a user
for `session_check_seconds` (1 s by default), so a revocation takes effect within that long on
every worker without a Redis read per request.

`SessionKeys` names every Redis key of sessions and per-user limits (one place).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import redis.asyncio as aioredis

if TYPE_CHECKING:  # only an annotation here: the relay and the scheduler load no JWT library
    from service_runtime.tokens import Principal

MAX_REMEMBERED = 10_000


class SessionKeys:
    """Every Redis key of sessions and per-user limits, under `<prefix>:session:`."""

    def __init__(self, prefix: str) -> None:
        self._base = f"{prefix}:session"

    def valid_after(self, user_id: str) -> str:
        """String: epoch seconds; the user's access tokens issued before it are refused."""
        return f"{self._base}:valid-after:{user_id}"

    def refresh_grace(self, token_hash: str) -> str:
        """String: the successor of a refresh token rotated moments ago, sealed with the
        presented token (so only its holder can open it), for the grace window."""
        return f"{self._base}:refresh-grace:{token_hash}"

    def command_rate(self, user_id: str) -> str:
        """Hash: the user's command token bucket (`tokens`, `at`)."""
        return f"{self._base}:command-rate:{user_id}"


class SessionCutoffs:
    """Reads and sets the per-user "valid after" instants, with a short per-process memory."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str,
        check_seconds: float,
        token_ttl_seconds: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self.keys = SessionKeys(prefix)
        self._check_seconds = check_seconds
        # After the longest access-token lifetime, every token issued before the instant has
        # expired anyway: the key can go.
        self._key_seconds = token_ttl_seconds + 60
        self._clock = clock
        self._remembered: dict[str, tuple[float, float]] = {}
        self._reading: dict[str, asyncio.Future[float]] = {}

    async def end_sessions(self, user_id: str, at: float | None = None) -> float:
        """Refuse from now on every access token of this user issued before `at` (now)."""
        instant = math.floor((time.time() if at is None else at) * 1000) / 1000
        key = self.keys.valid_after(user_id)
        # Only ever moves forward, so two revocations racing keep the later one.
        await self._redis.eval(_RAISE, 1, key, str(instant), str(self._key_seconds))
        self._remembered.pop(user_id, None)
        self._reading.pop(user_id, None)  # a read sent before the instant was set
        return instant

    async def valid_after(self, user_id: str) -> float:
        """The user's instant (0 when none), at most `check_seconds` old.

        One read per user in flight: the requests that find the remembered instant expired
        together (a busy user's, every `check_seconds`) wait for the same read instead of each
        sending its own, each on a pooled connection (a burst of them made the pool open
        connections, a tenth of the query API's CPU at 100 commands/s)."""
        now = self._clock()
        remembered = self._remembered.get(user_id)
        if remembered is not None and now < remembered[1]:
            return remembered[0]
        reading = self._reading.get(user_id)
        if reading is not None:
            return await asyncio.shield(reading)
        reading = asyncio.ensure_future(self._read(user_id, now))
        self._reading[user_id] = reading
        return await asyncio.shield(reading)

    def remembered(self, user_id: str) -> float | None:
        """The user's instant if `valid_after` would answer it from memory now, else None."""
        remembered = self._remembered.get(user_id)
        if remembered is not None and self._clock() < remembered[1]:
            return remembered[0]
        return None

    async def _read(self, user_id: str, now: float) -> float:
        me = asyncio.current_task()
        try:
            raw = await self._redis.get(self.keys.valid_after(user_id))
        finally:
            # Not this read's to finish if `end_sessions` dropped it meanwhile: its instant may
            # be older than the one just set, and must not be remembered.
            current = self._reading.get(user_id) is me
            if current:
                del self._reading[user_id]
        instant = float(raw) if raw is not None else 0.0
        if current:
            if len(self._remembered) >= MAX_REMEMBERED:
                self._remembered.clear()
            self._remembered[user_id] = (instant, now + self._check_seconds)
        return instant

    async def allows(self, principal: Principal) -> bool:
        """Whether the token behind `principal` was issued after its user's sessions last ended."""
        return principal.issued_at >= await self.valid_after(principal.user_id)


_RAISE = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
end
return 0
"""
