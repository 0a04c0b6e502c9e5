"""The cluster figures (issue 16): projector, replay and read path on a Redis Cluster, each beside
its standalone figure of the same run, and how the bench's keys spread over the primaries.

The cluster is a private one by default: 3 primaries + 3 replicas of Debian's `redis-server`
with the cluster topology's options (AOF `appendfsync everysec`), on free ports, started for the
run and stopped (data and all) at its end (`tests/support/private_redis_cluster.py`). So the
bench needs no cluster topology running, never shares the shared cluster's nodes with whatever
else runs there, and cannot disturb a running system. `BENCH_REDIS_CLUSTER_NODES=host:port,...`
points it at an existing cluster instead: the bench writes only under its own key prefix there
and unlinks those keys at the end.

Everything else is the standalone figure's: the same events (produced a second time into
topics of the cluster's own, so the cluster's projector has its own consumer group), the same
processes and the same timing, with `CAMPAIGNS_REDIS_CLUSTER_NODES` set (32 buckets).

Made fair and steadier for the projector figure (`paired_rounds`), on a machine of 2 cores that
other work shares:
- rounds: the standalone figure's run and the cluster's, then more pairs (BENCH_CLUSTER_ROUNDS,
  3 in all by default) each on topics and keys of its own, in alternating order (S C, C S, S C),
  so a load arriving in the middle of the run weighs on both sides; the ratio is the median of
  the pairs' ratios, every pair's rates kept in the figure's data;
- the private cluster's replicas run at the lowest CPU priority (nice 19): on a real cluster
  each runs on a host of its own; here, six Redis processes beside the projector on two cores,
  the replicas' replay of the primaries' writes (a third of the cluster's Redis CPU) took the
  cores the measured process and the primaries needed, which standalone Redis, without a
  replica, never pays. They still replicate (the primaries still feed them and write their
  append-only files): only their own CPU yields. Not done on a cluster named by
  BENCH_REDIS_CLUSTER_NODES, whose processes are not the bench's.
"""

from __future__ import annotations

import asyncio
import os
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from bench.environment import delete_keys
from bench.report import Figure
from infra.local.recipes.redis_server import role
from service_runtime.redis_client import connect_redis
from service_runtime.settings import Settings
from tests.support.private_redis_cluster import PrivateRedisCluster
from tests.support.redis_keys import keys_per_primary
from tests.support.stack import free_port

# The goals: the projector on the cluster at 0.8 of standalone, each primary >= 10% of keys.
PROJECTOR_GOAL = 0.8
SHARE_GOAL = 0.10
CLUSTER_FIGURES = ("projector", "replay", "read")
# The replicas' CPU priority on the private cluster (see the module's docstring).
REPLICA_NICENESS = 19


@dataclass
class BenchCluster:
    """The Redis Cluster the cluster figures run on: a private one, or the one named."""

    addresses: list[str]
    private: PrivateRedisCluster | None = None

    @classmethod
    async def start(cls, root: Path) -> BenchCluster:
        named = os.environ.get("BENCH_REDIS_CLUSTER_NODES", "").strip()
        if named:
            return cls([a.strip() for a in named.split(",") if a.strip()])
        cluster = PrivateRedisCluster(root)
        try:
            await asyncio.to_thread(cluster.start)
            for port, process in cluster.processes.items():
                if role("127.0.0.1", port) == "replica":
                    os.setpriority(os.PRIO_PROCESS, process.pid, REPLICA_NICENESS)
        except BaseException:
            await asyncio.to_thread(cluster.stop)
            raise
        return cls(cluster.addresses, cluster)

    @property
    def described(self) -> str:
        where = "private, started for this run" if self.private else "BENCH_REDIS_CLUSTER_NODES"
        return f"{len(self.addresses)} nodes ({where}): {', '.join(self.addresses)}"

    def settings(self, standalone: Settings, topic_suffix: str) -> Settings:
        """`standalone` moved onto the cluster: its own key prefix, and (where `topic_suffix` is
        given) topics, so its consumer groups are its own; fresh ports for its listeners."""
        update: dict[str, object] = {
            "redis_cluster_nodes": ",".join(self.addresses),
            "redis_prefix": standalone.redis_prefix + "C",
            "query_api_port": free_port(),
            "query_api_metrics_port": free_port(),
            "projectors_metrics_port": free_port(),
        }
        if topic_suffix:
            update["topic_prefix"] = standalone.topic_prefix.rstrip(".") + topic_suffix + "."
        return standalone.model_copy(update=update)

    async def stop(self, standalone: Settings) -> None:
        """Stop the private cluster (its data goes with the run's directory), or unlink every key
        the bench wrote on the named one (all under its prefix)."""
        if self.private is not None:
            await asyncio.to_thread(self.private.stop)
            return
        await delete_keys(self.settings(standalone, ""), standalone.redis_prefix)


@dataclass
class Pair:
    standalone: float
    cluster: float
    cluster_first: bool

    @property
    def ratio(self) -> float:
        return self.cluster / self.standalone if self.standalone else 0.0


def rounds() -> int:
    """BENCH_CLUSTER_ROUNDS: pairs of projector runs (standalone, cluster) for the cluster figure."""
    count = int(os.environ.get("BENCH_CLUSTER_ROUNDS", "3"))
    if count < 1:
        raise SystemExit(f"BENCH_CLUSTER_ROUNDS: at least 1, not {count}")
    return count


async def paired_rounds(
    first: Pair, more: int, run: Callable[[bool, int], Awaitable[float]]
) -> tuple[float, list[Pair]]:
    """`first` (the projector figure's own pair), then `more` pairs of `run(on_cluster, round)`
    in alternating order; the median ratio of all the pairs, and the pairs."""
    pairs = [first]
    for n in range(1, more + 1):
        cluster_first = n % 2 == 1
        rates: dict[bool, float] = {}
        for on_cluster in (True, False) if cluster_first else (False, True):
            rates[on_cluster] = await run(on_cluster, n)
        pairs.append(Pair(rates[False], rates[True], cluster_first))
    return statistics.median(pair.ratio for pair in pairs), pairs


def versus(
    key: str,
    title: str,
    cluster: float,
    standalone: float,
    unit: str,
    how: str,
    goal: float | None = None,
    ratio: float | None = None,
    **data: object,
) -> Figure:
    """A cluster figure against the standalone one of the same run (`ratio`: where it is not
    cluster / standalone, e.g. the median of several pairs')."""
    if ratio is None:
        ratio = cluster / standalone if standalone else 0.0
    return Figure(
        key=key,
        title=title,
        measured=f"{cluster:,.0f} {unit} (cluster)",
        limit=f"{standalone:,.0f} {unit} (standalone)",
        ratio=round(ratio, 3),
        goal="—" if goal is None else f"≥ {goal} of standalone",
        met=None if goal is None else ratio >= goal,
        how=how,
        data={"cluster": round(cluster, 1), "standalone": round(standalone, 1), **data},
    )


async def spread_figure(settings: Settings, events: int) -> Figure:
    """How the keys under the settings' prefix spread over the cluster's primaries."""
    redis = connect_redis(settings)
    try:
        spread = await keys_per_primary(redis, f"{settings.redis_prefix}*")
    finally:
        await redis.aclose()
    total = sum(spread.values())
    shares = {node: count / total if total else 0.0 for node, count in spread.items()}
    least = min(shares.values(), default=0.0)
    per_node = ", ".join(f"{count:,} ({shares[node]:.0%})" for node, count in sorted(spread.items()))
    return Figure(
        key="cluster_spread",
        title=f"Keys per primary after the cluster projector ({total:,} keys)",
        measured=f"least: {least:.1%} of the keys",
        limit=f"per primary: {per_node}",
        ratio=None,
        goal=f"≥ {SHARE_GOAL:.0%} each",
        met=total > 0 and least >= SHARE_GOAL,
        how=(
            f"SCAN of every primary for the load run's key prefix after the projector applied "
            f"{events:,} events ({settings.read_model_buckets} buckets): campaign hashes, their "
            "indexes, stats states and counters, pointers, status"
        ),
        data={"per_primary": spread, "buckets": settings.read_model_buckets, "total": total},
    )
