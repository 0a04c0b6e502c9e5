"""Resident memory of a service: its process and every descendant (uvicorn workers), from /proc."""

from __future__ import annotations

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
