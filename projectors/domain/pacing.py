"""The anti-entropy pass's pace: how long to rest after a step so it stays within its key rate."""

from __future__ import annotations


def pause_after_step(
    keys_checked: int,
    elapsed: float,
    keys_per_second: float,
    *,
    sweep_done: bool,
    interval: float,
) -> float:
    """Seconds to rest: the step's keys at `keys_per_second` take this long, less the time the
    step already took; after a whole sweep, at least `interval`."""
    pause = keys_checked / keys_per_second - elapsed
    if sweep_done:
        pause = max(pause, interval)
    return max(pause, 0.0)
