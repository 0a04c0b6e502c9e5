"""The relay's linger: a wait only while changes keep coming (an injected clock)."""

from __future__ import annotations

from command_api.adapters.relay_linger import Linger


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_first_change_after_start_goes_at_once() -> None:
    assert Linger(0.015, Clock()).wait() == 0.0


def test_a_change_right_behind_the_last_publish_waits_one_linger() -> None:
    clock = Clock()
    linger = Linger(0.015, clock)
    linger.published()
    clock.now += 0.004
    assert linger.wait() == 0.015


def test_a_change_after_a_quiet_spell_goes_at_once() -> None:
    clock = Clock()
    linger = Linger(0.015, clock)
    linger.published()
    clock.now += 0.040  # a trickle of 25 a second: every change alone, none delayed
    assert linger.wait() == 0.0
    clock.now += 10.0
    assert linger.wait() == 0.0


def test_under_a_steady_flow_every_batch_lingers() -> None:
    """100 changes a second: each publish ends ~5 ms after its batch, the next change comes ~5 ms
    after that, within the linger, so each transaction waits for the one behind it."""
    clock = Clock()
    linger = Linger(0.015, clock)
    linger.published()
    for _ in range(5):
        clock.now += 0.005
        assert linger.wait() == 0.015
        clock.now += 0.015 + 0.005  # the wait, then the publish
        linger.published()


def test_off_never_waits() -> None:
    clock = Clock()
    linger = Linger(0.0, clock)
    linger.published()
    assert linger.wait() == 0.0
