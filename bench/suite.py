"""`make bench`: every figure beside its limit, measured in one run on an isolated corner of the stack.

Order: the projector load run first (figures 2 and 5, no other service running), then the
command side alone (figure 3), then the whole pipeline (figures 1 and 4) and the memory of
every service after all that (figure 6). Knobs (environment):

  BENCH_EVENTS=100000           events in Kafka for the projector and the replay
  BENCH_PROJECTOR_INSTANCES=2   projectors processes of the projector figure's scaled-out run
  BENCH_SECONDS=10              seconds of each wrk round
  BENCH_ROUNDS=2                alternating rounds per side (wrk and commands)
  BENCH_CONNECTIONS=64          wrk connections
  BENCH_COMMAND_SECONDS=8       each wrk POST round of figure 3 (then as many raw transactions)
  BENCH_CONCURRENCY=16          in flight for figure 3, both sides
  BENCH_FRESHNESS_RATE=100      commands per second for figure 4
  BENCH_FRESHNESS_SECONDS=60    its duration
  BENCH_FRESHNESS_LOW_RATE=25   the same first at a rate the local MongoDB server sustains
  BENCH_FRESHNESS_LOW_SECONDS=20  (0 skips it)
  BENCH_SCHEDULER_CAMPAIGNS=10000  campaigns due within the same window for figure 7
  BENCH_SCHEDULER_WINDOW=10     that window, in seconds
  BENCH_AE_CAMPAIGNS=20000      campaigns (and a user per ten) the anti-entropy pass walks (figure 9)
  BENCH_AE_SECONDS=20           how long its CPU is measured
  BENCH_RATE_START=100          the sustained-rate steps: first offered rate (commands/s),
  BENCH_RATE_STEP=50            the step up,
  BENCH_RATE_MAX=400            the last step tried (steps stop at the first that does not hold;
                                when the first does not, they go down by half a step until one does),
  BENCH_RATE_SECONDS=60         and each step's duration
  BENCH_KEEP_LOGS=1             keep the services' logs under .local/bench/<tag>
  BENCH_PROFILE=<dir>           py-spy every service during the 100 commands/s run (bench/profiles.py)
  BENCH_STAGES=1                each freshness run's time split by stage, watched from outside
                                (bench/stages.py; off by default: the tap's own cost)
  BENCH_RELAY_EVENTS=6000       figure 8 (relay transactions on vs off; bench/relay_transactions.py):
  BENCH_RELAY_RATE=20           its backlog, its steady insert rate and duration, its rounds
  BENCH_RELAY_SECONDS=10
  BENCH_RELAY_ROUNDS=2
  BENCH_SCALE_SIZES=10000,100000  the scale figures' sizes in campaigns (bench/scale.py),
  BENCH_SCALE=1                 with 1,000,000 campaigns added (minutes: kept out of the default run),
  BENCH_SCALE_CONNECTIONS=16    wrk connections and seconds of each of their list and by-id rounds
  BENCH_SCALE_SECONDS=5
  BENCH_SCALE_ROUNDS=5          rounds of each (alternating), the median p99's kept
  BENCH_ONLY=read,projector     only these figures (footprint, read (GET by id and the list query),
                                projector, replay, scale,
                                commands, scheduler, anti_entropy, freshness, cpu, sustained, memory,
                                relay_transactions, cluster);
                                `cluster` adds the Redis Cluster's projector, replay and read path
                                beside those selected (all three if none is), and the keys' spread
                                over its primaries (bench/cluster_runs.py)
  BENCH_CLUSTER_ROUNDS=3        pairs of projector runs (standalone, cluster) for its cluster
                                figure, in alternating order; the ratio is their median
  BENCH_REDIS_CLUSTER_NODES=    an existing Redis Cluster for them (host:port,...); by default a
                                private 3+3 one is started for the run and stopped at its end
                                written to bench/results/only-<names>.json, so latest.json always
                                holds a whole run

The idle footprint is measured first, on freshly started services; CPU per command comes from the
100 commands/s freshness run; the sustained-rate steps run after it, with every service running.
The chart of the steps (bench/chart.py) is written beside the results as a PNG.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from aiokafka.admin import AIOKafkaAdminClient
from pymongo import AsyncMongoClient
from rich.console import Console

from bench import (
    anti_entropy,
    chart,
    commands,
    cpu_cost,
    freshness,
    idle_footprint,
    profiles,
    rate_steps,
    read_path,
    relay_transactions,
    scale,
    scheduler,
    stages,
)
from bench.cluster_runs import (
    CLUSTER_FIGURES,
    PROJECTOR_GOAL,
    BenchCluster,
    Pair,
    paired_rounds,
    rounds,
    spread_figure,
    versus,
)
from bench.environment import (
    ALL_SERVICES,
    BenchEnvironment,
    committed_total,
    delete_keys,
    end_offsets,
    load_settings,
    wait_for_leaders,
)
from bench.event_load import produce
from bench.lock import bench_lock
from bench.machine import describe, load_average
from bench.memory import CpuWindow, process_tree_memory, tree_pids
from bench.projection_runs import ProjectorRun, projector_process, replay_rebuild
from bench.raw_limits import raw_consume, raw_consume_one_key, raw_transactions
from bench.report import RESULTS, Figure, calibration_text, show, write
from events import Topics
from events.log import relay_backlog
from readmodels.groups import projection_group
from service_runtime.settings import Settings
from tests.support.stack import create_topics

console = Console(width=max(140, Console().width))
MIB_GOAL = 200


def knob(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def say(message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {message}")


async def _user(command_url: str) -> tuple[str, str]:
    """Register and log in the bench's user: (user id, access token)."""
    credentials = {"email": "bench@example.com", "password": "a long bench passphrase 42"}
    async with httpx.AsyncClient(base_url=command_url, timeout=30) as client:
        registered = await client.post("/auth/register", json={**credentials, "name": "Bench"})
        registered.raise_for_status()
        login = await client.post("/auth/login", json=credentials)
        login.raise_for_status()
    return registered.json()["id"], login.json()["access_token"]


# The list query's data: this many campaigns of the bench's user, the first LIST_ACTIVE of them
# activated (the page of 20 active ones is walked past drafts, as a user's list is).
LIST_CAMPAIGNS = 60
LIST_ACTIVE = 40


async def _list_data(command_url: str, query_url: str, token: str) -> None:
    """Create and activate the list query's campaigns, and wait until the query API shows them."""
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=30, headers=auth) as client:
        activated: list[tuple[str, int]] = []
        for n in range(LIST_CAMPAIGNS):
            body = {**commands.CAMPAIGN, "name": f"Listed campaign {n}"}
            created = await client.post(f"{command_url}/campaigns", json=body)
            created.raise_for_status()
            if n < LIST_ACTIVE:
                campaign_id = created.json()["id"]
                done = await client.post(f"{command_url}/campaigns/{campaign_id}/activate")
                done.raise_for_status()
                activated.append((campaign_id, done.json()["version"]))
        for campaign_id, version in activated:
            seen = await client.get(f"{query_url}/campaigns/{campaign_id}", params={"min_version": version})
            seen.raise_for_status()


async def _pipeline_idle(settings: Settings, limit_seconds: float = 300) -> None:
    """Wait until the relay published everything and every consumer group is at the end."""
    topics = Topics(settings.topic_prefix)
    groups = {
        topics.campaigns: [projection_group(settings, "campaigns"), projection_group(settings, "stats")],
        topics.users: [projection_group(settings, "users"), projection_group(settings, "stats")],
    }
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    deadline = time.monotonic() + limit_seconds
    try:
        while True:
            unpublished = await relay_backlog(mongo[settings.mongo_db])
            behind = 0
            for topic, names in groups.items():
                end = sum((await end_offsets(settings, topic)).values())
                for group in names:
                    behind += end - await committed_total(admin, group, topic)
            if unpublished == 0 and behind == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"pipeline not idle: {unpublished} unpublished, {behind} behind")
            await asyncio.sleep(0.5)
    finally:
        await admin.close()
        await mongo.close()


async def load_run(
    env: BenchEnvironment, events: int, *, replay_too: bool = True, cluster: BenchCluster | None = None
) -> tuple[list[Figure], dict[str, Any]]:
    """Figures 2 and 5 on the load run's own topics and keys; with `cluster`, the same beside them
    on the Redis Cluster (own topics and keys), each right after its standalone run."""
    load = load_settings(env.settings)
    on_cluster = cluster.settings(load, "C") if cluster else None
    loads = [load] if on_cluster is None else [load, on_cluster]
    for settings in loads:
        await create_topics(settings)
        await wait_for_leaders(settings, Topics(settings.topic_prefix).all())
    topic = Topics(load.topic_prefix).campaigns
    produced_in = 0.0
    for settings in loads:
        where = Topics(settings.topic_prefix).campaigns
        say(f"producing {events:,} campaign events into {where}")
        produced_in += await produce(load.kafka_bootstrap, where, events)
    total = sum((await end_offsets(load, topic)).values())
    say(f"  {total:,} events in {produced_in:.1f} s; raw consume loop (limit)")
    raw_before = await raw_consume(load, topic, f"{load.redis_prefix}:raw")
    say(f"  raw: {raw_before.per_second:,.0f} events/s; the projector process")
    servers = {name: pids for name, pids in env.servers().items() if name in ("redis", "kafka")}
    services = env.other_services(load, "load")
    projector = await projector_process(services, load, topic, total, servers=servers)
    services.stop_all()
    say(f"  projector: {projector.rate.per_second:,.0f} events/s ({_cores_said(projector)})")
    scaled_settings, scaled_topic = await _own_load(load, "I", events, now=False)
    instances = knob("BENCH_PROJECTOR_INSTANCES", SCALED_INSTANCES)
    services = env.other_services(scaled_settings, "load-instances")
    scaled = await projector_process(
        services,
        scaled_settings,
        scaled_topic,
        total,
        instances=instances,
        servers=servers,
        feed=lambda: produce(load.kafka_bootstrap, scaled_topic, events),
    )
    services.stop_all()
    await delete_keys(scaled_settings, scaled_settings.redis_prefix)
    rate = f"{scaled.rate.per_second:,.0f} events/s"
    say(f"  projector, {instances} instances: {rate} ({_cores_said(scaled)})")
    cluster_figures: list[Figure] = []
    if on_cluster is not None:
        cluster_topic = Topics(on_cluster.topic_prefix).campaigns
        say("  the projector process on the Redis Cluster")
        services = env.other_services(on_cluster, "load-cluster")
        projector_c = await projector_process(services, on_cluster, cluster_topic, total)
        services.stop_all()
        say(f"  projector on the cluster: {projector_c.rate.per_second:,.0f} events/s")
        spread = await spread_figure(on_cluster, total)

        async def one_round(on_cluster_side: bool, n: int) -> float:
            base = on_cluster if on_cluster_side else load
            assert base is not None
            settings, where = await _own_load(base, f"R{n}", events)
            side = "cluster" if on_cluster_side else "standalone"
            running = env.other_services(settings, f"load-{side}-{n}")
            run = await projector_process(running, settings, where, total)
            running.stop_all()
            await delete_keys(settings, settings.redis_prefix)
            say(f"  round {n + 1}, {side}: {run.rate.per_second:,.0f} events/s (load {load_average()})")
            return run.rate.per_second

        first = Pair(projector.rate.per_second, projector_c.rate.per_second, cluster_first=False)
        ratio, pairs = await paired_rounds(first, rounds() - 1, one_round)
        say(f"  cluster / standalone: median {ratio:.2f} of {', '.join(f'{p.ratio:.2f}' for p in pairs)}")
        cluster_figures.append(
            versus(
                "projector_cluster",
                f"Projector on Redis Cluster vs standalone ({total:,} events, median of {len(pairs)})",
                statistics.median(p.cluster for p in pairs),
                statistics.median(p.standalone for p in pairs),
                "events/s",
                "the projector figure's process and timing with CAMPAIGNS_REDIS_CLUSTER_NODES set "
                f"({on_cluster.read_model_buckets} buckets), on the same events produced into topics "
                f"of its own; {len(pairs)} pairs of runs (standalone, cluster), the first the "
                "projector figure's own, the others on topics and keys of their own in alternating "
                "order; ratio: the median of the pairs' cluster / standalone (rates: the medians); "
                "the private cluster's replicas at nice 19 (bench/cluster_runs.py says why)",
                goal=PROJECTOR_GOAL,
                ratio=ratio,
                pairs=[
                    {
                        "standalone": round(p.standalone, 1),
                        "cluster": round(p.cluster, 1),
                        "ratio": round(p.ratio, 3),
                        "cluster_first": p.cluster_first,
                    }
                    for p in pairs
                ],
                wall_seconds_from_spawn=round(projector_c.wall_seconds, 2),
                stats_projection_done_seconds_from_spawn=round(projector_c.stats_seconds, 2),
                standalone_stats_projection_done_seconds_from_spawn=round(projector.stats_seconds, 2),
                rss_mib_after_run=round(projector_c.rss_mib, 1),
            )
        )
        cluster_figures.append(spread)
        say(f"  {cluster_figures[-1].measured}; {cluster_figures[-1].limit}")
    say("  raw loop again")
    raw_after = await raw_consume(load, topic, f"{load.redis_prefix}:raw2")
    limit = max(raw_before, raw_after, key=lambda r: r.per_second)
    one_key = await raw_consume_one_key(load, topic, f"{load.redis_prefix}:raw1")
    say(f"  (reference: one HSET per event, the first session's limit: {one_key.per_second:,.0f} events/s)")
    say(f"  raw: {raw_after.per_second:,.0f} events/s")
    if replay_too:
        replay, replay_details = await replay_rebuild(load)
        say(f"  replay: {replay.per_second:,.0f} events/s")
        if on_cluster is not None:
            replay_c, replay_c_details = await replay_rebuild(on_cluster)
            say(f"  replay on the cluster: {replay_c.per_second:,.0f} events/s")
            cluster_figures.append(
                versus(
                    "replay_cluster",
                    f"Replay on Redis Cluster vs standalone ({total:,} events, Kafka)",
                    replay_c.per_second,
                    replay.per_second,
                    "events/s",
                    "the replay figure's rebuild on the cluster's own topic and keys, right after "
                    "the standalone one; ratio: cluster / standalone",
                    replay=replay_c_details,
                )
            )
    await delete_keys(load, load.redis_prefix)
    if on_cluster is not None:
        await delete_keys(on_cluster, on_cluster.redis_prefix)
    raw_data = {
        "raw_rounds_per_second": [round(raw_before.per_second), round(raw_after.per_second)],
        "one_hset_per_event_reference_per_second": round(one_key.per_second),
        "events": total,
    }
    figures = [
        _events_figure(
            "projector",
            f"Projector, campaigns projection ({total:,} events)",
            projector.rate.per_second,
            one_key.per_second,
            limit.per_second,
            PROJECTOR_EVENTS_GOAL,
            (
                "the real process (`campaigns serve projectors`, all three projections; stats reads "
                "the same topic), timed by the campaigns consumer group's committed offsets from its "
                "first commit to the end of the topic; reference (limit column): the physical loop, "
                "aiokafka getmany and one pipelined HSET of the record per event; beside it the loop "
                "writing the same keys as the projection (the campaign hash and the index memberships "
                "it moves, from the campaign's fields kept in memory, redis-py pipelines, no guard), "
                "best of a run before and after"
            ),
            wall_seconds_from_spawn=round(projector.wall_seconds, 2),
            stats_projection_done_seconds_from_spawn=round(projector.stats_seconds, 2),
            cores=projector.cores,
            machine=projector.machine,
            **raw_data,
        ),
        _scaled_figure(scaled, projector, total),
    ]
    if replay_too:
        figures.append(
            _events_figure(
                "replay",
                f"Replay of the campaigns projection ({total:,} events, Kafka)",
                replay.per_second,
                one_key.per_second,
                limit.per_second,
                REPLAY_EVENTS_GOAL,
                (
                    "the replay tool's rebuild (`campaigns replay rebuild campaigns --source kafka`) run "
                    "in-process through its composition root: a new generation from the topic, caught up "
                    "and swapped in, its full pass split over CAMPAIGNS_REPLAY_PROCESSES processes by "
                    "partition (2 by default; `processes` in the data); events/s as the tool reports "
                    "them; reference: the loops of the projector figure"
                ),
                replay=replay_details,
                **raw_data,
            )
        )
    figures += cluster_figures
    extra = {
        "produce_seconds": round(produced_in, 2),
        "load_projector_rss_mib_after_run": round(projector.rss_mib, 1),
    }
    return figures, extra


# Absolute goals of the load run (issue 21), each shown beside the one-HSET-per-event loop.
PROJECTOR_EVENTS_GOAL = 15_000
REPLAY_EVENTS_GOAL = 30_000
# The projector figure again with this many processes in its consumer groups by default
# (BENCH_PROJECTOR_INSTANCES): the scale-out the cluster topology runs
# (CAMPAIGNS_PROJECTORS_INSTANCES=2), one a core here.
SCALED_INSTANCES = 2


async def _own_load(base: Settings, tag: str, events: int, *, now: bool = True) -> tuple[Settings, str]:
    """`base` on topics and keys of its own (`tag` added to its prefixes), with the load's
    `events` produced into its campaigns topic (unless `now` is False): the settings and that
    topic."""
    settings = base.model_copy(
        update={
            "topic_prefix": base.topic_prefix.rstrip(".") + f"{tag}.",
            "redis_prefix": base.redis_prefix + tag,
        }
    )
    where = Topics(settings.topic_prefix).campaigns
    await create_topics(settings)
    await wait_for_leaders(settings, Topics(settings.topic_prefix).all())
    if now:
        await produce(settings.kafka_bootstrap, where, events)
    return settings, where


def _cores_said(run: ProjectorRun) -> str:
    used = ", ".join(f"{name} {value:.2f}" for name, value in run.cores.items())
    return f"cores: {used}; machine busy {run.machine.get('busy_cores', 0):.2f}"


def _scaled_figure(scaled: ProjectorRun, one: ProjectorRun, total: int) -> Figure:
    """The projector figure's process and timing with `scaled.instances` processes, against the
    figure's own run of one: the same goal, met by whichever way the projection can be run."""
    measured = scaled.rate.per_second
    return Figure(
        key="projector_instances",
        title=f"Projector with {scaled.instances} instances, campaigns projection ({total:,} events)",
        measured=f"{measured:,.0f} events/s ({_cores_said(scaled)})",
        limit=f"one instance {one.rate.per_second:,.0f} events/s ({_cores_said(one)})",
        ratio=round(measured / one.rate.per_second, 3) if one.rate.per_second else None,
        goal=f"≥ {PROJECTOR_EVENTS_GOAL:,} events/s",
        met=measured >= PROJECTOR_EVENTS_GOAL,
        how=(
            f"the projector figure's process and timing, {scaled.instances} processes of `campaigns "
            "serve projectors` sharing the consumer groups (as CAMPAIGNS_PROJECTORS_INSTANCES runs "
            "them: Kafka splits the partitions between them) on topics and keys of their own, the "
            "same events produced once every instance holds its share of each consumer group (no "
            "rebalance in the window); cores (/proc, Redis and Kafka's servers "
            "from theirs) and the machine's busy cores (/proc/stat) over the timed window, from the "
            "first commit to the last; ratio: to the projector figure's one instance"
        ),
        data={
            "measured": round(measured, 1),
            "limit": round(one.rate.per_second, 1),
            "instances": scaled.instances,
            "cores": scaled.cores,
            "machine": scaled.machine,
            "one_instance_cores": one.cores,
            "one_instance_machine": one.machine,
            "wall_seconds_from_spawn": round(scaled.wall_seconds, 2),
            "stats_projection_done_seconds_from_spawn": round(scaled.stats_seconds, 2),
            "rss_mib_after_run": round(scaled.rss_mib, 1),
        },
    )


def _events_figure(
    key: str,
    title: str,
    measured: float,
    one_hset: float,
    same_keys: float,
    goal: int,
    how: str,
    **data: Any,
) -> Figure:
    """events/s against an absolute goal; the ratio is to the one-HSET loop of the same run."""
    return Figure(
        key=key,
        title=title,
        measured=f"{measured:,.0f} events/s",
        limit=f"one HSET/event {one_hset:,.0f} events/s (same-keys loop {same_keys:,.0f})",
        ratio=round(measured / one_hset, 3) if one_hset else None,
        goal=f"≥ {goal:,} events/s",
        met=measured >= goal,
        how=how,
        data={"measured": round(measured, 1), "limit": round(one_hset, 1), **data},
    )


async def _query_api_on_cluster(
    env: BenchEnvironment, cluster: BenchCluster, campaign: dict[str, Any], token: str
) -> str:
    """A second query API on the Redis Cluster, serving what the bench's topics hold: the
    campaigns projection rebuilt there by the replay tool (the live projectors' consumer groups
    are the standalone ones'). Its URL, once it answers the campaign."""
    on_cluster = cluster.settings(env.settings, "")
    say("read path on the cluster: the campaigns projection rebuilt there, a query API on it")
    await replay_rebuild(on_cluster)
    services = env.other_services(on_cluster, "read-cluster")
    services.start(["query-api"])
    # Not `wait_ready`: its readiness asks for projector heartbeats, and no projector runs there.
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=30) as client:
        while True:
            try:
                seen = await client.get(
                    f"{services.query_url}/campaigns/{campaign['id']}",
                    params={"min_version": campaign["version"]},
                    headers={"Authorization": f"Bearer {token}"},
                )
                if seen.status_code == 200:
                    return services.query_url
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the query API on the cluster did not serve the bench's campaign")
            await asyncio.sleep(0.5)


def processes(env: BenchEnvironment) -> dict[str, list[int]]:
    """The process groups whose CPU a figure reports: each running service, the servers, the bench."""
    groups = {name: tree_pids(proc.pid) for name, proc in env.services.processes.items()}
    groups.update(env.servers())
    groups["bench client"] = [os.getpid()]
    return groups


def memory_figure(env: BenchEnvironment) -> Figure:
    per_service: dict[str, list[dict[str, Any]]] = {}
    worst = 0.0
    worst_name = ""
    for name in ALL_SERVICES:
        tree = process_tree_memory(env.services.processes[name].pid)
        per_service[name] = [{"pid": p.pid, "role": p.role, "rss_mib": round(p.rss_mib, 1)} for p in tree]
        for process in tree:
            if process.rss_mib > worst:
                worst, worst_name = process.rss_mib, f"{name} {process.role}"
    summary = ", ".join(f"{name} {sum(p['rss_mib'] for p in tree):.0f}" for name, tree in per_service.items())
    return Figure(
        key="memory",
        title="Resident memory per service process, after the runs",
        measured=f"largest: {worst:.0f} MiB ({worst_name})",
        limit=f"summed per service (MiB): {summary}",
        ratio=None,
        goal=f"< {MIB_GOAL} MiB each",
        met=worst < MIB_GOAL,
        how="VmRSS from /proc of each service's process and its descendants (uvicorn workers), after "
        "every other figure, with the pipeline idle",
        data={"per_service": per_service},
    )


FIGURE_KEYS = (
    "footprint",
    "read",
    "projector",
    "commands",
    "scheduler",
    "anti_entropy",
    "freshness",
    "cpu",
    "sustained",
    "replay",
    "scale",
    "memory",
    "relay_transactions",
    "cluster",
)


def scale_sizes() -> tuple[int, ...]:
    listed = os.environ.get("BENCH_SCALE_SIZES", "").strip()
    sizes = [int(n) for n in listed.split(",") if n.strip()] if listed else list(scale.SIZES)
    if os.environ.get("BENCH_SCALE") == "1":
        sizes.append(scale.LARGE)
    if len(set(sizes)) < 2 or min(sizes) <= 0:
        raise SystemExit(f"BENCH_SCALE_SIZES: two or more positive sizes, not {sizes}")
    return tuple(sorted(set(sizes)))


def selected_figures() -> tuple[str, ...]:
    only = os.environ.get("BENCH_ONLY", "").strip()
    if not only:
        return FIGURE_KEYS
    chosen = tuple(name.strip() for name in only.split(",") if name.strip())
    unknown = sorted(set(chosen) - set(FIGURE_KEYS))
    if unknown:
        raise SystemExit(
            f"BENCH_ONLY: unknown figure(s) {', '.join(unknown)}; known: {', '.join(FIGURE_KEYS)}"
        )
    if "cluster" in chosen and not set(CLUSTER_FIGURES) & set(chosen):
        # The cluster figures stand beside their standalone figures of the same run.
        chosen += CLUSTER_FIGURES
    return chosen


async def run_suite() -> int:
    only = selected_figures()
    events = knob("BENCH_EVENTS", 100_000)
    seconds = knob("BENCH_SECONDS", 10)
    rounds = knob("BENCH_ROUNDS", 2)
    connections = knob("BENCH_CONNECTIONS", 64)
    command_seconds = knob("BENCH_COMMAND_SECONDS", 8)
    concurrency = knob("BENCH_CONCURRENCY", 16)
    fresh_rate = knob("BENCH_FRESHNESS_RATE", 100)
    fresh_seconds = knob("BENCH_FRESHNESS_SECONDS", 60)
    low_rate = knob("BENCH_FRESHNESS_LOW_RATE", 25)
    low_seconds = knob("BENCH_FRESHNESS_LOW_SECONDS", 20)
    timed_campaigns = knob("BENCH_SCHEDULER_CAMPAIGNS", 10_000)
    timed_window = knob("BENCH_SCHEDULER_WINDOW", 10)
    ae_campaigns = knob("BENCH_AE_CAMPAIGNS", 20_000)
    ae_seconds = knob("BENCH_AE_SECONDS", 20)
    rate_start = knob("BENCH_RATE_START", 100)
    rate_step = knob("BENCH_RATE_STEP", 50)
    rate_max = knob("BENCH_RATE_MAX", 400)
    rate_seconds = knob("BENCH_RATE_SECONDS", 60)
    sizes = scale_sizes()
    scale_connections = knob("BENCH_SCALE_CONNECTIONS", 16)
    scale_seconds = knob("BENCH_SCALE_SECONDS", 5)
    scale_rounds = knob("BENCH_SCALE_ROUNDS", scale.ROUNDS)

    started = time.monotonic()
    env = await BenchEnvironment.create()
    env.settings = env.settings.model_copy(update={"access_token_ttl_seconds": 3600})
    env.services.settings = env.settings
    context = await describe(env.settings)
    context["knobs"] = {
        "BENCH_EVENTS": events,
        "BENCH_SECONDS": seconds,
        "BENCH_ROUNDS": rounds,
        "BENCH_CONNECTIONS": connections,
        "BENCH_COMMAND_SECONDS": command_seconds,
        "BENCH_CONCURRENCY": concurrency,
        "BENCH_FRESHNESS_RATE": fresh_rate,
        "BENCH_FRESHNESS_SECONDS": fresh_seconds,
        "BENCH_FRESHNESS_LOW_RATE": low_rate,
        "BENCH_FRESHNESS_LOW_SECONDS": low_seconds,
        "BENCH_SCHEDULER_CAMPAIGNS": timed_campaigns,
        "BENCH_SCHEDULER_WINDOW": timed_window,
        "BENCH_AE_CAMPAIGNS": ae_campaigns,
        "BENCH_AE_SECONDS": ae_seconds,
        "BENCH_RATE_START": rate_start,
        "BENCH_RATE_STEP": rate_step,
        "BENCH_RATE_MAX": rate_max,
        "BENCH_RATE_SECONDS": rate_seconds,
        "BENCH_SCALE_SIZES": list(sizes),
        "BENCH_SCALE_CONNECTIONS": scale_connections,
        "BENCH_SCALE_SECONDS": scale_seconds,
        "BENCH_SCALE_ROUNDS": scale_rounds,
    }
    say(
        f"bench {env.tag}: {context['machine']['cpu_model']}, {context['machine']['cores']} cores, "
        f"load average {context['machine']['load_average_at_start']}; host calibration "
        f"{calibration_text(context['machine']['calibration'])}"
    )
    figures: dict[str, Figure] = {}
    cluster: BenchCluster | None = None
    try:
        if "cluster" in only:
            say("Redis Cluster for the cluster figures")
            cluster = await BenchCluster.start(env.work_dir / "redis-cluster")
            context["redis_cluster"] = cluster.described
            say(f"  {cluster.described}")
        if "footprint" in only:
            say("idle footprint: every service freshly started, idle")
            idle = await idle_footprint.measure(env.other_services(env.settings, "idle"))
            figures["footprint"] = idle
            say(f"  {idle.measured}; {idle.limit}; idle CPU (cores): {idle.data['idle_cpu_cores']}")

        if {"projector", "replay"} & set(only):
            load_figures, extra = await load_run(
                env,
                events,
                replay_too="replay" in only,
                cluster=cluster if {"projector", "replay"} & set(only) and cluster else None,
            )
            context["load_run"] = extra
            figures.update((f.key, f) for f in load_figures)

        if "scale" in only:
            say(f"costs as data grows: {', '.join(f'{n:,}' for n in sizes)} campaigns")
            scale_figures, _ = await scale.measure(
                env, sizes, connections=scale_connections, seconds=scale_seconds, say=say, rounds=scale_rounds
            )
            figures.update((f.key, f) for f in scale_figures)
            for figure in scale_figures:
                say(f"  {figure.title}: {figure.measured} vs {figure.limit}")

        if "relay_transactions" in only:
            say("relay: Kafka transactions on vs off (the relay process alone)")
            relay_figure = await relay_transactions.measure(env.settings, env.work_dir)
            figures["relay_transactions"] = relay_figure
            say(f"  {relay_figure.measured}; {relay_figure.limit}")

        env.services.start(["command-api"])
        env.services.wait_ready()
        user_id, token = await _user(env.services.command_url)
        if "commands" in only:
            say("command side: command API alone")
            command_figure = await commands.measure(
                env.settings,
                env.services.command_url,
                token,
                user_id,
                seconds=command_seconds,
                concurrency=concurrency,
                rounds=rounds,
                processes=lambda: processes(env),
            )
            figures["commands"] = command_figure
            say(f"  {command_figure.measured} vs {command_figure.limit}")

        if "scheduler" in only:
            say(f"scheduler: {timed_campaigns:,} campaigns due within the same {timed_window} s")
            scheduler_figure = await scheduler.measure(
                env.settings,
                env.services,
                lambda: processes(env),
                count=timed_campaigns,
                window=float(timed_window),
            )
            figures["scheduler"] = scheduler_figure
            say(
                f"  {scheduler_figure.measured}; limit {scheduler_figure.limit}; ratio "
                f"{scheduler_figure.ratio}; goal {scheduler_figure.goal}: "
                + ("met" if scheduler_figure.met else "NOT met")
            )

        if "anti_entropy" in only:
            say(f"anti-entropy: a pass over {ae_campaigns:,} campaigns for {ae_seconds} s")
            ae_figure = await anti_entropy.measure(env.settings, campaigns=ae_campaigns, seconds=ae_seconds)
            figures["anti_entropy"] = ae_figure
            say(f"  {ae_figure.measured} vs {ae_figure.limit}")

        if {"read", "freshness", "cpu", "sustained", "memory"} & set(only):
            say("whole pipeline: relay, projectors, query API, workers; waiting until it caught up")
            env.services.start(["query-api", "relay", "projectors", "workers"])
            env.services.wait_ready()
            await _pipeline_idle(env.settings)
        if "read" in only:
            async with httpx.AsyncClient(timeout=30) as client:
                auth = {"Authorization": f"Bearer {token}"}
                created = await client.post(
                    f"{env.services.command_url}/campaigns", json=commands.CAMPAIGN, headers=auth
                )
                created.raise_for_status()
                campaign = created.json()
                seen = await client.get(
                    f"{env.services.query_url}/campaigns/{campaign['id']}",
                    params={"min_version": campaign["version"]},
                    headers=auth,
                )
                seen.raise_for_status()
            cluster_url = None
            if cluster is not None:
                cluster_url = await _query_api_on_cluster(env, cluster, campaign, token)
            say("read path: wrk against the query API and the bare ASGI app")
            read_figures = await asyncio.to_thread(
                read_path.measure,
                env.services.query_url,
                campaign["id"],
                token,
                workers=env.settings.api_workers,
                connections=connections,
                seconds=seconds,
                rounds=rounds,
                cluster_url=cluster_url,
            )
            figures["read"] = read_figures[0]
            figures.update((f.key, f) for f in read_figures[1:])
            for figure in read_figures:
                say(f"  {figure.measured} vs {figure.limit}")
            say(f"list query: {LIST_CAMPAIGNS} campaigns of the bench's user, {LIST_ACTIVE} activated")
            await _list_data(env.services.command_url, env.services.query_url, token)
            list_figure = await asyncio.to_thread(
                read_path.measure_list,
                env.services.query_url,
                token,
                campaigns=LIST_CAMPAIGNS,
                active=LIST_ACTIVE,
                workers=env.settings.api_workers,
                connections=connections,
                seconds=seconds,
                rounds=rounds,
            )
            figures["read_list"] = list_figure
            say(f"  {list_figure.measured} vs {list_figure.limit}")

        if {"freshness", "cpu"} & set(only):
            runs = [(fresh_rate, fresh_seconds, "freshness")]
            if "freshness" in only:
                runs.insert(0, (low_rate, low_seconds, "freshness_low_rate"))
            for rate, duration, key in runs:
                if rate <= 0 or duration <= 0:
                    continue
                await _pipeline_idle(env.settings)
                say(f"freshness: {rate} commands/s for {duration} s, open loop")
                window = CpuWindow(processes(env))
                profile = os.environ.get("BENCH_PROFILE", "") if key == "freshness" else ""
                pids = {name: proc.pid for name, proc in env.services.processes.items()}
                recorders = profiles.start(pids, duration, Path(profile)) if profile else []
                trace: list[stages.CommandTimes] | None = None
                async with contextlib.AsyncExitStack() as tapping:
                    tap = None
                    if os.environ.get("BENCH_STAGES") == "1":
                        trace = []
                        tap = await tapping.enter_async_context(stages.StageTap(env.settings))
                    fresh = await freshness.run(
                        env.services.command_url,
                        env.services.query_url,
                        token,
                        rate=rate,
                        seconds=duration,
                        trace=trace,
                    )
                    cores = window.shares(digits=4)
                    await asyncio.sleep(0.5 if tap else 0)  # the last notices and records
                stage_report = tap.report(trace) if tap is not None and trace is not None else None
                if stage_report is not None:
                    for line in stages.lines(stage_report):
                        say(line)
                if recorders:
                    await asyncio.to_thread(profiles.finish, recorders)
                    for name in pids:
                        if (Path(profile) / f"{name}.txt").exists():
                            console.print(profiles.summarise(Path(profile) / f"{name}.txt", top=12))
                if key == "freshness" and "cpu" in only:
                    figures["cpu"] = cpu_cost.figure(cores, rate, duration, fresh.accepted, window.elapsed)
                    say(f"  CPU per command: {figures['cpu'].measured}; {figures['cpu'].limit}")
                    # The same run's freshness beside it (a CPU figure is only worth its rate).
                    same_run = freshness.figure(fresh, rate, duration, cores, key).data
                    figures["cpu"].data["freshness"] = {
                        name: same_run[name]
                        for name in (
                            "p50_ms",
                            "p99_ms",
                            "max_ms",
                            "accepted",
                            "command_failures",
                            "reads_not_fresh",
                            "achieved_commands_per_second",
                        )
                    }
                    figures["cpu"].data["load_average"] = load_average()
                    # What else the machine did meanwhile: CPU no measured process used competes
                    # for the two cores and makes every process's own work dearer.
                    figures["cpu"].data["machine"] = window.machine
                    say(
                        f"  same run: freshness p50 {same_run['p50_ms']} ms, p99 {same_run['p99_ms']} ms; "
                        f"{same_run['achieved_commands_per_second']} commands/s accepted of {rate}, "
                        f"{same_run['command_failures']} failed, {same_run['reads_not_fresh']} reads not "
                        f"fresh; load average {load_average()}; machine busy "
                        f"{window.machine['busy_cores']} cores (steal {window.machine['steal_cores']}, "
                        f"{window.machine['unaccounted_cores']} by no measured process)"
                    )
                if "freshness" in only:
                    figures[key] = freshness.figure(fresh, rate, duration, cores, key)
                    if stage_report is not None:
                        figures[key].data["stages"] = stage_report
                    say(f"  {figures[key].measured}; {figures[key].limit}")
                    data = figures[key].data
                    say(
                        f"  command latency p50 {data['command_latency_p50_ms']} ms, p99 "
                        f"{data['command_latency_p99_ms']} ms; load average {load_average()}"
                    )

        if "sustained" in only:
            raw_concurrency = knob("BENCH_CONCURRENCY", 16)
            raw = await raw_transactions(env.settings, raw_concurrency * 100, raw_concurrency, user_id)
            say(f"sustained rate: raw transaction loop {raw.per_second:,.0f} txn/s; stepping up")
            steps: list[rate_steps.Step] = []
            rate: int | None = rate_start
            while rate is not None:
                left = await rate_steps.wait_drained(env.settings)
                if left:
                    say(f"  backlog of {left} still there before the {rate}/s step; stopping")
                    break
                step = await rate_steps.one_step(
                    env.settings,
                    env.services.command_url,
                    env.services.query_url,
                    token,
                    rate,
                    rate_seconds,
                    lambda: processes(env),
                )
                steps.append(step)
                say(
                    f"  {rate}/s: {step.achieved_per_second}/s accepted, freshness p99 "
                    f"{step.freshness_p99_ms} ms, backlog at end {step.backlog_samples[-1]}"
                    + ("" if step.held else f" — does not hold: {step.why_not}")
                )
                rate = rate_steps.next_rate(steps, rate_start, rate_step, rate_max)
            figures["sustained"] = rate_steps.figure(steps, raw.per_second, raw_concurrency)

        if "memory" in only:
            await _pipeline_idle(env.settings)
            await asyncio.sleep(2)
            memory = memory_figure(env)
            figures["memory"] = memory
            say(f"  memory: {memory.measured}")
    finally:
        say("cleaning up (processes, topics, database, keys)")
        try:
            await env.cleanup()
        finally:
            if cluster is not None:
                await cluster.stop(env.settings)
    context["machine"]["load_average_at_end"] = load_average()
    context["seconds"] = round(time.monotonic() - started, 1)
    order = [
        "footprint",
        "cpu",
        "sustained",
        "read",
        "read_list",
        "read_cluster",
        "projector",
        "projector_instances",
        "projector_cluster",
        "cluster_spread",
        "commands",
        "scheduler",
        "anti_entropy",
        "freshness_low_rate",
        "freshness",
        "replay",
        "replay_cluster",
        *scale.FIGURE_KEYS,
        "relay_transactions",
        "memory",
    ]
    ordered = [figures[key] for key in order if key in figures]
    whole = only == FIGURE_KEYS
    path = write(ordered, context, None if whole else RESULTS / f"only-{'-'.join(only)}.json")
    picture = chart.draw(ordered, path.with_suffix(".png"))
    show(
        ordered,
        f"Campaigns CQRS bench — {context['machine']['cpu_model']}, {context['machine']['cores']} cores, "
        f"load {context['machine']['load_average_at_start']} → {context['machine']['load_average_at_end']}",
        console,
    )
    console.print(f"written {path.relative_to(path.parents[2])} in {context['seconds']:.0f} s")
    if picture is not None:
        console.print(f"chart {picture.relative_to(picture.parents[2])}")
    # A missed goal is a result, shown in the table; only a run that could not finish fails.
    return 0


async def _cancelled_on_sigterm() -> int:
    """The suite, cancelled by SIGTERM (`timeout`, `kill`) as by Ctrl-C, so that its `finally`
    stops the services it started: killed outright, it left them running (an idle projectors
    process walking the database for anti-entropy), and they weighed on the next runs' figures."""
    suite = asyncio.current_task()
    assert suite is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, suite.cancel)
    try:
        return await run_suite()
    except asyncio.CancelledError:
        print("bench terminated; its services were stopped", file=sys.stderr)
        return 128 + signal.SIGTERM


def main() -> None:
    # The whole run under the machine's bench lock: other benches on the shared cores wait.
    with bench_lock():
        code = asyncio.run(_cancelled_on_sigterm())
    sys.exit(code)
