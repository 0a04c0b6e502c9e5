"""In-memory stand-ins for the replay's ports: an event log read by position, generations as dicts.

`MemoryGenerations` keeps, per generation, each aggregate's applied versions with the same
guard the Redis projection has (duplicates ignored, an event ahead of its predecessor parked
until it arrives), so the protocol's promises can be checked without servers.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from events import EventEnvelope
from projectors.replay.application.ports import LiveGenerationError
from projectors.replay.domain.tally import ProjectionTally


@dataclass
class MemoryPass:
    events: list[EventEnvelope]

    @property
    def expected(self) -> int:
        return len(self.events)

    async def batches(self) -> AsyncIterator[Sequence[EventEnvelope]]:
        for start in range(0, len(self.events), 3):
            yield self.events[start : start + 3]


@dataclass
class MemorySource:
    journal: list[str]
    log: list[EventEnvelope] = field(default_factory=list)
    name: str = "memory"
    invalid: int = 0
    position: int = 0
    passes: int = 0
    fail_on_pass: int | None = None

    async def sizes(self) -> dict[str, int]:
        return dict(Counter(e.aggregate_type for e in self.log))

    async def next_pass(self, exact: bool = True) -> MemoryPass:
        self.passes += 1
        self.journal.append(f"pass {self.passes}" + ("" if exact else " (catch-up)"))
        if self.passes == self.fail_on_pass:
            raise ConnectionError("source went away")
        events, self.position = self.log[self.position :], len(self.log)
        return MemoryPass(events)


@dataclass
class GuardedModel:
    """One generation: per aggregate the last applied version, and parked events."""

    applied: dict[str, int] = field(default_factory=dict)
    parked: dict[str, set[int]] = field(default_factory=dict)

    def apply(self, envelope: EventEnvelope) -> str:
        key, version = envelope.aggregate_id, envelope.aggregate_version
        last = self.applied.get(key, 0)
        if version <= last:
            return "duplicate"
        if version > last + 1:
            self.parked.setdefault(key, set()).add(version)
            return "parked"
        self.applied[key] = version
        waiting = self.parked.get(key, set())
        while self.applied[key] + 1 in waiting:
            waiting.discard(self.applied[key] + 1)
            self.applied[key] += 1
        return "applied"


@dataclass
class MemoryGenerations:
    journal: list[str]
    pointers: dict[str, str] = field(default_factory=dict)
    models: dict[str, GuardedModel] = field(default_factory=dict)
    # Runs inside `swap` just before the pointer moves (the live projector racing the swap).
    before_swap: Callable[[], None] | None = None
    # Generations whose digest differs from the truth, as many comparisons as given.
    drift: Counter[str] = field(default_factory=Counter)

    def model(self, generation: str) -> GuardedModel:
        return self.models.setdefault(generation, GuardedModel())

    async def claim_live(self, projection: str) -> str:
        return self.pointers.setdefault(projection, f"{projection}.1")

    async def live(self, projection: str) -> str:
        return self.pointers.get(projection, f"{projection}.1")

    async def clear(self, generation: str) -> int:
        if generation in self.pointers.values():
            raise LiveGenerationError(f"{generation} is live")
        self.journal.append(f"clear {generation}")
        removed = self.models.pop(generation, GuardedModel())
        return len(removed.applied)

    async def key_count(self, generation: str) -> int:
        return len(self.model(generation).applied)

    async def swap(self, projection: str, generation: str) -> str | None:
        if self.before_swap is not None:
            self.before_swap()
        self.journal.append(f"swap {projection} -> {generation}")
        old = self.pointers.get(projection)
        self.pointers[projection] = generation
        return old

    @contextlib.asynccontextmanager
    async def exclusive(self, projections: Sequence[str]) -> AsyncIterator[None]:
        self.journal.append("lock")
        try:
            yield
        finally:
            self.journal.append("unlock")

    async def digest(self, generation: str) -> str:
        model = self.model(generation)
        if self.drift[generation]:
            self.drift[generation] -= 1
            return "tampered"
        return repr(sorted(model.applied.items()))

    async def key_digests(self, generation: str) -> dict[bytes, str]:
        return {key.encode(): str(version) for key, version in self.model(generation).applied.items()}


class LiveProjector:
    """Applies events to whatever generation the pointer names when it runs (per batch)."""

    def __init__(self, generations: MemoryGenerations, projection: str) -> None:
        self.generations = generations
        self.projection = projection

    def project(self, envelopes: Sequence[EventEnvelope]) -> None:
        generation = self.generations.pointers.get(self.projection, f"{self.projection}.1")
        model = self.generations.model(generation)
        for envelope in envelopes:
            model.apply(envelope)


class MemoryWriter:
    def __init__(self, generations: MemoryGenerations, targets: Mapping[str, str]) -> None:
        self.generations = generations
        self.targets = dict(targets)
        self.tallies = {p: ProjectionTally() for p in targets}

    async def write(self, envelopes: Sequence[EventEnvelope]) -> None:
        for projection, generation in self.targets.items():
            model = self.generations.model(generation)
            for envelope in envelopes:
                outcome = model.apply(envelope)
                tally = self.tallies[projection]
                if outcome == "applied":
                    tally.applied += 1
                elif outcome == "duplicate":
                    tally.duplicates += 1
                else:
                    tally.parked += 1

    async def flush(self) -> None:
        return None

    def shared(self) -> None:
        self.generations.journal.append("writer shared")


def memory_writers(generations: MemoryGenerations):  # type: ignore[no-untyped-def]
    @contextlib.asynccontextmanager
    async def open_writer(targets: Mapping[str, str]) -> AsyncIterator[MemoryWriter]:
        yield MemoryWriter(generations, targets)

    return open_writer


class MemoryProgress:
    def __init__(self) -> None:
        self.events = 0
        self.messages: list[str] = []

    def start_pass(self, label: str, expected: int | None) -> None:
        self.messages.append(f"{label}: {expected}")

    def advance(self, events: int) -> None:
        self.events += events

    def say(self, message: str) -> None:
        self.messages.append(message)
