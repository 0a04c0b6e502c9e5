"""What the application layer needs of a projection (the Redis ones are in `projectors.adapters`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from redis.asyncio import Redis

from events import EventEnvelope
from projectors.domain.outcomes import ApplyResult
from readmodels.generations import GenerationClaim
from readmodels.scripts import LuaScript


class Projection(Protocol):
    """One read model: which events it reads, and how a batch of them is applied to Redis."""

    @property
    def name(self) -> str: ...
    @property
    def prefix(self) -> str: ...
    @property
    def buckets(self) -> int: ...
    @property
    def aggregate_types(self) -> frozenset[str]: ...
    @property
    def announces(self) -> bool: ...
    @property
    def script(self) -> LuaScript: ...

    def accepts(self, envelope: EventEnvelope) -> bool: ...

    async def apply(
        self,
        redis: Redis,
        generation: str,
        envelopes: Sequence[EventEnvelope],
        *,
        announce: bool = True,
        claim: GenerationClaim | None = None,
    ) -> ApplyResult:
        """`claim`: the live generation's claim, for `generation` as last claimed: confirmed
        before anything is written (with the projection's first reads, where it has some);
        raises `GenerationMoved` (nothing written) if another generation is live."""
        ...
