"""Figures side by side with their limits: the rich table and bench/results/latest.json."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Figure:
    """One measured figure. `ratio` is measured / limit (or None where the goal is absolute)."""

    key: str
    title: str
    measured: str
    limit: str
    ratio: float | None
    goal: str
    met: bool | None
    how: str
    data: dict[str, Any] = field(default_factory=dict)


def ratio_figure(
    key: str, title: str, measured: float, limit: float, unit: str, goal: float, how: str, **data: Any
) -> Figure:
    ratio = measured / limit if limit else 0.0
    return Figure(
        key=key,
        title=title,
        measured=f"{measured:,.0f} {unit}",
        limit=f"{limit:,.0f} {unit}",
        ratio=round(ratio, 3),
        goal=f"≥ {goal}",
        met=ratio >= goal,
        how=how,
        data={"measured": round(measured, 1), "limit": round(limit, 1), **data},
    )


def table(figures: list[Figure], title: str) -> Table:
    grid = Table(title=title, title_justify="left")
    grid.add_column("figure")
    grid.add_column("measured", justify="right")
    grid.add_column("limit (same run)", justify="right")
    grid.add_column("ratio", justify="right")
    grid.add_column("goal")
    grid.add_column("met")
    for figure in figures:
        met = "—" if figure.met is None else ("yes" if figure.met else "[bold red]NO[/]")
        ratio = "" if figure.ratio is None else f"{figure.ratio:.2f}"
        grid.add_row(figure.title, figure.measured, figure.limit, ratio, figure.goal, met)
    return grid


def markdown_table(figures: list[Figure]) -> str:
    lines = [
        "| figure | measured | limit (same run) | ratio | goal | met |",
        "|---|---:|---:|---:|---|---|",
    ]
    for f in figures:
        met = "—" if f.met is None else ("yes" if f.met else "**no**")
        ratio = "" if f.ratio is None else f"{f.ratio:.2f}"
        lines.append(f"| {f.title} | {f.measured} | {f.limit} | {ratio} | {f.goal} | {met} |")
    return "\n".join(lines)


def calibration_text(calibration: dict[str, int]) -> str:
    """The host's calibration loops (bench/machine.py) as one phrase."""
    return (
        f"{calibration['python_loop_steps_per_second'] / 1e6:.1f} M Python loop steps/s, "
        f"{calibration['socket_round_trips_per_second']:,} socket round trips/s"
    )


def write(figures: list[Figure], context: dict[str, Any], path: Path | None = None) -> Path:
    path = path or RESULTS / "latest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {**context, "figures": [asdict(f) for f in figures]}
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return path


def show(figures: list[Figure], title: str, console: Console | None = None) -> None:
    (console or Console()).print(table(figures, title))
