"""Redis from Debian's `redis-server`: one node, or a Redis Cluster of primaries and replicas.

The cluster (topology `cluster`) runs one process per address of `redis_cluster_nodes`, with
cluster mode and an append-only file fsynced every second; each node's cluster bus listens on
its port + 10000 (Redis's own rule). The first start forms the cluster with
`redis-cli --cluster create ... --cluster-replicas 1`; later starts find it in each node's
`nodes.conf`.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from typing import Any
from urllib.parse import urlparse

from infra.local.recipes.base import Context, Group, Server, StackError, ensure_debian_package, host_port, say

CLUSTER_READY_SECONDS = 60.0


def redis_server() -> str:
    return shutil.which("redis-server") or "redis-server"


def single(ctx: Context) -> Group:
    url = urlparse(ctx.settings.redis_url)
    host, port = url.hostname or "127.0.0.1", url.port or 6379
    data = ctx.root / "redis"

    def prepare() -> None:
        ensure_debian_package("redis-server", "redis-server")
        data.mkdir(parents=True, exist_ok=True)

    server = Server(
        name="redis",
        kind="redis",
        host=host,
        port=port,
        prepare=prepare,
        command=lambda: [
            redis_server(),
            *("--bind", host, "--port", str(port), "--dir", str(data)),
            *("--save", "60 1000", "--appendonly", "no"),
            *MEMORY_SETTINGS,
            *("--protected-mode", "no", "--daemonize", "no"),
        ],
        ready=lambda: ping(host, port),
        where=f"redis://{host}:{port}",
        describe=lambda: {"role": role(host, port), "mode": "standalone"},
    )
    return Group("redis", [server])


# A campaign's read-model hash holds its ready-to-send JSON document (~520 B): above Redis's default
# `hash-max-listpack-value` (64) it is a hashtable, 1,008 B a campaign; as a listpack 760 B
# (measured with the bench's campaigns: 4.7 -> 4.3 times the document per campaign at 100,000).
# An owner's three sorted indexes (readmodels.campaigns) stay listpacks up to 256 campaigns rather
# than Redis's default 128: a skiplist entry costs ~130 B whatever its member, a listpack entry its
# ~33 B (bench/bytes_breakdown.py at 100,000 campaigns, 200 an owner: the owners' indexes 388 ->
# 104 B a campaign; Redis CPU over 100,000 projected events the same within the runs' noise).
MEMORY_SETTINGS = ("--hash-max-listpack-value", "1024", "--zset-max-listpack-entries", "256")


def cluster_addresses(ctx: Context) -> list[tuple[str, int]]:
    nodes = [host_port(a, 7000) for a in ctx.settings.redis_cluster_nodes.split(",") if a.strip()]
    if len(nodes) < 6 or len(nodes) % 2:
        raise StackError(
            "a Redis Cluster with one replica per primary needs an even number (at least 6) of "
            f"addresses in CAMPAIGNS_REDIS_CLUSTER_NODES, got {len(nodes)}"
        )
    return nodes


def cluster(ctx: Context) -> Group:
    nodes = cluster_addresses(ctx)
    servers = [_cluster_node(ctx, index, host, port) for index, (host, port) in enumerate(nodes, 1)]
    return Group("redis", servers, after_start=lambda: form_cluster(nodes))


def _cluster_node(ctx: Context, index: int, host: str, port: int) -> Server:
    data = ctx.root / "redis-cluster" / f"node-{index}"

    def prepare() -> None:
        ensure_debian_package("redis-server", "redis-server")
        data.mkdir(parents=True, exist_ok=True)

    return Server(
        name=f"redis-{index}",
        kind="redis",
        host=host,
        port=port,
        prepare=prepare,
        command=lambda: [
            redis_server(),
            *("--bind", host, "--port", str(port), "--dir", str(data)),
            *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            *("--cluster-node-timeout", "5000", "--cluster-port", str(port + 10000)),
            *("--appendonly", "yes", "--appendfsync", "everysec", "--save", ""),
            *MEMORY_SETTINGS,
            *("--protected-mode", "no", "--daemonize", "no"),
        ],
        ready=lambda: ping(host, port),
        where=f"redis://{host}:{port} (cluster node, bus {port + 10000})",
        describe=lambda: {"role": role(host, port), "mode": "cluster"},
    )


def form_cluster(nodes: list[tuple[str, int]]) -> None:
    """Create the cluster on fresh nodes; on nodes that already form it, only wait for `ok`."""
    infos = [cluster_info(host, port) for host, port in nodes]
    fresh = [
        info.get("cluster_known_nodes") == "1" and info.get("cluster_slots_assigned") == "0" for info in infos
    ]
    if all(fresh):
        addresses = [f"{host}:{port}" for host, port in nodes]
        say(f"redis  forming a cluster of {len(nodes) // 2} primaries and {len(nodes) // 2} replicas")
        result = subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if result.returncode != 0:
            raise StackError(f"redis-cli --cluster create failed:\n{(result.stdout + result.stderr)[-2000:]}")
    elif any(fresh):
        raise StackError(
            "the Redis Cluster's nodes disagree (some are fresh, some know a cluster): stop the stack "
            "and delete its redis-cluster directory to form it anew"
        )
    deadline = time.monotonic() + CLUSTER_READY_SECONDS
    while True:
        states = [cluster_info(host, port).get("cluster_state") for host, port in nodes]
        if all(state == "ok" for state in states):
            return
        if time.monotonic() > deadline:
            raise StackError(
                f"the Redis Cluster did not reach cluster_state:ok in {CLUSTER_READY_SECONDS:.0f}s"
            )
        time.sleep(0.3)


# ---------------------------------------------------------------------- probes


def _client(host: str, port: int) -> Any:
    import redis

    return redis.Redis(host=host, port=port, socket_timeout=2, socket_connect_timeout=2)


def ping(host: str, port: int) -> bool:
    import redis

    try:
        with _client(host, port) as client:
            return bool(client.ping())
    except (OSError, redis.RedisError):
        return False


def cluster_info(host: str, port: int) -> dict[str, str]:
    import redis

    try:
        with _client(host, port) as client:
            text = client.execute_command("CLUSTER INFO")
    except (OSError, redis.RedisError):
        return {}
    if isinstance(text, dict):
        return {str(k): str(v) for k, v in text.items()}
    text = text.decode() if isinstance(text, bytes) else str(text)
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key: value.strip() for key, value in pairs}


def role(host: str, port: int) -> str | None:
    """`master` or `replica` (what ROLE says; `slave` is reported as `replica`), None if down."""
    import redis

    try:
        with _client(host, port) as client:
            reply = client.execute_command("ROLE")
    except (OSError, redis.RedisError):
        return None
    name = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
    return "replica" if name == "slave" else name


def describe_cluster(host: str, port: int) -> dict[str, Any]:
    info = cluster_info(host, port)
    return {key: info.get(key) for key in ("cluster_state", "cluster_size", "cluster_known_nodes")}
