"""The cluster figures' judgements (issue 16): cluster / standalone of the same run, and what
BENCH_ONLY=cluster selects."""

from __future__ import annotations

import pytest

from bench import suite
from bench.cluster_runs import PROJECTOR_GOAL, versus


def test_the_projector_on_the_cluster_is_judged_against_its_standalone_figure() -> None:
    met = versus("projector_cluster", "p", 3_200, 4_000, "events/s", "how", goal=PROJECTOR_GOAL)
    short = versus("projector_cluster", "p", 3_100, 4_000, "events/s", "how", goal=PROJECTOR_GOAL)
    assert (met.ratio, met.met) == (0.8, True)
    assert (short.ratio, short.met) == (0.775, False)
    assert "standalone" in met.limit and "cluster" in met.measured


def test_a_figure_without_a_goal_shows_its_ratio_and_no_verdict() -> None:
    replay = versus("replay_cluster", "r", 8_000, 10_000, "events/s", "how")
    assert (replay.ratio, replay.met, replay.goal) == (0.8, None, "—")


@pytest.mark.parametrize(
    ("only", "expected"),
    [
        ("cluster", {"cluster", "projector", "replay", "read"}),
        ("projector,cluster", {"cluster", "projector"}),
        ("read", {"read"}),
    ],
)
def test_cluster_alone_brings_the_standalone_figures_it_stands_beside(
    monkeypatch: pytest.MonkeyPatch, only: str, expected: set[str]
) -> None:
    monkeypatch.setenv("BENCH_ONLY", only)
    assert set(suite.selected_figures()) == expected
