"""A private cluster for the cluster fault tests: 3 Kafka KRaft nodes (RF 3, min ISR 2) of its own.

Like `private_stack`, it never touches the servers on the default ports (nor the shared cluster
on 19092-19094): the same `infra/local/stack.py` starts it on free ports under
`.local/private/cluster-<pid>`, and one `stack.py down` there stops every server it started.
The Kafka nodes come from the `cluster` topology's recipe (`stack.py up kafka` with
CAMPAIGNS_TOPOLOGY=cluster); MongoDB, the SMTP sink and the read side's Redis from the `single`
recipe in the same directory.

`READ_SIDE` says which Redis the read side uses: `cluster` (the default), the cluster recipe's
six Redis nodes (3 primaries + 3 replicas) started here, with `redis_cluster_nodes` pointing at
them (see `settings()` and `fresh_up()`), or `standalone` (`CAMPAIGNS_CHAOS_READ_SIDE=standalone`),
one node; the services and the ledger reach either through
`service_runtime.redis_client.connect_redis`. Both were measured with the whole suite on the
shared 2-core machine: the cluster costs no measurable wall time (README, "cluster fault table").
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from service_runtime.settings import Settings
from tests.support.private_stack import PRIVATE_ROOT, _alive, kill_server, server_pid
from tests.support.stack import REPO, STACK, free_port, isolated_settings

READ_SIDE = os.environ.get("CAMPAIGNS_CHAOS_READ_SIDE", "cluster")
_KEPT = ("CAMPAIGNS_CACHE_DIR", "CAMPAIGNS_TOOLS_DIR")
CONTROLLER_OFFSET = 100  # infra/local/recipes/kafka_server.py: a node's controller listens on port + 100
REDIS_BUS_OFFSET = 10000


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ephemeral_low() -> int:
    """The first port of the kernel's range for outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def ports_with_partner(count: int, offset: int, avoid: frozenset[int] = frozenset()) -> list[int]:
    """Free ports whose port + `offset` is free too (a Kafka node's controller listener, a Redis
    Cluster node's bus), both below the kernel's ephemeral range when it leaves room: a port in
    it can be taken by any outgoing connection on the machine between choosing it and the
    server binding it (a Kafka node of this cluster once failed to start so on a busy machine)."""
    low, high = 10000, _ephemeral_low() - 1 - offset
    if high - low < 1000:
        low, high = 20000, 45000
    found: list[int] = []
    taken = set(avoid)
    while len(found) < count:
        port = random.randint(low, high)
        if port not in taken and port + offset not in taken and _bindable(port) and _bindable(port + offset):
            found.append(port)
            taken.update((port, port + offset))
    return found


@dataclass(frozen=True)
class PrivateCluster:
    local_dir: str
    kafka_ports: tuple[int, ...]
    redis_port: int
    redis_cluster_ports: tuple[int, ...]
    mongo_port: int
    smtp_port: int
    kafka_heap_mb: int = 256

    @classmethod
    def for_this_session(cls) -> PrivateCluster:
        kafka = ports_with_partner(3, CONTROLLER_OFFSET)
        controllers = [port + partner for port in kafka for partner in (0, CONTROLLER_OFFSET)]
        return cls(
            local_dir=f"{PRIVATE_ROOT}/cluster-{os.getpid()}",
            kafka_ports=tuple(kafka),
            redis_port=free_port(),
            redis_cluster_ports=tuple(ports_with_partner(6, REDIS_BUS_OFFSET, avoid=frozenset(controllers))),
            mongo_port=free_port(),
            smtp_port=free_port(),
        )

    @classmethod
    def load(cls, root: Path) -> PrivateCluster:
        values = json.loads((root / "cluster.json").read_text())
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    @property
    def root(self) -> Path:
        return (REPO / self.local_dir).resolve()

    @property
    def kafka_bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.kafka_ports)

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def redis_cluster_nodes(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.redis_cluster_ports)

    @property
    def mongo_url(self) -> str:
        return f"mongodb://127.0.0.1:{self.mongo_port}/?directConnection=true"

    def node_names(self) -> list[str]:
        return [f"kafka-{i}" for i in range(1, len(self.kafka_ports) + 1)]

    def node_of(self, broker_id: int) -> str:
        return f"kafka-{broker_id}"  # the recipe numbers node ids 1..N in bootstrap order

    def env(self, topology: str) -> dict[str, str]:
        """The environment that points stack.py at this cluster's servers only."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGNS_") or k in _KEPT}
        env.update(
            {
                "CAMPAIGNS_TOPOLOGY": topology,
                "CAMPAIGNS_LOCAL_DIR": self.local_dir,
                "CAMPAIGNS_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
                "CAMPAIGNS_KAFKA_PARTITIONS": "6",
                "CAMPAIGNS_KAFKA_REPLICATION_FACTOR": "3",
                "CAMPAIGNS_KAFKA_MIN_INSYNC_REPLICAS": "2",
                "CAMPAIGNS_KAFKA_CLUSTER_HEAP_MB": str(self.kafka_heap_mb),
                "CAMPAIGNS_REDIS_URL": self.redis_url,
                "CAMPAIGNS_REDIS_CLUSTER_NODES": self.redis_cluster_nodes,
                "CAMPAIGNS_MONGO_URL": self.mongo_url,
                "CAMPAIGNS_SMTP_PORT": str(self.smtp_port),
            }
        )
        return env

    def settings(self, **overrides: object) -> Settings:
        """Isolated settings (own database, key prefix, topics) on this cluster: topics of 6
        partitions, replication 3, min ISR 2."""
        values: dict[str, object] = {
            "mongo_url": self.mongo_url,
            "redis_url": self.redis_url,
            "redis_cluster_nodes": self.redis_cluster_nodes if READ_SIDE == "cluster" else "",
            "kafka_bootstrap": self.kafka_bootstrap,
            "kafka_partitions": 6,
            "kafka_replication_factor": 3,
            "kafka_min_insync_replicas": 2,
            "smtp_port": self.smtp_port,
            "local_dir": self.local_dir,
        }
        values.update(overrides)
        return isolated_settings(**values)

    # ------------------------------------------------------------------ whole cluster

    def _stack(self, topology: str, *args: str, timeout: float = 300) -> None:
        result = subprocess.run(
            [sys.executable, str(STACK), *args],
            cwd=REPO,
            env=self.env(topology),
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"stack.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")

    def fresh_up(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        (self.root / "cluster.json").write_text(json.dumps(asdict(self)))
        try:
            if READ_SIDE == "cluster":
                self._stack("single", "up", "mongo", "smtp")
                self._stack("cluster", "up", "redis", "kafka")
            else:
                self._stack("single", "up", "redis", "mongo", "smtp")
                self._stack("cluster", "up", "kafka")
        except BaseException:
            self.down()
            raise

    def down(self) -> None:
        """Stop every server (a `down` stops whatever a pid file of the directory names) and
        delete the data."""
        for pid in self._stopped_pids():  # a SIGSTOPped server would not see its SIGTERM
            os.kill(pid, signal.SIGCONT)
        self._stack("cluster", "down", timeout=180)
        shutil.rmtree(self.root, ignore_errors=True)

    def _stopped_pids(self) -> list[int]:
        pids = []
        for name in [path.stem for path in (self.root / "run").glob("*.pid")]:
            pid = self.pid(name)
            if pid is not None:
                pids.append(pid)
        return pids

    # ------------------------------------------------------------------ one server

    def pid(self, name: str) -> int | None:
        return server_pid(self.root, name)

    def kill(self, name: str, sig: int = signal.SIGKILL, timeout: float = 40) -> None:
        kill_server(self.root, name, sig, timeout)

    def start(self, name: str) -> None:
        """Start one node again (no-op if it runs) and wait until it has joined."""
        self._stack("cluster" if name.startswith("kafka") else "single", "up", name)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.root / "logs" / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    async def leaders(self, topics: list[str]) -> Counter[str]:
        """How many partitions of these topics each node leads."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.kafka_bootstrap, request_timeout_ms=10_000)
        await admin.start()
        try:
            counts: Counter[str] = Counter({name: 0 for name in self.node_names()})
            for topic in await admin.describe_topics(topics):
                for partition in topic["partitions"]:
                    if partition["leader"] >= 0:
                        counts[self.node_of(partition["leader"])] += 1
            return counts
        finally:
            await admin.close()


_RUNNING: PrivateCluster | None = None


def acquire_private_cluster() -> PrivateCluster:
    global _RUNNING
    if _RUNNING is None:
        reap_abandoned_clusters()
        cluster = PrivateCluster.for_this_session()
        cluster.fresh_up()
        _RUNNING = cluster
    return _RUNNING


def reap_abandoned_clusters() -> None:
    """Stop the private clusters of sessions that died without tearing theirs down."""
    for root in (REPO / PRIVATE_ROOT).glob("cluster-*"):
        owner = root.name.removeprefix("cluster-")
        if not owner.isdigit() or _alive(int(owner)):
            continue
        try:
            PrivateCluster.load(root).down()
        except (OSError, ValueError, TypeError, RuntimeError):
            shutil.rmtree(root, ignore_errors=True)


def release_private_cluster() -> None:
    global _RUNNING
    if _RUNNING is not None and not os.environ.get("CAMPAIGNS_KEEP_PRIVATE_STACK"):
        _RUNNING.down()
    _RUNNING = None


def run_async(coroutine):  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine)
