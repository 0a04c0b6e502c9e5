"""The anti-entropy pass's pace: how fast it walks, and how long to rest after a step so it stays
within that key rate.

The pass is background work beside the live consumers. It yields to them: each event a second
the live consumers apply takes the place of `KEYS_PER_LIVE_EVENT` keys in its budget, down to a
floor it keeps under any load, so a busy projector still sweeps, only slower, and an idle one
sweeps at the full rate.
"""

from __future__ import annotations

# An event applied live takes the place of this many keys a second in the pass's budget. One
# applied live (a batch of one or a few at 100 commands/s) costs the projectors ~0.3 ms of CPU;
# a key checked costs ~10 us of the projectors' (~5 us a key beside ~2.5 ms a step of 400) and
# about as much of MongoDB's and Redis's (session 44: the pass at 2,000 keys/s took 0.2 ms of the
# projectors' and 0.3-0.5 ms of MongoDB's CPU per command at 100 commands/s). Ten is the
# cautious side of that ratio: the pass reaches its floor at about 100 commands/s (two events
# applied each, by the campaigns and stats projections), and keeps most of its rate at ten.
KEYS_PER_LIVE_EVENT = 10.0


def walk_pace(keys_per_second: float, busy_keys_per_second: float, live_events_per_second: float) -> float:
    """The pass's key rate: `keys_per_second` less `KEYS_PER_LIVE_EVENT` for each event a second
    the live consumers apply, never below `busy_keys_per_second` (nor above `keys_per_second`)."""
    floor = min(busy_keys_per_second, keys_per_second)
    return max(floor, keys_per_second - KEYS_PER_LIVE_EVENT * max(live_events_per_second, 0.0))


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
