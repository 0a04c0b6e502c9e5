"""The relay's linger: a wait only while changes come closer together than one linger."""

from __future__ import annotations

import pytest

from command_api.adapters.relay_linger import linger


def test_the_first_change_since_the_stream_opened_goes_at_once() -> None:
    assert linger(0.015, None) == 0.0


def test_a_change_right_behind_the_one_before_waits_one_linger() -> None:
    assert linger(0.015, 0.010) == 0.015  # 100 changes a second


def test_a_change_farther_behind_than_one_linger_goes_at_once() -> None:
    # 50 and 25 a second: a linger would catch nothing, only delay the change.
    assert linger(0.015, 0.020) == 0.0
    assert linger(0.015, 0.040) == 0.0
    assert linger(0.015, 0.015) == 0.0
    assert linger(0.015, 10.0) == 0.0


def test_off_never_waits() -> None:
    assert linger(0.0, 0.0) == 0.0
    assert linger(0.0, 0.001) == 0.0


def test_the_linger_counts_from_the_first_change_s_arrival() -> None:
    # Taken 5 ms after it arrived: 10 ms are left of the linger.
    assert linger(0.015, 0.005, waited=0.005) == pytest.approx(0.010)
    # Queued behind a commit longer than a linger: it goes at once, with whatever came behind it.
    assert linger(0.015, 0.005, waited=0.015) == 0.0
    assert linger(0.015, 0.005, waited=0.040) == 0.0
    # A change with no close predecessor never waits, however long it has waited already.
    assert linger(0.015, 0.020, waited=0.001) == 0.0
