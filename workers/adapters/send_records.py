"""Send records in Redis: one hash per event id, "sending" (claimed, expiring) or "sent" (kept).

Every step after the claim names its owner: `confirm` (right before the SMTP DATA) succeeds only
for the claim's owner, or retakes a lapsed claim nobody else took, and renews its expiry; `mark_sent`
reports whether the owner still held the claim when the message went out.
"""

from __future__ import annotations

import time
from typing import cast

from redis.asyncio import Redis

from readmodels.keyspace import send_record_key
from workers.application.welcome_emails import ClaimState, ConfirmState, MarkState

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

# Confirm just before the message is handed over: ours (renewed), or lapsed and retaken; else lost.
_CONFIRM = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'sent' then return 'sent' end
if state and redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 'held' end
redis.call('HSET', KEYS[1], 'state', 'sending', 'owner', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 'confirmed'
"""

# Mark sent, whoever holds the record now: the message went out, and a taker-over that has not
# sent yet must find "sent" at its own confirm. The answer says whether the claim was still ours.
_MARK = """
local state = redis.call('HGET', KEYS[1], 'state')
local owner = redis.call('HGET', KEYS[1], 'owner')
redis.call('HSET', KEYS[1], 'state', 'sent', 'sent_at', ARGV[2])
redis.call('HDEL', KEYS[1], 'owner')
redis.call('PERSIST', KEYS[1])
if state == 'sent' then return 'already_sent' end
if owner == ARGV[1] then return 'marked' end
return 'claim_lost'
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
        self._confirm = redis.register_script(_CONFIRM)
        self._mark = redis.register_script(_MARK)

    def key(self, event_id: str) -> str:
        return send_record_key(self.prefix, self.kind, event_id)

    async def claim(self, event_id: str, owner: str) -> ClaimState:
        ttl_ms = int(self.claim_ttl_seconds * 1000)
        result = await self._claim(keys=[self.key(event_id)], args=[owner, ttl_ms, f"{time.time():.3f}"])
        return cast(ClaimState, _text(result))

    async def confirm(self, event_id: str, owner: str) -> ConfirmState:
        ttl_ms = int(self.claim_ttl_seconds * 1000)
        result = await self._confirm(keys=[self.key(event_id)], args=[owner, ttl_ms])
        return cast(ConfirmState, _text(result))

    async def mark_sent(self, event_id: str, owner: str) -> MarkState:
        # Kept without expiry: a redelivery of any age, even a replay of the topic, finds it.
        result = await self._mark(keys=[self.key(event_id)], args=[owner, f"{time.time():.3f}"])
        return cast(MarkState, _text(result))

    async def release(self, event_id: str, owner: str) -> None:
        await self._release(keys=[self.key(event_id)], args=[owner])

    async def state(self, event_id: str) -> str | None:
        raw = await self.redis.hget(self.key(event_id), "state")
        return raw.decode() if isinstance(raw, bytes) else raw


def _text(result: object) -> str:
    return result.decode() if isinstance(result, bytes) else str(result)
