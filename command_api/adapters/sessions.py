"""Session state the command API keeps in Redis: the refresh grace window and the per-user
"valid after" instants (service_runtime/sessions.py names the keys and checks them).

Two refreshes of one token within `grace_seconds` (two tabs of one browser) get the same
successor instead of revoking the family. The first rotation stores its successor under the
presented token's digest, sealed with AES-GCM under a key derived from the presented token itself:
only its holder can open it, and Redis never holds a usable refresh token.
"""

from __future__ import annotations

import asyncio
import hashlib
import os

import redis.asyncio as aioredis
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from command_api.domain.refresh_token import hash_refresh_token
from service_runtime.sessions import SessionKeys

RECALL_WAIT_SECONDS = 2.0
RECALL_STEP_SECONDS = 0.05


def _sealing_key(presented: str) -> bytes:
    # Not the stored digest (sha256 of the token): a different derivation, so neither Redis nor
    # MongoDB holds what opens the seal.
    return hashlib.sha256(b"refresh-grace\0" + presented.encode()).digest()


class RedisRefreshGrace:
    def __init__(self, redis: aioredis.Redis, *, prefix: str, grace_seconds: float) -> None:
        self._redis = redis
        self._keys = SessionKeys(prefix)
        self._grace_ms = max(1, int(grace_seconds * 1000))

    async def remember(self, presented: str, successor: str) -> None:
        nonce = os.urandom(12)
        sealed = nonce + AESGCM(_sealing_key(presented)).encrypt(nonce, successor.encode(), None)
        key = self._keys.refresh_grace(hash_refresh_token(presented))
        await self._redis.set(key, sealed, px=self._grace_ms, nx=True)

    async def recall(self, presented: str) -> str | None:
        key = self._keys.refresh_grace(hash_refresh_token(presented))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RECALL_WAIT_SECONDS
        while True:
            sealed = await self._redis.get(key)
            if isinstance(sealed, bytes):
                try:
                    return AESGCM(_sealing_key(presented)).decrypt(sealed[:12], sealed[12:], None).decode()
                except InvalidTag:
                    return None
            # Grace is for a token rotated moments ago; one rotated long ago has nothing stored,
            # and waiting for a rotation still committing is bounded.
            if loop.time() >= deadline:
                return None
            await asyncio.sleep(RECALL_STEP_SECONDS)
