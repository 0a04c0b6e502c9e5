"""Refresh tokens: one-use, rotated within a family; a reused one means theft and ends the family."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from command_api.domain.aggregate import to_millisecond_utc


class RefreshVerdict(StrEnum):
    VALID = "valid"
    EXPIRED = "expired"
    REUSED = "reused"
    REVOKED = "revoked"


def hash_refresh_token(raw: str) -> str:
    """Only this digest is stored: a leaked database does not hand out sessions."""
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class RefreshToken:
    token_hash: str
    family_id: str
    user_id: str
    issued_at: datetime
    expires_at: datetime
    used_at: datetime | None = None
    revoked_at: datetime | None = None

    @classmethod
    def first_of_family(
        cls, *, token_hash: str, family_id: str, user_id: str, now: datetime, lifetime: timedelta
    ) -> RefreshToken:
        now = to_millisecond_utc(now)
        return cls(token_hash, family_id, user_id, issued_at=now, expires_at=now + lifetime)

    def verdict(self, now: datetime) -> RefreshVerdict:
        if self.revoked_at is not None:
            return RefreshVerdict.REVOKED
        if self.used_at is not None:
            return RefreshVerdict.REUSED
        if now >= self.expires_at:
            return RefreshVerdict.EXPIRED
        return RefreshVerdict.VALID

    def rotate(
        self, *, token_hash: str, now: datetime, lifetime: timedelta
    ) -> tuple[RefreshToken, RefreshToken]:
        """(this token marked used, its successor in the same family)."""
        if self.verdict(now) is not RefreshVerdict.VALID:
            raise ValueError(f"cannot rotate a {self.verdict(now).value} refresh token")
        now = to_millisecond_utc(now)
        successor = RefreshToken(
            token_hash, self.family_id, self.user_id, issued_at=now, expires_at=now + lifetime
        )
        return replace(self, used_at=now), successor
