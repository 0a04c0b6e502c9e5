"""A throwaway Redis Cluster (3 primaries + 3 replicas) of one test's own, on free ports.

For fault tests that kill a primary or move slots: never the shared cluster on 7000-7005. The nodes run
Debian's `redis-server` with the cluster topology's options (infra/local/recipes/redis_server.py)
but a short node timeout, so a replica takes over a killed primary within seconds.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

from infra.local.recipes.redis_server import form_cluster, ping, redis_server, role
from tests.support.private_cluster import ports_with_partner
from tests.support.waiting import eventually_sync

NODE_TIMEOUT_MS = 2000


def _info(host: str, port: int) -> bytes:
    result = subprocess.run(
        ["redis-cli", "-h", host, "-p", str(port), "info", "replication"],
        capture_output=True,
        check=False,
        timeout=10,
    )
    return result.stdout


def _cli(port: int, *args: str) -> str:
    result = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    return result.stdout


class PrivateRedisCluster:
    def __init__(self, root: Path, nodes: int = 6) -> None:
        self.root = root
        # Below the ephemeral range, each with its bus port (+10000) free too.
        self.ports = ports_with_partner(nodes, 10000)
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

    def node_id(self, port: int) -> str:
        return _cli(port, "cluster", "myid").strip()

    def slots(self) -> dict[int, set[int]]:
        """The slots each primary owns (by port), from CLUSTER NODES; open (migrating or
        importing) slots are listed apart there and not counted here."""
        owned: dict[int, set[int]] = {}
        for line in _cli(self.ports[0], "cluster", "nodes").splitlines():
            fields = line.split()
            if len(fields) < 8 or "master" not in fields[2]:
                continue
            port = int(fields[1].split("@")[0].rpartition(":")[2])
            slots = owned.setdefault(port, set())
            for part in fields[8:]:
                if part.startswith("["):
                    continue
                low, _, high = part.partition("-")
                slots.update(range(int(low), int(high or low) + 1))
        return owned

    def reshard(
        self, source: int, target: int, slots: int, pipeline: int
    ) -> subprocess.CompletedProcess[str]:
        """`redis-cli --cluster reshard`: move `slots` slots (the source's lowest) from the
        primary on port `source` to the one on `target`, `pipeline` keys per MIGRATE."""
        return subprocess.run(
            [
                "redis-cli",
                *("--cluster", "reshard", f"127.0.0.1:{source}"),
                *("--cluster-from", self.node_id(source), "--cluster-to", self.node_id(target)),
                *("--cluster-slots", str(slots), "--cluster-pipeline", str(pipeline)),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )

    def check(self) -> subprocess.CompletedProcess[str]:
        """`redis-cli --cluster check`: every slot covered, none left open."""
        return subprocess.run(
            ["redis-cli", "--cluster", "check", self.addresses[0]],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    def replication(self, port: int) -> dict[str, str]:
        """INFO replication of the node on `port`, as fields."""
        fields = {}
        for line in _info("127.0.0.1", port).decode().splitlines():
            name, sep, value = line.partition(":")
            if sep:
                fields[name.strip()] = value.strip()
        return fields

    def replica_of(self, primary: int) -> int:
        """The port of the (one) replica of the primary on `primary`."""
        replica = self.replication(primary)["slave0"]  # ip=127.0.0.1,port=N,state=...,offset=...
        return int(dict(part.split("=", 1) for part in replica.split(","))["port"])

    def cut_replication(self, replica: int) -> None:
        """Let the replica on `replica` fall behind its primary, which goes on accepting writes:
        its link to the primary is closed and cannot be made again (a password the primary does
        not expect fails the handshake at each retry). What a replica far behind across a network
        amounts to; on loopback a SIGKILLed primary's last writes would otherwise still reach its
        replica from the socket, and a failover would lose nothing."""
        _cli(replica, "config", "set", "masterauth", "not-the-primary's")
        _cli(replica, "client", "kill", "type", "master")

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
