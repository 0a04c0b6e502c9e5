"""Resident memory and CPU time of a service (its process and descendants) and of the servers, from /proc."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
MIB = 1024 * 1024


@dataclass(frozen=True)
class ProcessMemory:
    pid: int
    role: str
    rss_mib: float


def _rss_bytes(pid: int) -> int:
    for line in (PROC / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(parent, []).append(int(entry.name))
    return tree


def _role(pid: int, is_root: bool) -> str:
    if is_root:
        return "main"
    try:
        cmdline = (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "child"
    if "resource_tracker" in cmdline:
        return "resource tracker"
    if "multiprocessing" in cmdline:
        return "worker"
    return "child"


def process_tree_memory(root: int) -> list[ProcessMemory]:
    """The root process first, then its descendants (uvicorn's spawned workers, a resource tracker)."""
    tree = _children()
    found: list[ProcessMemory] = []
    stack = [root]
    while stack:
        pid = stack.pop(0)
        try:
            found.append(ProcessMemory(pid, _role(pid, pid == root), _rss_bytes(pid) / MIB))
        except OSError:
            continue
        stack.extend(sorted(tree.get(pid, [])))
    return found


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_seconds(pid: int, first: int) -> float:
    """Two adjacent CPU-time fields of /proc/<pid>/stat summed, from its `first` field after the
    command name (0 if the process is gone)."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[first]) + int(fields[first + 1])) / CLOCK_TICKS


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (0 if it is gone)."""
    return _stat_seconds(pid, 11)  # utime, stime


def children_cpu_seconds() -> float:
    """User + system CPU time of the children this process has waited for: the bench's wrk
    runs, for instance."""
    return _stat_seconds(os.getpid(), 13)  # cutime, cstime


def tree_pids(root: int) -> list[int]:
    tree = _children()
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(tree.get(pid, []))
    return found


def server_pids(mongo_port: int, redis_port: int, kafka_properties: str) -> dict[str, list[int]]:
    """The local stack's servers, found by their command lines (the bench shares them; other
    stacks on the machine, e.g. a CI clone's, have other ports and another Kafka config)."""
    found: dict[str, list[int]] = {"mongodb": [], "redis": [], "kafka": []}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if ("secantus" in cmdline or "mongod" in cmdline) and f"--port {mongo_port}" in cmdline:
            found["mongodb"].append(int(entry.name))
        elif cmdline.startswith("/usr/bin/redis-server") and f":{redis_port}" in cmdline:
            found["redis"].append(int(entry.name))
        elif "kafka.Kafka" in cmdline and kafka_properties in cmdline:
            found["kafka"].append(int(entry.name))
    return found


@dataclass(frozen=True)
class MachineTicks:
    """The machine's CPU time so far, from the `cpu` line of /proc/stat, in clock ticks."""

    busy: int  # user, nice, system, irq, softirq
    steal: int  # taken by the hypervisor for others while this machine wanted to run

    @classmethod
    def parse(cls, stat: str) -> MachineTicks:
        for line in stat.splitlines():
            if line.startswith("cpu "):
                user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in line.split()[1:9])
                return cls(user + nice + system + irq + softirq, steal)
        raise ValueError("no cpu line in /proc/stat")

    @classmethod
    def now(cls) -> MachineTicks:
        return cls.parse((PROC / "stat").read_text())


def machine_shares(
    start: MachineTicks, end: MachineTicks, elapsed: float, accounted: float, ticks: int = CLOCK_TICKS
) -> dict[str, float]:
    """The whole machine over a window, in cores: busy (every process, the kernel's interrupts),
    steal, and `unaccounted`, the busy cores no measured process used (`accounted`, the
    measured groups' summed cores): work the figure did not ask for, competing for the cores."""
    busy = (end.busy - start.busy) / ticks / elapsed
    return {
        "busy_cores": round(busy, 3),
        "steal_cores": round((end.steal - start.steal) / ticks / elapsed, 3),
        "unaccounted_cores": round(max(0.0, busy - accounted), 3),
    }


class CpuWindow:
    """CPU used by groups of processes over a window, as a share of one core; and the whole
    machine's over the same window (`machine`)."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self._machine = MachineTicks.now()
        self._start = {name: sum(cpu_seconds(p) for p in pids) for name, pids in groups.items()}
        self._started = time.monotonic()
        self.elapsed = 0.0  # the window's length, as of the last `shares`
        self.machine: dict[str, float] = {}  # the machine's, as of the last `shares`

    def shares(self, digits: int = 2) -> dict[str, float]:
        elapsed = self.elapsed = time.monotonic() - self._started
        cores = {
            name: (sum(cpu_seconds(p) for p in pids) - self._start[name]) / elapsed
            for name, pids in self.groups.items()
        }
        self.machine = machine_shares(self._machine, MachineTicks.now(), elapsed, sum(cores.values()))
        return {name: round(value, digits) for name, value in cores.items()}
