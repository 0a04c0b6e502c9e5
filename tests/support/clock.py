"""A clock a test moves by hand, for code that takes its clock as a callable (`time.monotonic`)."""

from __future__ import annotations


class Clock:
    """`clock()` is `clock.now`; a test moves it: `clock.now += 5`."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
