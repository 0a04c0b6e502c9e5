"""Login attempts counted per e-mail and per client address in Redis, in fixed windows."""

from __future__ import annotations

import hashlib

import redis.asyncio as aioredis

from command_api.application.errors import LoginThrottled
from readmodels.keyspace import login_throttle_keys


class RedisLoginThrottle:
    """At most `max_attempts` failed logins per window for one e-mail, and for one address.

    Every attempt is counted before the password is checked (so a burst of parallel guesses is
    cut off too); a successful one is then taken back, so only failures use up the allowance.
    """

    def __init__(self, redis: aioredis.Redis, *, prefix: str, max_attempts: int, window_seconds: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self._max = max_attempts
        self._window = window_seconds

    def keys(self, email: str, client: str) -> tuple[str, str]:
        # The e-mail is hashed: key names show up in monitoring, addresses should not.
        digest = hashlib.sha256(email.encode()).hexdigest()[:32]
        return login_throttle_keys(self._prefix, digest, client)

    async def attempt(self, email: str, client: str) -> None:
        by_email, by_client = self.keys(email, client)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(by_email)
            pipe.expire(by_email, self._window, nx=True)
            pipe.ttl(by_email)
            pipe.incr(by_client)
            pipe.expire(by_client, self._window, nx=True)
            pipe.ttl(by_client)
            email_count, _, email_ttl, client_count, _, client_ttl = await pipe.execute()
        waits = [
            max(int(ttl), 1)
            for count, ttl in ((email_count, email_ttl), (client_count, client_ttl))
            if int(count) > self._max
        ]
        if waits:
            raise LoginThrottled(retry_after=max(waits))

    async def succeeded(self, email: str, client: str) -> None:
        await self._redis.eval(_TAKE_BACK, 2, *self.keys(email, client))


# Decrement only counters still alive: a DECR on an expired key would create one without a TTL.
_TAKE_BACK = """
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then redis.call('DECR', key) end
end
return 0
"""
