"""The README's table of the last whole bench run is the run bench/results/latest.json holds."""

from __future__ import annotations

from pathlib import Path

from bench import readme
from bench.report import RESULTS


def test_the_readme_shows_the_run_in_latest_json() -> None:
    # When this fails: `python -m bench.readme` rewrites the table from latest.json.
    assert readme.section(readme.README.read_text()) == readme.render(*readme.load())


def test_every_figure_of_the_run_is_a_row_with_its_goal_and_verdict(tmp_path: Path) -> None:
    context, figures = readme.load()
    rendered = readme.render(context, figures)
    rows = [line for line in rendered.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == len(figures) > 0
    for row, figure in zip(rows, figures, strict=True):
        cells = [cell.strip() for cell in row.strip("|").split(" | ")]
        assert cells[0] == figure.title and cells[4] == figure.goal
        assert cells[5] == ("—" if figure.met is None else "yes" if figure.met else "**no**")
        assert f"- **{figure.title}**: {figure.how}." in rendered


def test_rewrite_replaces_only_the_marked_part(tmp_path: Path) -> None:
    page = tmp_path / "README.md"
    page.write_text(f"# before\n{readme.START}\nold table\n{readme.END}\nafter\n")
    assert readme.rewrite(page, RESULTS / "latest.json") is True
    text = page.read_text()
    assert text.startswith("# before\n") and text.endswith("\nafter\n") and "old table" not in text
    assert readme.rewrite(page, RESULTS / "latest.json") is False


def test_the_summary_names_the_host_calibration_when_the_run_recorded_one() -> None:
    context = readme.load()[0]
    without = {**context, "machine": {k: v for k, v in context["machine"].items() if k != "calibration"}}
    calibration = {"python_loop_steps_per_second": 22_701_832, "socket_round_trips_per_second": 130_415}
    with_it = {**context, "machine": {**without["machine"], "calibration": calibration}}

    assert "calibration" not in readme.summary(without)
    assert (
        "at the end; host calibration 22.7 M Python loop steps/s, 130,415 socket round trips/s."
        in readme.summary(with_it)
    )
