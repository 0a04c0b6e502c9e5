"""The per-user command rate: a token bucket in Redis, taken from atomically by one Lua script.

Each user's bucket holds at most `burst` tokens and refills at `per_second`; a command takes one,
and with none left it is refused (429) with the seconds until one is back. The key
(`SessionKeys.command_rate`) expires once the bucket would be full again.
"""

from __future__ import annotations

import math
import time

import redis.asyncio as aioredis

from service_runtime.sessions import SessionKeys


class RedisCommandRate:
    def __init__(self, redis: aioredis.Redis, *, prefix: str, per_second: float, burst: int) -> None:
        self._keys = SessionKeys(prefix)
        self._per_second = per_second
        self._burst = burst
        self._take = redis.register_script(_TAKE)

    async def take(self, user_id: str) -> int:
        """0 when the command may go ahead (a token taken), else whole seconds to wait."""
        wait = float(
            await self._take(
                keys=[self._keys.command_rate(user_id)],
                args=[self._per_second, self._burst, time.time()],
            )
        )
        return 0 if wait <= 0 else max(1, math.ceil(wait))


# Returns 0 (a token was taken) or the seconds until one is back (nothing taken).
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
if now > at then tokens = math.min(burst, tokens + (now - at) * rate) end
if tokens < 1 then return tostring((1 - tokens) / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - 1), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return 0
"""
