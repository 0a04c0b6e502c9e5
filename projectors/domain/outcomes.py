"""What applying one event to a projection came to, and the tally of a batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Outcome(StrEnum):
    APPLIED = "applied"
    # Its version was already applied (redelivery, duplicate publish): nothing changed.
    DUPLICATE = "duplicate"
    # A version is missing before it: kept aside in Redis, applied when the gap fills.
    PARKED = "parked"
    # The atomic apply refused it (the reason goes to the dead-letter topic).
    FAILED = "failed"


@dataclass(frozen=True)
class EventOutcome:
    outcome: Outcome
    # Parked events of the same aggregate that became contiguous and were applied with this one.
    drained: int = 0
    error: str | None = None


@dataclass
class ApplyResult:
    """One outcome per envelope, in the order given."""

    outcomes: list[EventOutcome] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for o in self.outcomes if o.outcome is outcome)

    @property
    def applied(self) -> int:
        """Events now in the read model: applied directly or drained from the parked ones."""
        return sum(1 + o.drained for o in self.outcomes if o.outcome is Outcome.APPLIED)

    @property
    def duplicates(self) -> int:
        return self.count(Outcome.DUPLICATE)

    @property
    def parked(self) -> int:
        return self.count(Outcome.PARKED)

    @property
    def failed(self) -> int:
        return self.count(Outcome.FAILED)
