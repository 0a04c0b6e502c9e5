"""What the replay use cases need from the outside world, as protocols (adapters implement them)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from events import EventEnvelope
from projectors.replay.domain.tally import ProjectionTally


class BusyError(RuntimeError):
    """Another rebuild holds one of the projections."""


class SourceUnavailable(RuntimeError):
    """The source cannot be read (a topic does not exist)."""


class LiveGenerationError(RuntimeError):
    """Refused: the generation is live."""


class ClosingBatch(list[EventEnvelope]):
    """A batch after which the pass brings no more events of any aggregate it brought so far (the
    Kafka source reads one partition at a time, and an aggregate's events share a partition, so
    each partition's last batch is one): a writer may write out what it holds for them now
    instead of at the pass's end. It may be empty (a partition whose last records were
    transaction markers)."""


class SourcePass(Protocol):
    """One pass over the source: from where the previous pass stopped to the end as of its start."""

    @property
    def expected(self) -> int | None:
        """Events this pass will read, when the source knows beforehand."""

    def batches(self) -> AsyncIterator[Sequence[EventEnvelope]]:
        """Decoded events, in an order that keeps each aggregate's versions in order; some
        batches may be `ClosingBatch`es."""


class EventSource(Protocol):
    """The event log a replay reads: the MongoDB events collection or the Kafka topics."""

    name: str
    # Records skipped because they are not valid events (the live projector dead-letters them).
    invalid: int

    async def sizes(self) -> dict[str, int]:
        """Events per aggregate type the source holds now."""

    async def next_pass(self, exact: bool = True) -> SourcePass:
        """The next pass; its end is fixed now, so a pass finishes even while events keep coming.

        An exact pass reads every event committed before it began. A pass that need not be
        exact (a catch-up before the swap) may use a cheaper way that could miss some.
        """


class GenerationWriter(Protocol):
    """Applies events to the generations being built (atomic, version-guarded, pipelined)."""

    @property
    def tallies(self) -> Mapping[str, ProjectionTally]:
        """What the writes did, per projection."""

    @property
    def targets(self) -> Mapping[str, str]:
        """The generation each projection is built into."""

    async def write(self, envelopes: Sequence[EventEnvelope]) -> None:
        """Apply `envelopes` (or hold them, to write later); after a `ClosingBatch`, what it holds
        for the aggregates written so far may be written out, none of their events being left."""

    async def flush(self) -> None:
        """Return once everything written so far is in Redis (raises what a write raised)."""

    def shared(self) -> None:
        """From now on others (the live projector) write the generations too: no shortcut that
        needs to be their only writer (a flush comes first)."""


class Generations(Protocol):
    """The generations of the projections and the pointers naming the live ones."""

    async def claim_live(self, projection: str) -> str:
        """The live generation, the initial one set if none is (as a projector does)."""

    async def live(self, projection: str) -> str:
        """The live generation, read only."""

    async def clear(self, generation: str) -> int:
        """Delete every key of a generation that is not live; returns how many."""

    async def key_count(self, generation: str) -> int: ...

    async def swap(self, projection: str, generation: str) -> str | None:
        """Point readers and projectors at `generation`; returns the generation it replaced."""

    def exclusive(self, projections: Sequence[str]) -> AbstractAsyncContextManager[None]:
        """Hold the projections against other rebuilds (raises BusyError if one holds them)."""


class Digests(Protocol):
    async def digest(self, generation: str) -> str: ...

    async def key_digests(self, generation: str) -> dict[bytes, str]: ...


class Progress(Protocol):
    def start_pass(self, label: str, expected: int | None) -> None: ...

    def advance(self, events: int) -> None: ...

    def say(self, message: str) -> None: ...


class AggregateHistory(Protocol):
    """One aggregate's events in version order (the query API's `EventsLog` is one)."""

    async def aggregate_events(
        self, aggregate_type: str, aggregate_id: str, up_to_version: int | None = None
    ) -> list[EventEnvelope]: ...


class NoProgress:
    """The `Progress` of a run nobody watches (in-process callers, benchmarks)."""

    def start_pass(self, label: str, expected: int | None) -> None:
        return None

    def advance(self, events: int) -> None:
        return None

    def say(self, message: str) -> None:
        return None
