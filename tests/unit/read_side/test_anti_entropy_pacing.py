"""The anti-entropy pass's pace (pure): it reads at most its key rate, and rests between sweeps."""

from __future__ import annotations

import pytest

from projectors.domain.pacing import pause_after_step


def test_a_step_rests_what_its_keys_take_at_the_rate_less_the_time_it_took() -> None:
    assert pause_after_step(400, 0.05, 4000, sweep_done=False, interval=2) == pytest.approx(0.05)


def test_a_step_slower_than_the_rate_does_not_rest() -> None:
    assert pause_after_step(400, 0.5, 4000, sweep_done=False, interval=2) == 0


def test_after_a_sweep_the_pass_rests_at_least_the_interval() -> None:
    assert pause_after_step(10, 0.0, 4000, sweep_done=True, interval=2) == 2
    assert pause_after_step(40_000, 0.0, 4000, sweep_done=True, interval=2) == 10


@pytest.mark.parametrize("keys", [1, 200, 5000])
def test_over_many_steps_the_keys_read_stay_within_the_rate(keys: int) -> None:
    # Steps that take no time at all: the pauses alone bound the rate.
    rate = 1000.0
    total_pause = sum(pause_after_step(keys, 0.0, rate, sweep_done=False, interval=0) for _ in range(50))
    assert keys * 50 / total_pause == pytest.approx(rate)
