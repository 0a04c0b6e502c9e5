"""The bench's chart, a PNG beside its JSON: the sustained-rate steps, CPU per command, the scale curves.

Steps: each step's offered and accepted command rate, and its freshness p99 against the 100 ms
goal (second axis). CPU: milliseconds per command at 100 commands/s, per process. Scale (two
panels, campaigns on a log axis): list and by-id p99 with the projector's and the replay's
events/s; Redis bytes per campaign against 3 times the JSON document, with the replay's peak
RSS. Drawn with matplotlib's Agg backend (no display); a figure missing from the run leaves its
panel out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report import Figure


def _data(figures: list[Figure]) -> dict[str, Any]:
    """Each panel's data found in the figures (empty where the run did not measure it)."""
    by_key = {f.key: f for f in figures}

    def of(key: str, field: str, empty: Any) -> Any:
        return by_key[key].data[field] if key in by_key else empty

    sizes = of("scale_bytes", "per_size", [])
    return {
        "steps": of("sustained", "steps", []),
        "cpu": of("cpu_per_command", "ms_per_command", {}),
        "scale_costs": sizes,
        "scale_memory": sizes,
    }


def panels(figures: list[Figure]) -> list[str]:
    """The panels the chart of these figures has, in order."""
    return [name for name, data in _data(figures).items() if data]


def draw(figures: list[Figure], path: Path) -> Path | None:
    data = _data(figures)
    panels_drawn = panels(figures)
    steps, cpu, sizes = data["steps"], data["cpu"], data["scale_costs"]
    if not panels_drawn:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(2, len(panels_drawn))
    rows = (len(panels_drawn) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 4.5 * rows), squeeze=False)
    cells = [ax for row in axes for ax in row]
    for spare in cells[len(panels_drawn) :]:
        spare.set_visible(False)
    for ax, panel in zip(cells, panels_drawn, strict=False):
        if panel == "steps":
            _steps(ax, steps)
        elif panel == "cpu":
            _cpu(ax, cpu)
        elif panel == "scale_costs":
            _scale_costs(ax, sizes)
        else:
            _scale_memory(ax, sizes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _steps(ax: Any, steps: list[dict[str, Any]]) -> None:
    steps = sorted(steps, key=lambda s: s["rate"])  # stepped down too when the first did not hold
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


def _scale_costs(ax: Any, sizes: list[dict[str, Any]]) -> None:
    campaigns = [s["campaigns"] for s in sizes]
    ax.plot(campaigns, [s["list_p99_ms"] for s in sizes], marker="o", label="list p99")
    if all("list_uncached_p99_ms" in s for s in sizes):  # (results before it was measured lack it)
        uncached = [s["list_uncached_p99_ms"] for s in sizes]
        ax.plot(campaigns, uncached, marker="o", linestyle="--", label="list p99, page cache off")
    ax.plot(campaigns, [s["by_id_p99_ms"] for s in sizes], marker="o", label="by-id p99")
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("campaigns")
    ax.set_ylabel("p99 (ms)")
    ax.set_title("Costs as data grows: latency and throughput")
    rates = ax.twinx()
    projector = [s["projector_events_per_second"] for s in sizes]
    replayed = [s["replay_events_per_second"] for s in sizes]
    rates.plot(campaigns, projector, marker="s", color="tab:green", label="projector events/s")
    rates.plot(campaigns, replayed, marker="^", color="tab:purple", label="replay events/s")
    rates.set_ylim(bottom=0)
    rates.set_ylabel("events/s")
    lines = ax.get_legend_handles_labels()
    more = rates.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8)


def _scale_memory(ax: Any, sizes: list[dict[str, Any]]) -> None:
    campaigns = [s["campaigns"] for s in sizes]
    ax.plot(campaigns, [s["bytes_per_campaign"] for s in sizes], marker="o", label="Redis bytes/campaign")
    ax.plot(
        campaigns,
        [3 * s["json_document_bytes"] for s in sizes],
        linestyle="--",
        color="tab:red",
        label="goal: 3 x JSON document",
    )
    ax.set_xscale("log")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("campaigns")
    ax.set_ylabel("bytes per campaign")
    ax.set_title("Costs as data grows: memory")
    rss = ax.twinx()
    peaks = [s["replay_peak_rss_mib"] for s in sizes]
    rss.plot(campaigns, peaks, marker="s", color="tab:purple", label="replay peak RSS")
    rss.set_ylim(bottom=0)
    rss.set_ylabel("replay peak RSS (MiB)")
    lines = ax.get_legend_handles_labels()
    more = rss.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="lower left")
