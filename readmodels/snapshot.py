"""An aggregate's read model as a reader gets it from Redis."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Snapshot:
    """An aggregate's read model as stored: `doc` None if unknown or deleted; version 0 if unknown."""

    doc: bytes | None
    owner_id: str | None
    version: int
