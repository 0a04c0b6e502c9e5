"""Idle footprint: the resident memory of every service, freshly started and idle.

Every service is started on the bench's own names (the same settings as the other figures, so the
APIs run `api_workers` uvicorn workers each), waited on until ready and then `settle` seconds
more; VmRSS is read from /proc for each process and its descendants (uvicorn's supervisor and
workers, multiprocessing's resource tracker). The goal counts every process. The CPU each service
uses over the idle window is kept beside it (`idle_cpu_cores`): what the background loops
(heartbeats, lease renewals, anti-entropy, samplers, consumer polls) cost with no traffic at all,
which at 100 commands/s is that many cores x 10 ms of the CPU per command.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.environment import ALL_SERVICES
from bench.memory import CpuWindow, process_tree_memory, tree_pids
from bench.report import Figure
from tests.support.services import RunningServices

TOTAL_GOAL_MIB = 500
EACH_GOAL_MIB = 150


async def measure(services: RunningServices, settle: float = 10.0) -> Figure:
    services.start(list(ALL_SERVICES))
    try:
        await asyncio.to_thread(services.wait_ready)
        await asyncio.sleep(min(2.0, settle))  # start-up work (topic checks, first heartbeats) ends
        window = CpuWindow({name: tree_pids(services.processes[name].pid) for name in ALL_SERVICES})
        await asyncio.sleep(max(0.0, settle - 2.0))
        idle_cores = window.shares(digits=3)
        per_service: dict[str, list[dict[str, Any]]] = {}
        for name in ALL_SERVICES:
            tree = process_tree_memory(services.processes[name].pid)
            per_service[name] = [{"pid": p.pid, "role": p.role, "rss_mib": round(p.rss_mib, 1)} for p in tree]
    finally:
        await asyncio.to_thread(services.stop_all)
    processes = [(name, p) for name, tree in per_service.items() for p in tree]
    total = sum(p["rss_mib"] for _, p in processes)
    worst_name, worst = max(processes, key=lambda item: item[1]["rss_mib"])
    summary = ", ".join(f"{name} {sum(p['rss_mib'] for p in tree):.0f}" for name, tree in per_service.items())
    return Figure(
        key="footprint",
        title="Idle footprint: resident memory of every service process",
        measured=f"{total:.0f} MiB in {len(processes)} processes; largest {worst['rss_mib']:.0f} MiB "
        f"({worst_name} {worst['role']})",
        limit=f"per service (MiB): {summary}",
        ratio=None,
        goal=f"≤ {TOTAL_GOAL_MIB} MiB summed, < {EACH_GOAL_MIB} MiB each",
        met=total <= TOTAL_GOAL_MIB and worst["rss_mib"] < EACH_GOAL_MIB,
        how=(
            f"VmRSS from /proc of each service's process and its descendants, {settle:.0f} s after "
            "all five services answered ready, nothing else sent to them"
        ),
        data={"total_mib": round(total, 1), "per_service": per_service, "idle_cpu_cores": idle_cores},
    )
