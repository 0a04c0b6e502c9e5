"""The anti-entropy pass's pace (pure): it reads at most its key rate, and rests between sweeps."""

from __future__ import annotations

import pytest

from projectors.domain.pacing import KEYS_PER_LIVE_EVENT, pause_after_step, walk_pace


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


def test_an_idle_projector_walks_at_the_full_rate() -> None:
    assert walk_pace(2000, 200, 0) == 2000


def test_live_events_take_the_place_of_keys_in_the_budget() -> None:
    assert walk_pace(2000, 200, 10) == 2000 - 10 * KEYS_PER_LIVE_EVENT
    assert walk_pace(2000, 200, 50) < walk_pace(2000, 200, 10)


def test_under_any_load_the_pass_keeps_its_floor() -> None:
    assert walk_pace(2000, 200, 100_000) == 200


def test_a_floor_above_the_rate_neither_raises_the_pace_nor_yields() -> None:
    # A floor set at the rate (or above it) is how an operator turns the yielding off.
    assert walk_pace(500, 2000, 0) == 500
    assert walk_pace(500, 2000, 1_000) == 500
    assert walk_pace(2000, 2000, 1_000) == 2000
