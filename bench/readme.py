"""The README's table of the last whole `make bench` run, drawn from bench/results/latest.json.

`python -m bench.readme` rewrites the part of README.md between the two markers below from the
results file; tests/unit/bench/test_readme_table.py fails when the two disagree, so the table a
reader sees is always the run the JSON holds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.report import RESULTS, Figure, calibration_text, markdown_table

README = Path(__file__).resolve().parent.parent / "README.md"
START = "<!-- bench:latest:start (python -m bench.readme writes this part from bench/results/latest.json) -->"
END = "<!-- bench:latest:end -->"


def load(path: Path = RESULTS / "latest.json") -> tuple[dict[str, Any], list[Figure]]:
    document = json.loads(path.read_text())
    figures = [Figure(**f) for f in document.pop("figures")]
    return document, figures


def _loads(values: list[float]) -> str:
    return f"{values[0]:.1f}" if values else "?"


def summary(context: dict[str, Any]) -> str:
    """One paragraph: what was run, when, on what, with which servers."""
    machine, versions = context["machine"], context["versions"]
    commit = context.get("commit") or {}
    sha = (commit.get("sha") or "")[:7]
    code = f"at `{sha}`{' (with local changes)' if commit.get('dirty') else ''}" if sha else ""
    env = " ".join(f"{k}={v}" for k, v in (context.get("environment") or {}).items())
    command = f"{env} {context['command']}".strip()
    minutes = context["seconds"] / 60
    return (
        f"Last whole run: `{command}` {code}, {context['date'][:16].replace('T', ' ')} UTC, "
        f"{minutes:.0f} min, {machine['cpu_model']}, {machine['cores']} cores, load average "
        f"{_loads(machine['load_average_at_start'])} at the start and "
        f"{_loads(machine.get('load_average_at_end', []))} at the end{_calibration(machine)}. "
        f"Python {versions['python']}, "
        f"Apache Kafka {versions['kafka']}, Redis {versions['redis_server']}, "
        f"{versions['mongodb_server']}, redis-py {versions['redis']} with hiredis {versions['hiredis']}, "
        f"FastStream {versions['faststream']}, aiokafka {versions['aiokafka']}, "
        f"pymongo {versions['pymongo']}."
    )


def _calibration(machine: dict[str, Any]) -> str:
    found = machine.get("calibration")
    return f"; host calibration {calibration_text(found)}" if found else ""


def how_measured(figures: list[Figure]) -> str:
    """Each figure's method as the run recorded it, one item a figure."""
    return "\n".join(f"- **{f.title}**: {f.how}." for f in figures)


def render(context: dict[str, Any], figures: list[Figure]) -> str:
    return (
        f"{START}\n{summary(context)}\n\n{markdown_table(figures)}\n\n"
        f"How each figure was measured, as the run recorded it (`how` in the JSON):\n\n"
        f"{how_measured(figures)}\n{END}"
    )


def section(text: str) -> str:
    """The README's rendered part, markers included."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README.md has no bench table between {START!r} and {END!r}")
    return text[start : end + len(END)]


def rewrite(readme: Path = README, results: Path = RESULTS / "latest.json") -> bool:
    """Rewrite the README's table from the results; True if it changed."""
    text = readme.read_text()
    new = text.replace(section(text), render(*load(results)))
    if new == text:
        return False
    readme.write_text(new)
    return True


if __name__ == "__main__":
    print("README.md rewritten" if rewrite() else "README.md already matches bench/results/latest.json")
