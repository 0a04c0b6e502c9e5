"""The cluster topology's servers (issues 16.4 and 17.5) on ports of their own: a Redis Cluster
of 3 primaries + 3 replicas and 3 Kafka KRaft nodes (replication 3, min ISR 2), started and
stopped by the same `stack.py` as the single-node stack."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from events.topics import Topics
from service_runtime import processes
from tests.support.stack import REPO, STACK

pytestmark = pytest.mark.cluster


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def ports_with_partner(count: int, offset: int, taken: set[int]) -> list[int]:
    """Free ports whose port + `offset` is free too (a Redis node's cluster bus, a Kafka node's
    controller listener; `offset` 0: the port alone), none of them or their partners among
    `taken` (which they join): one server's port is never picked for another's (a free port stays
    free until its server binds it, so two picks could otherwise be the same)."""
    found: list[int] = []
    while len(found) < count:
        port = random.randint(20000, 45000)
        pair = {port, port + offset}
        if not pair & taken and all(_bindable(p) for p in pair):
            found.append(port)
            taken |= pair
    return found


def stack(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(STACK), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


async def kafka_facts(bootstrap: str, topic: str) -> tuple[int, list[dict[str, object]], str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        brokers = len((await admin.describe_cluster())["brokers"])
        [described] = await admin.describe_topics([topic])
        configs = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        entries = {name: value for name, value, *_ in configs[0].resources[0][4]}
        return brokers, described["partitions"], entries["min.insync.replicas"]
    finally:
        await admin.close()


def test_the_cluster_topology_starts_reports_and_stops(tmp_path: Path) -> None:
    taken: set[int] = set()
    redis_ports = ports_with_partner(6, 10000, taken)
    kafka_ports = ports_with_partner(3, 100, taken)
    [mongo_port, smtp_port] = ports_with_partner(2, 0, taken)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGNS_") or k.endswith("_DIR")}
    env.update(
        {
            "CAMPAIGNS_TOPOLOGY": "cluster",
            "CAMPAIGNS_LOCAL_DIR": str(tmp_path / "local"),
            "CAMPAIGNS_REDIS_CLUSTER_NODES": ",".join(f"127.0.0.1:{p}" for p in redis_ports),
            "CAMPAIGNS_KAFKA_BOOTSTRAP": ",".join(f"127.0.0.1:{p}" for p in kafka_ports),
            "CAMPAIGNS_KAFKA_PARTITIONS": "3",
            "CAMPAIGNS_MONGO_URL": f"mongodb://127.0.0.1:{mongo_port}/?directConnection=true",
            "CAMPAIGNS_SMTP_PORT": str(smtp_port),
        }
    )
    try:
        up = stack(env, "up")
        assert up.returncode == 0, up.stdout + up.stderr

        info = subprocess.run(
            ["redis-cli", "-p", str(redis_ports[0]), "cluster", "info"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "cluster_state:ok" in info
        assert "cluster_size:3" in info
        assert "cluster_known_nodes:6" in info
        nodes = subprocess.run(
            ["redis-cli", "-p", str(redis_ports[0]), "cluster", "nodes"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        flags = [line.split()[2].split(",") for line in nodes]  # e.g. "myself,master"
        assert sum("master" in f for f in flags) == 3
        assert sum("slave" in f for f in flags) == 3
        appendonly = subprocess.run(
            ["redis-cli", "-p", str(redis_ports[3]), "config", "get", "appendfsync"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert appendonly == ["appendfsync", "everysec"]

        bootstrap = env["CAMPAIGNS_KAFKA_BOOTSTRAP"]
        brokers, partitions, min_isr = asyncio.run(kafka_facts(bootstrap, Topics().campaigns))
        assert brokers == 3
        assert len(partitions) == 3
        assert all(len(p["replicas"]) == 3 for p in partitions)  # type: ignore[arg-type]
        assert min_isr == "2"

        status = stack(env, "status", "--json")
        print(status.stdout)
        assert status.returncode == 0, status.stdout + status.stderr
        document = json.loads(status.stdout)
        assert document["topology"] == "cluster"
        servers = document["servers"]
        redis_nodes = [s for s in servers if s["kind"] == "redis"]
        kafka_nodes = [s for s in servers if s["kind"] == "kafka"]
        assert sorted(s["role"] for s in redis_nodes) == ["master"] * 3 + ["replica"] * 3
        assert [s["node_id"] for s in kafka_nodes] == [1, 2, 3]
        assert {s["kind"] for s in servers} == {"redis", "kafka", "mongo", "smtp"}
        pids = [s["pid"] for s in servers]
        assert all(s["state"] == "up" and processes.pid_alive(s["pid"]) for s in servers)

        down = stack(env, "down", timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr
        assert not any(processes.pid_alive(pid) for pid in pids)
    finally:
        stack(env, "down", timeout=120)
