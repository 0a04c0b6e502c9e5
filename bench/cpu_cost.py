"""CPU per command: each process's CPU over the 100 commands/s freshness run, per command.

The freshness run (bench/freshness.py) offers commands at a steady rate with every service
running, and each command is read back once it is fresh, so a command's cost here is the whole
pipeline's: the command API's transaction, the relay's publish, three projections, two workers,
and the query API's read. CPU time comes from /proc (user + system, each service with its
uvicorn workers; the servers found by their command lines), over the run's wall time.
"""

from __future__ import annotations

from bench.environment import ALL_SERVICES
from bench.report import Figure

GOAL_MS = 5.0
SERVERS = ("mongodb", "kafka", "redis")


def figure(
    cpu_cores: dict[str, float],
    rate: float,
    seconds: float,
    accepted: int | None = None,
    elapsed: float | None = None,
) -> Figure:
    """Each process's CPU per command: its cores over the window (`elapsed`, the run's `seconds`
    if not given) times the window, divided by the commands accepted (those the pipeline did
    run). Where fewer were accepted than offered, dividing by the offered rate would understate
    every figure by that ratio."""
    commands = accepted if accepted else rate * seconds
    window = elapsed if elapsed else seconds
    per_command = {name: round(cores * window * 1000 / commands, 2) for name, cores in cpu_cores.items()}
    services = {name: per_command.get(name, 0.0) for name in ALL_SERVICES}
    servers = {name: per_command.get(name, 0.0) for name in SERVERS}
    own = sum(services.values())
    theirs = sum(servers.values())
    return Figure(
        key="cpu_per_command",
        title=f"CPU per command at {rate:.0f} commands/s, end to end",
        measured=f"{own:.1f} ms (services: "
        + ", ".join(f"{name} {ms:.1f}" for name, ms in services.items())
        + ")",
        limit=f"servers {theirs:.1f} ms (" + ", ".join(f"{n} {ms:.1f}" for n, ms in servers.items()) + ")",
        ratio=None,
        goal=f"≤ {GOAL_MS:.0f} ms summed over the services",
        met=own <= GOAL_MS,
        how=(
            f"CPU time (user + system, /proc) of each process group over the {seconds:.0f} s "
            f"freshness run at {rate:.0f} commands/s (every command created, published, projected "
            "three times, seen by both workers and read back fresh), divided by the commands "
            "accepted; the servers' share beside it; the bench client's own share, and the whole "
            "machine's busy cores over the window (/proc/stat: steal, and what no measured process "
            "used), in the data"
        ),
        data={
            "ms_per_command": per_command,
            "services_ms": round(own, 2),
            "servers_ms": round(theirs, 2),
            "cpu_cores": cpu_cores,
            "rate": rate,
            "commands": commands,
            "window_seconds": round(window, 2),
        },
    )
