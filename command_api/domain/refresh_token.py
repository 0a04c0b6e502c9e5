"""Refresh tokens: one-use, rotated within a family; a reused one means theft and ends the family.

A family lives at most its absolute lifetime from its first login, however often it is rotated:
each successor expires at the sooner of its own lifetime and the family's end.
"""

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
    family_expires_at: datetime | None = None  # None: a token stored before families had an end

    @classmethod
    def first_of_family(
        cls,
        *,
        token_hash: str,
        family_id: str,
        user_id: str,
        now: datetime,
        lifetime: timedelta,
        family_lifetime: timedelta | None = None,
    ) -> RefreshToken:
        now = to_millisecond_utc(now)
        family_end = now + (family_lifetime if family_lifetime is not None else lifetime)
        return cls(
            token_hash,
            family_id,
            user_id,
            issued_at=now,
            expires_at=min(now + lifetime, family_end),
            family_expires_at=family_end,
        )

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
        # A family from before absolute lifetimes ends where its current token does.
        family_end = self.family_expires_at or self.expires_at
        successor = RefreshToken(
            token_hash,
            self.family_id,
            self.user_id,
            issued_at=now,
            expires_at=min(now + lifetime, family_end),
            family_expires_at=family_end,
        )
        return replace(self, used_at=now), successor
