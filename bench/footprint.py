"""Footprint: resident memory of the whole cluster topology, servers and every service instance.

`python -m bench.footprint` starts (or finds running) the cluster topology's servers
(`CAMPAIGNS_TOPOLOGY=cluster`: 3+3 Redis Cluster nodes, 3 Kafka nodes, MongoDB, SMTP sink), then
every service as `campaigns run --detach` would in that topology (APIs with their workers, 2
relays, 2 projectors, 2 workers, the scheduler) on the bench's own ports, database and topics,
sends BENCH_FOOTPRINT_SECONDS (30) of command traffic, and prints each process tree's resident
memory (VmRSS, as `campaigns stack status --json` reports it) and the total against 4 GiB.
Only the services it started are stopped; the servers are left as they were.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import uuid
from typing import Any

import httpx

from bench.lock import bench_lock
from infra.local.stack import Stack
from launcher.cli import SERVICES, console_defaults
from launcher.supervisor import Supervisor
from service_runtime import processes
from service_runtime.settings import Settings
from tests.support.services import settings_env
from tests.support.stack import REPO, STACK, create_topics, free_port, isolated_settings
from tests.support.traffic import CommandTraffic

MIB = 1024 * 1024
GOAL_MIB = 4096


def cluster_settings(local_dir: str) -> Settings:
    tag = uuid.uuid4().hex[:8]
    listeners = ("command_api", "query_api", "command_api_metrics", "query_api_metrics", "scheduler_metrics")
    ports = {f"{name}_port": free_port() for name in listeners}
    # Instances take the base port + 10 * (n - 1): bases 100 apart leave room for them.
    scaled = ("relay", "projectors", "workers")
    bases = {key: 30000 + 100 * i + (os.getpid() % 50) for i, key in enumerate(scaled)}
    return isolated_settings(
        topology="cluster",
        mongo_db=f"footprint_{tag}",
        redis_prefix=f"footprint{tag}",
        topic_prefix=f"footprint{tag}.",
        kafka_partitions=6,
        local_dir=local_dir,
        api_workers=2,
        **ports,
        **{f"{key}_metrics_port": port for key, port in bases.items()},
    )


def server_memory(stack: Stack) -> list[dict[str, Any]]:
    """The cluster topology's servers as `stack.py status --json` reports them."""
    return [
        {"name": s["name"], "pid": s["pid"], "rss_mib": s["rss_mib"]}
        for s in stack.status_document()["servers"]
    ]


async def traffic(command_url: str, seconds: float) -> int:
    async with httpx.AsyncClient(base_url=command_url, timeout=30) as client:
        driver = CommandTraffic(client)
        await driver.sign_up(4)
        await driver.run(seconds=seconds, rate=10)
        return driver.accepted


def cluster_up() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGNS_") or k.endswith("_DIR")}
    up = subprocess.run(
        [sys.executable, str(STACK), "up"],
        cwd=REPO,
        env={**env, "CAMPAIGNS_TOPOLOGY": "cluster"},
        capture_output=True,
        text=True,
        check=False,
    )
    if up.returncode != 0:
        raise SystemExit(f"the cluster topology's servers did not start:\n{up.stdout}{up.stderr}")


async def measure() -> dict[str, Any]:
    seconds = float(os.environ.get("BENCH_FOOTPRINT_SECONDS", 30))
    await asyncio.to_thread(cluster_up)
    # The servers' pid files are the stack's (default local directory); the services' the bench's own.
    stack = Stack(Settings(topology="cluster", local_dir=Settings().local_dir))
    with tempfile.TemporaryDirectory(prefix="footprint-") as local_dir:
        settings = cluster_settings(local_dir)
        await create_topics(settings)
        os.environ.update(settings_env(settings))
        console_defaults(settings, os.environ)
        supervisor = Supervisor(REPO, settings, SERVICES)
        try:
            pids = supervisor.start_detached()
            supervisor.wait_healthy(pids, timeout=180)
            accepted = await traffic(f"http://127.0.0.1:{settings.command_api_port}", seconds)
            await asyncio.sleep(3)
            services = [
                {"name": name, "pid": pid, "rss_mib": round(processes.resident_bytes(pid) / MIB, 1)}
                for name, pid in pids.items()
            ]
            servers = server_memory(stack)
        finally:
            supervisor.stop_detached()
    total = sum(p["rss_mib"] for p in [*servers, *services])
    return {
        "servers": servers,
        "services": services,
        "servers_mib": round(sum(s["rss_mib"] for s in servers), 1),
        "services_mib": round(sum(s["rss_mib"] for s in services), 1),
        "total_mib": round(total, 1),
        "goal_mib": GOAL_MIB,
        "commands_accepted": accepted,
        "traffic_seconds": seconds,
    }


def main() -> None:
    with bench_lock():
        result = asyncio.run(measure())
    for entry in [*result["servers"], *result["services"]]:
        print(f"{entry['name']:14} pid {entry['pid']!s:>7} {entry['rss_mib']:8.1f} MiB")
    print(
        f"servers {result['servers_mib']:.0f} MiB + services {result['services_mib']:.0f} MiB = "
        f"{result['total_mib']:.0f} MiB resident ({result['total_mib'] / 1024:.2f} GiB; goal < 4 GiB) after "
        f"{result['traffic_seconds']:.0f} s of traffic ({result['commands_accepted']} commands)"
    )
    sys.exit(0 if result["total_mib"] < GOAL_MIB else 1)


if __name__ == "__main__":
    main()
