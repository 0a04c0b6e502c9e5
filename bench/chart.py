"""The bench's chart, a PNG beside its JSON: the sustained-rate steps and CPU per command.

Left: each step's offered and accepted command rate, and its freshness p99 against the 100 ms
goal (second axis). Right: CPU milliseconds per command at 100 commands/s, per process. Drawn
with matplotlib's Agg backend (no display); a figure missing from the run leaves its panel out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report import Figure


def draw(figures: list[Figure], path: Path) -> Path | None:
    by_key = {f.key: f for f in figures}
    steps: list[dict[str, Any]] = by_key["sustained"].data["steps"] if "sustained" in by_key else []
    cpu: dict[str, float] = by_key["cpu"].data["ms_per_command"] if "cpu" in by_key else {}
    panels = [name for name, present in (("steps", steps), ("cpu", cpu)) if present]
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel == "steps":
            _steps(ax, steps)
        else:
            _cpu(ax, cpu)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _steps(ax: Any, steps: list[dict[str, Any]]) -> None:
    offered = [s["rate"] for s in steps]
    ax.plot(offered, offered, linestyle=":", color="grey", label="offered")
    ax.plot(offered, [s["achieved_per_second"] for s in steps], marker="o", label="accepted")
    for s in steps:
        if not s["held"]:
            ax.annotate("does not hold", (s["rate"], s["achieved_per_second"]), fontsize=8, color="red")
    ax.set_xlabel("offered commands/s")
    ax.set_ylabel("accepted commands/s")
    ax.set_title("Sustained pipeline rate steps")
    fresh = ax.twinx()
    fresh.plot(offered, [s["freshness_p99_ms"] for s in steps], marker="s", color="tab:orange", label="p99")
    fresh.axhline(100, color="tab:red", linestyle="--", linewidth=1)
    fresh.set_ylabel("freshness p99 (ms); goal < 100")
    lines = ax.get_legend_handles_labels()
    more = fresh.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + ["freshness p99"], loc="upper left", fontsize=8)


def _cpu(ax: Any, cpu: dict[str, float]) -> None:
    names = list(cpu)
    ax.barh(names, [cpu[n] for n in names], color="tab:blue")
    ax.invert_yaxis()
    ax.set_xlabel("CPU ms per command")
    ax.set_title("CPU per command at 100 commands/s")
    for index, name in enumerate(names):
        ax.text(cpu[name], index, f" {cpu[name]:.2f}", va="center", fontsize=8)
