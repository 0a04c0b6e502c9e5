"""The stats projection alone, in-process, on standalone Redis and on a Redis Cluster (no Kafka):
events/s, CPU an event (this process, the Redis servers) and Redis commands an event.

`python -m bench.stats_apply [TREE ...]` takes the bench lock, starts a private redis-server (no
AOF, no snapshot) and a private 3+3 Redis Cluster (AOF everysec, replicas at nice 19 as in
bench/cluster_runs.py), and runs BENCH_ROUNDS (2) rounds; in each, one pass per source tree
given (default: this one), each pass a process of its own whose code comes from that tree
(PYTHONPATH), so two versions of the projection (e.g. `git archive main` unpacked beside this
worktree) are measured in one lock hold, on the same servers, alternately. A pass runs the
bench's campaign events (BENCH_EVENTS, 20,000 by default: the projector figure's five-event
lives) in batches of 500 through the stats projection's `apply`, on a fresh key prefix, at 1
bucket on the standalone server and at the cluster's 32, and prints per event: the pass's own
CPU (process time), the Redis servers' CPU (INFO cpu: the standalone server; the cluster's
primaries, and its replicas apart), the commands Redis ran (INFO commandstats: script calls,
the commands inside them, and writes, what the primaries append to their AOF and stream to
their replicas), and events/s. The projector figure cannot show the stats projection's own
cost while the Kafka consumer binds the process; this does.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis as sync_redis

BATCH = 500
WRITES = {"hincrby", "hset", "hdel", "sadd", "srem", "del", "set"}
# The measuring's and the clients' own commands, not the projection's.
NOT_COUNTED = ("info", "config", "script", "ping", "cluster", "command", "client", "hello", "readonly")


def _servers_cpu(ports: list[int]) -> float:
    """CPU seconds (user + system) the Redis servers on `ports` have used."""
    total = 0.0
    for port in ports:
        info = sync_redis.Redis(port=port).info("cpu")
        total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return total


def _calls(ports: list[int]) -> dict[str, int]:
    """Commands run so far on the servers on `ports`, by name."""
    calls: dict[str, int] = {}
    for port in ports:
        for name, value in sync_redis.Redis(port=port).info("commandstats").items():
            name = name.removeprefix("cmdstat_")
            calls[name] = calls.get(name, 0) + int(value["calls"])
    return calls


def _commands(before: dict[str, int], after: dict[str, int], events: int) -> dict[str, Any]:
    moved = {name: after[name] - before.get(name, 0) for name in after if not name.startswith(NOT_COUNTED)}
    moved = {name: n for name, n in moved.items() if n}
    scripts = moved.get("evalsha", 0)
    return {
        "script_calls": round(scripts / events, 4),
        "commands": round((sum(moved.values()) - scripts) / events, 3),
        "writes": round(sum(n for name, n in moved.items() if name in WRITES) / events, 3),
        "by_name": {name: round(n / events, 3) for name, n in sorted(moved.items()) if name != "evalsha"},
    }


async def _pass(
    redis: Any, buckets: int, events: list[Any], primaries: list[int], replicas: list[int]
) -> dict[str, Any]:
    from projectors.adapters.redis_projection import stats_projection

    projection = stats_projection(f"statsapply{uuid.uuid4().hex[:8]}", buckets)
    await projection.script.load(redis)
    calls = _calls(primaries)
    primary_cpu, replica_cpu = _servers_cpu(primaries), _servers_cpu(replicas)
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(events), BATCH):
        await projection.apply(redis, "stats.1", events[start : start + BATCH])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    count = len(events)
    return {
        "events_per_s": round(count / wall),
        "process_us": round(cpu / count * 1e6, 1),
        "redis_us": round((_servers_cpu(primaries) - primary_cpu) / count * 1e6, 1),
        "replicas_us": round((_servers_cpu(replicas) - replica_cpu) / count * 1e6, 1) if replicas else None,
        **_commands(calls, _calls(primaries), count),
    }


async def _measure(
    port: int, addresses: list[str], primaries: list[int], replicas: list[int], count: int
) -> dict[str, Any]:
    from redis.asyncio import Redis

    from bench.event_load import campaign_events
    from events import decode_event
    from service_runtime.redis_client import connect_redis
    from service_runtime.settings import Settings

    events = [decode_event(value) for _, value in campaign_events(count)]
    standalone = Redis(port=port)
    settings = Settings(redis_cluster_nodes=",".join(addresses))
    on_cluster = connect_redis(settings)
    try:
        return {
            "standalone": await _pass(standalone, 1, events, [port], []),
            "cluster": await _pass(on_cluster, settings.read_model_buckets, events, primaries, replicas),
        }
    finally:
        await standalone.aclose()
        await on_cluster.aclose()


def wait_answering(port: int) -> None:
    """Until the redis-server just started on `port` answers a PING (at most about 5 s)."""
    for _ in range(100):
        try:
            sync_redis.Redis(port=port).ping()
            return
        except sync_redis.ConnectionError:
            time.sleep(0.05)


def _child(argv: list[str]) -> None:
    """One pass with this tree's code: port, cluster addresses, primaries, replicas, events."""
    port, addresses, primaries, replicas, count = argv
    ports = [int(p) for p in primaries.split(",")], [int(p) for p in replicas.split(",")]
    result = asyncio.run(_measure(int(port), addresses.split(","), *ports, int(count)))
    print(json.dumps(result), flush=True)


def _line(tree: str, result: dict[str, Any]) -> str:
    s, c = result["standalone"], result["cluster"]
    return (
        f"  {tree}: standalone {s['events_per_s']:,} events/s, CPU an event {s['process_us']} us here, "
        f"{s['redis_us']} us Redis; {s['script_calls']} script calls, {s['commands']} commands inside, "
        f"{s['writes']} writes an event\n"
        f"  {' ' * len(tree)}  cluster {c['events_per_s']:,} events/s, {c['process_us']} us here, "
        f"{c['redis_us']} us the primaries, {c['replicas_us']} us the replicas; {c['script_calls']} script "
        f"calls, {c['commands']} commands, {c['writes']} writes an event; cluster/standalone "
        f"{c['events_per_s'] / s['events_per_s']:.2f}\n"
        f"  {' ' * len(tree)}  commands an event: standalone {s['by_name']}, cluster {c['by_name']}"
    )


def main() -> None:
    if sys.argv[1:2] == ["--pass"]:
        _child(sys.argv[2:])
        return
    from bench.cluster_runs import REPLICA_NICENESS
    from bench.lock import bench_lock
    from infra.local.recipes.redis_server import role
    from tests.support.private_redis_cluster import PrivateRedisCluster
    from tests.support.stack import free_port

    here = str(Path(__file__).resolve().parents[1])
    trees = [str(Path(t).resolve()) for t in sys.argv[1:]] or [here]
    count = int(os.environ.get("BENCH_EVENTS", "20000"))
    rounds = int(os.environ.get("BENCH_ROUNDS", "2"))
    with bench_lock(), tempfile.TemporaryDirectory() as directory:
        port = free_port()
        command = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"]
        server = subprocess.Popen([*command, "--dir", directory], stdout=subprocess.DEVNULL)
        cluster = PrivateRedisCluster(Path(directory) / "cluster")
        try:
            cluster.start()
            replicas = [p for p in cluster.processes if role("127.0.0.1", p) == "replica"]
            for node_port in replicas:
                os.setpriority(os.PRIO_PROCESS, cluster.processes[node_port].pid, REPLICA_NICENESS)
            wait_answering(port)
            args = [str(port), ",".join(cluster.addresses), ",".join(map(str, cluster.primaries()))]
            args += [",".join(map(str, replicas)), str(count)]
            print(f"{count:,} events in batches of {BATCH}; trees: {', '.join(trees)}", flush=True)
            for n in range(rounds):
                print(f"round {n + 1}:", flush=True)
                for tree in trees:
                    environment = {**os.environ, "PYTHONPATH": tree}
                    done = subprocess.run(
                        [sys.executable, "-m", "bench.stats_apply", "--pass", *args],
                        cwd=tree,
                        env=environment,
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    print(_line(tree, json.loads(done.stdout.strip().splitlines()[-1])), flush=True)
                print(f"  load average {os.getloadavg()[0]:.2f}", flush=True)
        finally:
            cluster.stop()
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
