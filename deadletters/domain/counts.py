"""Counts of dead letters per error type and per reason, in memory bounded however many there are."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# Reasons often carry details (an offset, a field): past this many distinct ones, the rest are
# counted together, so a topic of a million distinct reasons still fits.
MAX_DISTINCT_REASONS = 200
OTHER_REASONS = "(other reasons)"
# A reason is counted by its beginning: what a person groups by.
REASON_KEY_CHARS = 160


@dataclass
class ReasonCounts:
    total: int = 0
    redriven: int = 0
    by_error_type: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)

    def add(self, error_type: str, reason: str, redriven: bool = False) -> None:
        self.total += 1
        self.redriven += redriven
        self.by_error_type[error_type] += 1
        key = reason[:REASON_KEY_CHARS]
        if key not in self.by_reason and len(self.by_reason) >= MAX_DISTINCT_REASONS:
            key = OTHER_REASONS
        self.by_reason[key] += 1

    @property
    def pending(self) -> int:
        """Not re-driven yet."""
        return self.total - self.redriven
