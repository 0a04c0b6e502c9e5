"""A throwaway Redis Cluster (3 primaries + 3 replicas) of one test's own, on free ports.

For fault tests that kill a primary: never the shared cluster on 7000-7005. The nodes run
Debian's `redis-server` with the cluster topology's options (infra/local/recipes/redis_server.py)
but a short node timeout, so a replica takes over a killed primary within seconds.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from infra.local.recipes.redis_server import form_cluster, ping, redis_server, role
from tests.support.waiting import eventually_sync

NODE_TIMEOUT_MS = 2000


def _free_pair() -> int:
    """A port whose cluster-bus port (+10000) is free too."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _info(host: str, port: int) -> bytes:
    result = subprocess.run(
        ["redis-cli", "-h", host, "-p", str(port), "info", "replication"],
        capture_output=True,
        check=False,
        timeout=10,
    )
    return result.stdout


class PrivateRedisCluster:
    def __init__(self, root: Path, nodes: int = 6) -> None:
        self.root = root
        self.ports = [_free_pair() for _ in range(nodes)]
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    def start(self) -> None:
        for port in self.ports:
            data = self.root / f"node-{port}"
            data.mkdir(parents=True, exist_ok=True)
            self.processes[port] = subprocess.Popen(
                [
                    redis_server(),
                    *("--bind", "127.0.0.1", "--port", str(port), "--dir", str(data)),
                    *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                    *("--cluster-node-timeout", str(NODE_TIMEOUT_MS)),
                    *("--appendonly", "yes", "--appendfsync", "everysec", "--save", ""),
                    *("--protected-mode", "no", "--daemonize", "no", "--logfile", str(data / "log")),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        for port in self.ports:
            eventually_sync(
                lambda port=port: ping("127.0.0.1", port), 20, what=f"redis node {port} to answer"
            )
        form_cluster([("127.0.0.1", port) for port in self.ports])
        # A replica takes over only once it has synced with its primary (else its data is
        # too old to be promoted): wait for every one of them.
        eventually_sync(self._replicas_synced, 30, 0.2, "every replica to sync with its primary")

    def _replicas_synced(self) -> bool:
        replicas = [port for port in self.ports if role("127.0.0.1", port) == "replica"]
        return len(replicas) == len(self.ports) // 2 and all(
            b"master_link_status:up" in _info("127.0.0.1", port) for port in replicas
        )

    def primaries(self) -> list[int]:
        return [port for port in self.ports if role("127.0.0.1", port) == "master"]

    def kill(self, port: int) -> None:
        process = self.processes[port]
        process.kill()
        process.wait(10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
            if process.poll() is None:
                process.kill()
                process.wait(10)


@contextlib.contextmanager
def private_redis_cluster(root: Path) -> Iterator[PrivateRedisCluster]:
    cluster = PrivateRedisCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
