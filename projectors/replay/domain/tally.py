"""What a replay did to each projection: events applied, already there, parked, refused."""

from __future__ import annotations

from dataclasses import dataclass, field

from projectors.domain.outcomes import ApplyResult, Outcome


@dataclass
class ProjectionTally:
    applied: int = 0
    duplicates: int = 0
    parked: int = 0
    refused: int = 0
    # A few reasons the read model gave for refusing, to print (the live projector dead-letters them).
    refusals: list[str] = field(default_factory=list)

    def add(self, result: ApplyResult) -> None:
        self.applied += result.applied
        self.duplicates += result.duplicates
        self.parked += result.parked
        for outcome in result.outcomes:
            if outcome.outcome is Outcome.FAILED:
                self.refused += 1
                if len(self.refusals) < 5:
                    self.refusals.append(outcome.error or "refused")

    def merge(self, other: ProjectionTally) -> None:
        """Add what another writer of the same generation did (a process of a split pass)."""
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.parked += other.parked
        self.refused += other.refused
        self.refusals = (self.refusals + other.refusals)[:5]
