"""Exponential backoff with a cap: the pauses between retries of a batch the servers refused."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Backoff:
    initial: float
    cap: float
    _next: float = 0.0

    def next_pause(self) -> float:
        """The pause before the next retry: initial, doubling up to the cap."""
        pause = self._next or self.initial
        self._next = min(pause * 2, self.cap)
        return min(pause, self.cap)

    def reset(self) -> None:
        self._next = 0.0
