"""Costs as data grows (issue 21, item 4): the same figures at 10,000 and 100,000 campaigns (and
1,000,000 with BENCH_SCALE=1), each size on top of the last, on keys and topics of their own.

Per size, the campaigns are produced straight into the scale run's own campaigns topic (two
events each, created then activated: bench/event_load.py) while no projector runs; then:

- projector: the real process (`campaigns serve projectors`) consumes the new events on top of
  the earlier sizes' read models; events/s from its first commit past the earlier end to the
  end of the topic (the campaigns group's committed offsets). Beside it, where the time of an
  event goes as the data grows: the projector's CPU per event (its process tree, /proc), the
  Redis server's CPU per event (INFO cpu) and its microseconds per event by command (INFO
  commandstats deltas: the shared server's other clients are idle then). With
  BENCH_PROFILE=<dir>, py-spy records the projector of each size (`<dir>/scale-<size>.txt`);
- bytes per campaign: `MEMORY USAGE key SAMPLES 0` summed over every key under the run's prefix
  (SCAN of `keyspace.prefix_pattern`: whatever the layout inside), divided by the campaigns;
  beside it the campaign's JSON document as `GET /campaigns/{id}` returns it (mean of a sample),
  and the server's `INFO memory` used_memory delta since the run began (shared server: noisy);
- list and by-id p99: wrk against the query API on the run's keys, an admin token (the list is
  over every campaign), `GET /campaigns?status=active&sort=-created_at&limit=20` and
  `GET /campaigns/{id}` over a random sample of ids, in `rounds` alternating rounds
  (BENCH_SCALE_ROUNDS, `ROUNDS`), each figure keeping its round of median p99 (`median_round`). The query
  API keeps a list page 1 s per worker (`CAMPAIGNS_LIST_CACHE_BYTES`), so the figure is mostly
  cache hits plus one read from Redis a second a connection; beside it, the same list window
  against a second query API with the page cache off (`list_uncached_*`: every request reads its
  page from Redis), and the server's EVALSHA calls during each list window (`list_index_calls_*`:
  the list script runs once per page read from Redis; the shared server's other clients count
  too), which says whether the two sizes were measured with the page cache in the same state;
- replay: `campaigns replay rebuild campaigns --source kafka` in a process of its own over the
  whole topic (bench/replay_process.py): its time, events/s and peak RSS (its own VmHWM, plus
  that of each other process of a split full pass).

Goals: bytes per campaign ≤ 3 times the JSON document; p99 and events/s within 20% from the
smallest size to the largest; the replay's peak RSS within 20% too (memory that does not grow
with the log).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
from aiokafka.admin import AIOKafkaAdminClient

from bench import profiles, replay_process
from bench.environment import BenchEnvironment, delete_keys, end_offsets, wait_for_group, wait_for_leaders
from bench.event_load import campaign_id, produce
from bench.machine import load_average
from bench.memory import CpuWindow, children_cpu_seconds, cpu_seconds, tree_pids
from bench.report import Figure
from bench.wrk import WrkResult, run_wrk
from events import Topics
from readmodels.generations import live_generations
from readmodels.groups import projection_group
from readmodels.keyspace import generation_base, prefix_pattern
from service_runtime.redis_client import connect_redis
from service_runtime.settings import Settings
from service_runtime.tokens import issue_access_token
from tests.support.services import RunningServices
from tests.support.stack import create_topics, free_port

LIFE = ("CampaignCreated", "CampaignActivated")
SIZES = (10_000, 100_000)
LARGE = 1_000_000
BYTES_GOAL = 3.0  # times the JSON document
FLAT = 0.2  # within 20% from the smallest size to the largest
# Rounds of each latency window a size, the round of median p99 kept (BENCH_SCALE_ROUNDS).
ROUNDS = 5
SAMPLED_IDS = 5000  # the by-id reads spread over these (the query API caches a read 1 s)
FIGURE_KEYS = ("scale_bytes", "scale_list_p99", "scale_by_id_p99", "scale_projector", "scale_replay_rss")
LIST_PATH = "/campaigns?status=active&sort=-created_at&limit=20"

say_fn = Callable[[str], None]


@dataclass
class SizeRow:
    campaigns: int
    events: int
    produce_seconds: float
    projector_events_per_second: float
    projector_events: int
    projector_cpu_ms_per_event: float  # the projector's process tree, start-up included
    redis_cpu_ms_per_event: float  # the server's used_cpu_user + used_cpu_sys delta
    # INFO commandstats deltas over the projector's run, per event: the five costliest commands
    redis_usec_per_event: dict[str, float]
    redis_bytes: int
    redis_keys: int
    bytes_per_campaign: float
    bytes_per_campaign_by_projection: dict[str, float]
    used_memory_delta_per_campaign: float
    json_document_bytes: float
    list_p99_ms: float  # the median round's (by p99) of `list_p99_rounds_ms`
    list_p50_ms: float
    list_requests_per_second: float
    list_index_calls_per_second: float
    list_uncached_p99_ms: float
    list_uncached_p50_ms: float
    list_uncached_requests_per_second: float
    list_uncached_index_calls_per_second: float
    by_id_p99_ms: float  # the median round's, as the list's
    by_id_p50_ms: float
    by_id_requests_per_second: float
    redis_forks_during_reads: int
    replay_seconds: float
    replay_events_per_second: float
    replay_peak_rss_mib: float
    load_average: list[float]
    # The server's encoding thresholds (CONFIG GET *-max-listpack-*): the bytes depend on them.
    redis_listpack_settings: dict[str, str]
    # The cores each process used over the list and by-id rounds (those that used any; "wrk":
    # the load generator), and the machine's (busy, steal, and busy by no process measured).
    read_cpu_cores: dict[str, float] = field(default_factory=dict)
    read_machine_cores: dict[str, float] = field(default_factory=dict)
    # Every round's p99, in the order run (list and by-id rounds alternate).
    list_p99_rounds_ms: list[float] = field(default_factory=list)
    by_id_p99_rounds_ms: list[float] = field(default_factory=list)
    # Each replay process's peak (this one, then the split full pass's others): summed above.
    replay_process_peaks_mib: list[float] = field(default_factory=list)


def scale_settings(main: Settings) -> Settings:
    """The scale run's own topics, keys and listeners (its query API and projector beside the
    main run's)."""
    return main.model_copy(
        update={
            "topic_prefix": main.topic_prefix.rstrip(".") + "S.",
            "redis_prefix": main.redis_prefix + "S",
            "projectors_metrics_port": free_port(),
            "query_api_port": free_port(),
            "query_api_metrics_port": free_port(),
            "access_token_ttl_seconds": 3600,
        }
    )


async def redis_bytes(settings: Settings) -> tuple[int, int, dict[str, int]]:
    """(bytes, keys, bytes per projection): MEMORY USAGE (SAMPLES 0: every element counted) summed
    over the prefix's keys, and split by the projections' live generations (the rest: "other")."""
    redis = connect_redis(settings)
    total = keys = 0
    per: dict[str, int] = {}
    try:
        live = await live_generations(redis, settings.redis_prefix)
        bases = {name: (generation_base(settings.redis_prefix, g) + ":").encode() for name, g in live.items()}

        async def add(names: list[bytes]) -> int:
            pipe = redis.pipeline(transaction=False)
            for name in names:
                pipe.memory_usage(name, samples=0)
            sizes = [size or 0 for size in await pipe.execute()]
            for name, size in zip(names, sizes, strict=True):
                owner = next((p for p, base in bases.items() if name.startswith(base)), "other")
                per[owner] = per.get(owner, 0) + size
            return sum(sizes)

        batch: list[bytes] = []
        async for key in redis.scan_iter(match=prefix_pattern(settings.redis_prefix), count=5000):
            batch.append(key)
            if len(batch) >= 2000:
                total += await add(batch)
                keys += len(batch)
                batch = []
        if batch:
            total += await add(batch)
            keys += len(batch)
    finally:
        await redis.aclose()
    return total, keys, per


async def _persistence(settings: Settings) -> dict[str, int]:
    redis = connect_redis(settings)
    try:
        info = await redis.info("persistence")
        stats = await redis.info("stats")
        return {
            "saving": int(info.get("rdb_bgsave_in_progress", 0))
            or int(info.get("aof_rewrite_in_progress", 0)),
            "changes": int(info.get("rdb_changes_since_last_save", 0)),
            "forks": int(stats.get("total_forks", 0)),
        }
    finally:
        await redis.aclose()


async def snapshot_out_of_the_way(settings: Settings, say: say_fn, limit_seconds: float = 120) -> None:
    """Before a latency window: let a background save (RDB or AOF rewrite) that is running end,
    and take the one the server's save points would start soon, now, and wait for it. A save
    forks Redis (the fork blocks it a few ms per 100 MB) and its child takes a core for seconds
    as the data grows: on this 2-core machine a save inside the window was what made the list
    p99 grow with the data (the run's number of forks during each window is kept in the JSON).
    The shared server's snapshots still happen, only not in the windows."""
    redis = connect_redis(settings)
    try:
        saves = await redis.config_get("save")
        deadline = time.monotonic() + limit_seconds
        state = await _persistence(settings)
        if not state["saving"] and state["changes"] and str(saves.get("save", "")).strip():
            try:
                await redis.bgsave()
            except Exception as exc:  # another save started meanwhile: waited for below
                say(f"  BGSAVE not started ({exc})")
        while time.monotonic() < deadline:
            if not (await _persistence(settings))["saving"]:
                break
            await asyncio.sleep(0.2)
    finally:
        await redis.aclose()


async def script_calls(settings: Settings) -> int:
    """The server's EVALSHA calls so far (INFO commandstats; every client's)."""
    redis = connect_redis(settings)
    try:
        stats = await redis.info("commandstats")
    finally:
        await redis.aclose()
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def listpack_settings(settings: Settings) -> dict[str, str]:
    """The server's `*-max-listpack-*` settings."""
    redis = connect_redis(settings)
    try:
        found = await redis.config_get("*-max-listpack-*")
    finally:
        await redis.aclose()
    return {_text(k): _text(v) for k, v in sorted(found.items())}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def used_memory(settings: Settings) -> int:
    redis = connect_redis(settings)
    try:
        info = await redis.info("memory")
        return int(info["used_memory"])
    finally:
        await redis.aclose()


@dataclass(frozen=True)
class ProjectorRun:
    events_per_second: float
    events: int
    cpu_ms_per_event: float
    redis_cpu_ms_per_event: float
    redis_usec_per_event: dict[str, float]


async def _redis_costs(settings: Settings) -> tuple[float, dict[str, int]]:
    """The server's CPU seconds so far and each command's microseconds so far."""
    redis = connect_redis(settings)
    try:
        cpu = await redis.info("cpu")
        commands = await redis.info("commandstats")
    finally:
        await redis.aclose()
    used = float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
    return used, {name.removeprefix("cmdstat_"): int(stat["usec"]) for name, stat in commands.items()}


async def _projector_rate(
    env: BenchEnvironment, settings: Settings, topic: str, before: int, total: int
) -> ProjectorRun:
    """Start the projector process, wait until both groups reached `total`, stop it; events/s of
    the campaigns group from its first commit past `before`, and the CPU it and Redis spent."""
    services = env.other_services(settings, f"scale-projectors-{total}")
    redis_cpu0, usec0 = await _redis_costs(settings)
    services.start(["projectors"])
    root = services.processes["projectors"].pid
    profile = os.environ.get("BENCH_PROFILE", "")
    recorders = profiles.start({f"scale-{total // len(LIFE)}": root}, 3600, Path(profile)) if profile else []
    try:
        samples = await wait_for_group(
            settings, projection_group(settings, "campaigns"), topic, total, limit_seconds=1800
        )
        await wait_for_group(settings, projection_group(settings, "stats"), topic, total, limit_seconds=1800)
        cpu = sum(cpu_seconds(p) for p in tree_pids(root))
        redis_cpu1, usec1 = await _redis_costs(settings)
    finally:
        await asyncio.to_thread(profiles.stop, recorders)
        await asyncio.to_thread(services.stop_all)
    first_t, first_done = next((t, done) for t, done in samples if done > before)
    end_t = samples[-1][0]
    counted = total - first_done
    consumed = total - before  # what this run's process consumed (both groups, start-up included)
    spent = {name: usec - usec0.get(name, 0) for name, usec in usec1.items()}
    costliest = sorted(spent.items(), key=lambda item: -item[1])[:5]
    return ProjectorRun(
        events_per_second=counted / (end_t - first_t) if end_t > first_t else 0.0,
        events=counted,
        cpu_ms_per_event=round(cpu / consumed * 1000, 4),
        redis_cpu_ms_per_event=round((redis_cpu1 - redis_cpu0) / consumed * 1000, 4),
        redis_usec_per_event={name: round(usec / consumed, 2) for name, usec in costliest if usec > 0},
    )


def _wait_answering(services: RunningServices, timeout: float = 120) -> None:
    """Until the query API answers HTTP at all: its readiness (200) needs a projector that
    reported recently, and the projector runs only while it has events to consume."""
    deadline = time.monotonic() + timeout
    while True:
        process = services.processes["query-api"]
        if process.poll() is not None:
            tail = services.log_tail("query-api")
            raise RuntimeError(f"the query API exited with {process.returncode}:\n{tail}")
        try:
            httpx.get(f"{services.query_url}/health/ready", timeout=2)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the query API did not answer in {timeout:.0f} s") from None
            time.sleep(0.3)


def _document_bytes(query_url: str, token: str, ids: list[str]) -> float:
    sizes = []
    with httpx.Client(base_url=query_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        for campaign in ids:
            answer = client.get(f"/campaigns/{campaign}")
            answer.raise_for_status()
            sizes.append(len(answer.content))
        listed = client.get(LIST_PATH)
        listed.raise_for_status()
        if not listed.json().get("items"):
            raise RuntimeError(f"the list query answered no campaigns: {listed.text[:300]}")
    return sum(sizes) / len(sizes)


def _checked(name: str, result: WrkResult) -> WrkResult:
    if result.non_2xx or result.errors:
        raise RuntimeError(f"the query API answered errors under the {name} load: {result}")
    return result


def _busiest(cores: dict[str, float], count: int = 6) -> str:
    ranked = sorted(cores.items(), key=lambda item: -item[1])[:count]
    return ", ".join(f"{name} {share:.2f}" for name, share in ranked)


def _p99s(results: list[WrkResult]) -> str:
    return ", ".join(f"{r.p99_ms:.1f}" for r in results)


def median_round(results: list[WrkResult], calls: list[float]) -> tuple[WrkResult, float]:
    """The round whose p99 is the median of the rounds' (the lower middle of an even count),
    with its script calls a second: a 5 s window's p99 is ~1% of its requests, queued in a query
    API worker the window saturates (0.98 of a core at every size, `read_cpu_cores`), and one
    slower stretch of its core moved a lone window's p99 by a millisecond at any size (one run of
    single windows: by-id p99 3.1, 2.2, 2.1 ms at 10,000, 100,000, 1,000,000 campaigns, list p99
    1.6, 2.1, 3.2 ms, the list's p50 0.58 ms at all three)."""
    order = sorted(range(len(results)), key=lambda n: results[n].p99_ms)
    middle = order[(len(order) - 1) // 2]
    return results[middle], calls[middle]


async def _list_window(
    settings: Settings, query_url: str, token: str, *, connections: int, seconds: int, warm: bool = True
) -> tuple[WrkResult, float]:
    """The list window (after 1 s of warm-up if `warm`); and the server's EVALSHA calls a second
    meanwhile."""
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{query_url}{LIST_PATH}"
    if warm:
        await asyncio.to_thread(run_wrk, url, connections=connections, seconds=1, headers=headers)
    calls = await script_calls(settings)
    started = time.monotonic()
    listed = await asyncio.to_thread(run_wrk, url, connections=connections, seconds=seconds, headers=headers)
    per_second = (await script_calls(settings) - calls) / (time.monotonic() - started)
    return _checked("list", listed), per_second


def _by_id_window(
    query_url: str, token: str, ids: list[str], *, connections: int, seconds: int, warm: bool = True
) -> WrkResult:
    headers = {"Authorization": f"Bearer {token}"}
    paths = [f"/campaigns/{c}" for c in ids]
    if warm:
        run_wrk(f"{query_url}/campaigns/x", connections=connections, seconds=1, headers=headers, paths=paths)
    by_id = run_wrk(
        f"{query_url}/campaigns/x", connections=connections, seconds=seconds, headers=headers, paths=paths
    )
    return _checked("by id", by_id)


async def _uncached_list_window(
    env: BenchEnvironment, settings: Settings, token: str, *, connections: int, seconds: int
) -> tuple[WrkResult, float]:
    """The list window against a query API of its own with the page cache off (every request
    reads its page from Redis), started for the window only (its announcements' work stays out
    of the projector's figure)."""
    uncached = settings.model_copy(
        update={"list_cache_bytes": 0, "query_api_port": free_port(), "query_api_metrics_port": free_port()}
    )
    services = env.other_services(uncached, f"scale-query-uncached-{time.monotonic_ns()}")
    services.start(["query-api"])
    try:
        await asyncio.to_thread(_wait_answering, services)
        return await _list_window(
            settings, services.query_url, token, connections=connections, seconds=seconds
        )
    finally:
        await asyncio.to_thread(services.stop_all)


async def measure(
    env: BenchEnvironment,
    sizes: tuple[int, ...],
    *,
    connections: int,
    seconds: int,
    say: say_fn,
    rounds: int = ROUNDS,
) -> tuple[list[Figure], list[SizeRow]]:
    settings = scale_settings(env.settings)
    topics = Topics(settings.topic_prefix)
    await create_topics(settings)
    await wait_for_leaders(settings, topics.all())
    topic = topics.campaigns
    token = issue_access_token(settings, "bench-scale-admin", ["user", "admin"])
    queries = env.other_services(settings, "scale-query")
    queries.start(["query-api"])
    rows: list[SizeRow] = []
    try:
        await asyncio.to_thread(_wait_answering, queries)
        memory_at_start = await used_memory(settings)
        done = 0
        for size in sorted(sizes):
            grow = size - done
            say(
                f"scale: {size:,} campaigns ({grow * len(LIFE):,} more events into {topic}), "
                f"load {load_average()}"
            )
            produced_in = await produce(
                settings.kafka_bootstrap, topic, grow * len(LIFE), life=LIFE, first=done
            )
            before = done * len(LIFE)
            total = sum((await end_offsets(settings, topic)).values())
            projected = await _projector_rate(env, settings, topic, before, total)
            by_command = ", ".join(f"{name} {us:.1f}" for name, us in projected.redis_usec_per_event.items())
            say(
                f"  produced in {produced_in:.1f} s; projector {projected.events_per_second:,.0f} events/s, "
                f"{projected.cpu_ms_per_event:.3f} ms CPU/event; Redis "
                f"{projected.redis_cpu_ms_per_event:.3f} ms CPU/event (µs/event: {by_command})"
            )
            used, keys, per_projection = await redis_bytes(settings)
            delta = await used_memory(settings) - memory_at_start
            sample = [campaign_id(n) for n in random.Random(size).sample(range(size), min(SAMPLED_IDS, size))]
            document = await asyncio.to_thread(_document_bytes, queries.query_url, token, sample[:100])
            split = ", ".join(f"{name} {b / size:,.0f}" for name, b in sorted(per_projection.items()))
            listpacks = await listpack_settings(settings)
            say(
                f"  {used / size:,.0f} B/campaign ({keys:,} keys; {split}); document {document:,.0f} B; "
                f"server {listpacks}"
            )
            await snapshot_out_of_the_way(settings, say)
            forks_before = (await _persistence(settings))["forks"]
            list_rounds, list_calls_rounds, by_id_rounds = [], [], []
            # What used the cores while the rounds ran: the query API's, and whatever shared them.
            read_window = CpuWindow(env.every_process())
            wrk_cpu = children_cpu_seconds()
            for round_ in range(rounds):
                # Alternating, so what slows the machine for a while weighs on both alike.
                listed_round, calls_round = await _list_window(
                    settings,
                    queries.query_url,
                    token,
                    connections=connections,
                    seconds=seconds,
                    warm=round_ == 0,
                )
                list_rounds.append(listed_round)
                list_calls_rounds.append(calls_round)
                by_id_rounds.append(
                    await asyncio.to_thread(
                        _by_id_window,
                        queries.query_url,
                        token,
                        sample,
                        connections=connections,
                        seconds=seconds,
                        warm=round_ == 0,
                    )
                )
            read_cpu = read_window.shares()
            read_cpu["wrk"] = round((children_cpu_seconds() - wrk_cpu) / read_window.elapsed, 2)
            read_machine = dict(read_window.machine)
            read_machine["unaccounted_cores"] = round(
                max(0.0, read_machine.get("unaccounted_cores", 0.0) - read_cpu["wrk"]), 3
            )
            listed, list_calls = median_round(list_rounds, list_calls_rounds)
            by_id, _ = median_round(by_id_rounds, [0.0] * len(by_id_rounds))
            uncached, uncached_calls = await _uncached_list_window(
                env, settings, token, connections=connections, seconds=seconds
            )
            forks_during_reads = (await _persistence(settings))["forks"] - forks_before
            say(
                f"  list p99 {listed.p99_ms:.1f} ms (rounds {_p99s(list_rounds)}; {list_calls:,.0f} index "
                f"calls/s), by id p99 {by_id.p99_ms:.1f} ms (rounds {_p99s(by_id_rounds)}), list with the "
                f"page cache off p99 {uncached.p99_ms:.1f} ms ({uncached_calls:,.0f} index calls/s; "
                f"{forks_during_reads} Redis forks meanwhile); replay"
            )
            say(f"  during the rounds (cores): {_busiest(read_cpu)}; machine {read_machine}")
            replayed = await asyncio.to_thread(replay_process.run, settings)
            say(
                f"  replay {replayed.events:,} events in {replayed.seconds:.1f} s "
                f"({replayed.per_second:,.0f}/s), peak RSS {replayed.peak_rss_mib:.0f} MiB "
                f"(by process: {', '.join(f'{p:.0f}' for p in replayed.process_peaks_mib)})"
            )
            rows.append(
                SizeRow(
                    campaigns=size,
                    events=total,
                    produce_seconds=round(produced_in, 2),
                    projector_events_per_second=round(projected.events_per_second, 1),
                    projector_events=projected.events,
                    projector_cpu_ms_per_event=projected.cpu_ms_per_event,
                    redis_cpu_ms_per_event=projected.redis_cpu_ms_per_event,
                    redis_usec_per_event=projected.redis_usec_per_event,
                    redis_bytes=used,
                    redis_keys=keys,
                    bytes_per_campaign=round(used / size, 1),
                    bytes_per_campaign_by_projection={
                        name: round(b / size, 1) for name, b in sorted(per_projection.items())
                    },
                    used_memory_delta_per_campaign=round(delta / size, 1),
                    json_document_bytes=round(document, 1),
                    list_p99_ms=listed.p99_ms,
                    list_p99_rounds_ms=[r.p99_ms for r in list_rounds],
                    list_p50_ms=listed.p50_ms,
                    list_requests_per_second=listed.requests_per_second,
                    list_index_calls_per_second=round(list_calls, 1),
                    list_uncached_p99_ms=uncached.p99_ms,
                    list_uncached_p50_ms=uncached.p50_ms,
                    list_uncached_requests_per_second=uncached.requests_per_second,
                    list_uncached_index_calls_per_second=round(uncached_calls, 1),
                    by_id_p99_ms=by_id.p99_ms,
                    by_id_p99_rounds_ms=[r.p99_ms for r in by_id_rounds],
                    by_id_p50_ms=by_id.p50_ms,
                    by_id_requests_per_second=by_id.requests_per_second,
                    redis_forks_during_reads=forks_during_reads,
                    read_cpu_cores={name: share for name, share in read_cpu.items() if share > 0},
                    read_machine_cores=read_machine,
                    replay_seconds=round(replayed.seconds, 2),
                    replay_events_per_second=round(replayed.per_second, 1),
                    replay_peak_rss_mib=round(replayed.peak_rss_mib, 1),
                    load_average=load_average(),
                    redis_listpack_settings=listpacks,
                    replay_process_peaks_mib=[round(p, 1) for p in replayed.process_peaks_mib],
                )
            )
            done = size
    finally:
        await asyncio.to_thread(queries.stop_all)
        await _drop(settings)
    return figures(rows, connections, seconds, rounds), rows


async def _drop(settings: Settings) -> None:
    """The scale run's keys and topics, at once: the millions of events must not wait for the end."""
    await delete_keys(settings, settings.redis_prefix)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


def _sizes(rows: list[SizeRow]) -> str:
    return " → ".join(f"{r.campaigns:,}" for r in rows)


def figures(rows: list[SizeRow], connections: int, seconds: int, rounds: int = ROUNDS) -> list[Figure]:
    small, large = rows[0], rows[-1]
    per_size = [asdict(r) for r in rows]
    bytes_ratio = large.bytes_per_campaign / large.json_document_bytes
    span = f"{small.campaigns:,} → {large.campaigns:,} campaigns"

    def flat(
        key: str,
        title: str,
        field: str,
        unit: str,
        lower_is_better: bool,
        how: str,
        digits: int = 1,
        also: tuple[str, ...] = (),
    ) -> Figure:
        first, last = getattr(small, field), getattr(large, field)
        ratio = last / first if first else 0.0
        met = ratio <= 1 + FLAT if lower_is_better else ratio >= 1 - FLAT
        return Figure(
            key=key,
            title=f"{title} ({span})",
            measured=f"{last:,.{digits}f} {unit} at {large.campaigns:,}",
            limit=f"{first:,.{digits}f} {unit} at {small.campaigns:,}",
            ratio=round(ratio, 3),
            goal=f"≤ {1 + FLAT:.1f}" if lower_is_better else f"≥ {1 - FLAT:.1f}",
            met=met,
            how=how,
            data={
                "per_size": [{k: r[k] for k in ("campaigns", field, *also, "load_average")} for r in per_size]
            },
        )

    wrk_how = (
        f"wrk (1 thread, pinned to the last core), {connections} connections, {rounds} rounds of "
        f"{seconds} s each (list and by-id alternating, 1 s of warm-up before the first), the round "
        "with the median p99 kept (every round's p99 in per_size), against the query API (uvicorn, the "
        "bench's worker count) on the scale run's keys, an admin token (the list spans every campaign)"
    )
    return [
        Figure(
            key="scale_bytes",
            title=f"Redis bytes per campaign at {large.campaigns:,} (sizes {_sizes(rows)})",
            measured=f"{large.bytes_per_campaign:,.0f} B/campaign",
            limit=f"JSON document {large.json_document_bytes:,.0f} B",
            ratio=round(bytes_ratio, 2),
            goal=f"≤ {BYTES_GOAL:g}",
            met=bytes_ratio <= BYTES_GOAL,
            how=(
                "MEMORY USAGE key SAMPLES 0 summed over every key under the scale run's prefix (SCAN "
                "of keyspace.prefix_pattern: all three projections' read models, the indexes "
                "included), divided by the campaigns; the JSON document: the mean body of GET "
                "/campaigns/{id} over 100 sampled campaigns; INFO memory used_memory deltas in "
                "per_size (a shared server: other clients move them)"
            ),
            data={"per_size": per_size},
        ),
        flat(
            "scale_list_p99",
            "List query p99, GET /campaigns?status=active&sort=-created_at&limit=20",
            "list_p99_ms",
            "ms",
            True,
            wrk_how + "; the same list window against a query API with the page cache off and the "
            "server's EVALSHA calls a second during each window (one a page read from Redis) in per_size",
            also=(
                "list_p99_rounds_ms",
                "list_p50_ms",
                "list_requests_per_second",
                "list_index_calls_per_second",
                "list_uncached_p99_ms",
                "list_uncached_p50_ms",
                "list_uncached_requests_per_second",
                "list_uncached_index_calls_per_second",
                "redis_forks_during_reads",
                "read_cpu_cores",
                "read_machine_cores",
            ),
        ),
        flat(
            "scale_by_id_p99",
            "By-id p99, GET /campaigns/{id}",
            "by_id_p99_ms",
            "ms",
            True,
            wrk_how + f"; each request one of {SAMPLED_IDS} ids sampled from the size",
            also=(
                "by_id_p99_rounds_ms",
                "by_id_p50_ms",
                "by_id_requests_per_second",
                "redis_forks_during_reads",
                "read_cpu_cores",
                "read_machine_cores",
            ),
        ),
        flat(
            "scale_projector",
            "Projector events/s as the read models grow",
            "projector_events_per_second",
            "events/s",
            False,
            (
                "the real projector process over the new events of each size (two per campaign: "
                "created, activated), on top of the earlier sizes' read models; from the campaigns "
                "group's first commit past the earlier end to the end of the topic; beside it in "
                "per_size what an event cost as the data grew: the projector's CPU (its process tree), "
                "the Redis server's CPU (INFO cpu) and its µs by command (INFO commandstats; a "
                "script's own calls count both under evalsha and under their command)"
            ),
            digits=0,
            also=("projector_cpu_ms_per_event", "redis_cpu_ms_per_event", "redis_usec_per_event"),
        ),
        flat(
            "scale_replay_rss",
            "Replay peak RSS over the whole log",
            "replay_peak_rss_mib",
            "MiB",
            True,
            (
                "`campaigns replay rebuild campaigns --source kafka` (bench/replay_process.py, the "
                "tool's composition root) in a process of its own over every event of the topic; peak "
                "RSS its own VmHWM (/proc/self/status, read as it ends), imports included, plus the "
                "VmHWM each other process of a split full pass reported (CAMPAIGNS_REPLAY_PROCESSES; "
                "each process's in per_size); its time and events/s in per_size"
            ),
            also=("events", "replay_seconds", "replay_events_per_second"),
        ),
    ]


__all__ = ["FIGURE_KEYS", "LARGE", "SIZES", "SizeRow", "figures", "measure", "scale_settings"]
