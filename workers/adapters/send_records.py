"""Send records in Redis: one hash per event id, "sending" (claimed, expiring) or "sent" (kept)."""

from __future__ import annotations

import time
from typing import cast

from redis.asyncio import Redis

from readmodels.keyspace import send_record_key
from workers.application.welcome_emails import ClaimState

# Claim in one step: whoever finds the record absent takes it; "sent" and others' claims stand.
_CLAIM = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'sent' then return 'sent' end
if state then return 'held' end
redis.call('HSET', KEYS[1], 'state', 'sending', 'owner', ARGV[1], 'claimed_at', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 'claimed'
"""

# Release only our own claim: after an expiry another consumer may hold the record now.
_RELEASE = """
if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] and redis.call('HGET', KEYS[1], 'state') == 'sending'
then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Long enough for one SMTP exchange (connect, EHLO, MAIL, RCPT, DATA, QUIT, each bounded by the
# SMTP timeout) with room to spare: a shorter claim could lapse during a slow but successful send.
DEFAULT_CLAIM_TTL_SECONDS = 120.0


class RedisSendRecords:
    def __init__(
        self, redis: Redis, prefix: str, kind: str, claim_ttl_seconds: float = DEFAULT_CLAIM_TTL_SECONDS
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.kind = kind
        self.claim_ttl_seconds = claim_ttl_seconds
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)

    def key(self, event_id: str) -> str:
        return send_record_key(self.prefix, self.kind, event_id)

    async def claim(self, event_id: str, owner: str) -> ClaimState:
        ttl_ms = int(self.claim_ttl_seconds * 1000)
        result = await self._claim(keys=[self.key(event_id)], args=[owner, ttl_ms, f"{time.time():.3f}"])
        state = result.decode() if isinstance(result, bytes) else str(result)
        return cast(ClaimState, state)

    async def mark_sent(self, event_id: str) -> None:
        # Kept without expiry: a redelivery of any age, even a replay of the topic, finds it.
        key = self.key(event_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"state": "sent", "sent_at": f"{time.time():.3f}"})
            pipe.hdel(key, "owner")
            pipe.persist(key)
            await pipe.execute()

    async def release(self, event_id: str, owner: str) -> None:
        await self._release(keys=[self.key(event_id)], args=[owner])

    async def state(self, event_id: str) -> str | None:
        raw = await self.redis.hget(self.key(event_id), "state")
        return raw.decode() if isinstance(raw, bytes) else raw
