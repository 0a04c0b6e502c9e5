"""The bench's own judgements, on made-up samples: when a rate step holds, CPU per command, the chart."""

from __future__ import annotations

from pathlib import Path

from bench import chart, cpu_cost, rate_steps


def test_a_backlog_that_stays_small_holds_and_one_that_grows_does_not() -> None:
    assert rate_steps._growing([0, 3, 1, 4, 2, 0, 5, 2], rate=100) == ""
    assert "at the end" in rate_steps._growing([0, 50, 100, 150, 200, 250, 300, 350], rate=100)
    # Small at the end but climbing all along by more than a second of commands.
    climbing = [0, 0, 10, 20, 150, 250, 230, 40]
    assert "grew" in rate_steps._growing(climbing, rate=50)


def step(rate: int, held: bool, p99: float) -> rate_steps.Step:
    return rate_steps.Step(
        rate=rate,
        seconds=60,
        accepted=rate * 60,
        scheduled=rate * 60,
        command_failures=0,
        reads_not_fresh=0,
        achieved_per_second=rate if held else rate * 0.8,
        freshness_p99_ms=p99,
        freshness_p50_ms=p99 / 3,
        command_p99_ms=10,
        backlog_samples=[0, 1, 0],
        held=held,
        why_not="" if held else "freshness p99 250 ms",
    )


def test_the_sustained_figure_is_the_highest_step_that_held() -> None:
    figure = rate_steps.figure([step(100, True, 40), step(150, True, 70), step(200, False, 250)], 450, 16)
    assert figure.measured.startswith("150 commands/s (at 200/s: freshness p99 250 ms)")
    assert figure.met is False
    assert rate_steps.figure([step(200, True, 50), step(250, True, 60)], 450, 16).met is True


def test_cpu_per_command_sums_the_services_and_reports_the_servers_beside() -> None:
    cores = {
        "command-api": 0.2,
        "query-api": 0.1,
        "relay": 0.05,
        "projectors": 0.1,
        "workers": 0.05,
        "mongodb": 0.4,
        "kafka": 0.2,
        "redis": 0.05,
        "bench client": 0.3,
    }
    figure = cpu_cost.figure(cores, rate=100, seconds=60)
    assert figure.data["services_ms"] == 5.0 and figure.met is True
    assert figure.data["servers_ms"] == 6.5
    assert figure.data["ms_per_command"]["bench client"] == 3.0


def test_the_chart_is_a_png_beside_the_results(tmp_path: Path) -> None:
    figures = [
        rate_steps.figure([step(100, True, 40), step(150, False, 140)], 450, 16),
        cpu_cost.figure({"command-api": 0.2, "mongodb": 0.4}, rate=100, seconds=60),
    ]
    path = chart.draw(figures, tmp_path / "latest.png")
    assert path is not None and path.read_bytes().startswith(b"\x89PNG")
    assert chart.draw([], tmp_path / "none.png") is None
