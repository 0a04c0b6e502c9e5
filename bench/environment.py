"""The bench's own corner of the local stack: isolated settings, service processes, clean-up.

Everything the bench creates is named after one tag: the MongoDB database `bench_<tag>`, Redis
keys under `bench<tag>*`, Kafka topics under `bench<tag>.` (and `bench<tag>L.` for the projector
load run), free ports for every listener. A running system on the default names is never touched.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CoordinatorLoadInProgressError, GroupCoordinatorNotAvailableError
from pymongo import AsyncMongoClient

from bench.memory import server_pids, tree_pids
from events import Topics
from service_runtime.redis_client import connect_redis
from service_runtime.settings import Settings
from tests.support.services import RunningServices
from tests.support.stack import REPO, create_topics, ensure_stack_up, free_port, isolated_settings

API_WORKERS_DEFAULT = Settings.model_fields["api_workers"].default
ALL_SERVICES = ("command-api", "query-api", "relay", "projectors", "workers")
CLEANUP_SECONDS = 30


def bench_settings(tag: str) -> Settings:
    return isolated_settings(
        mongo_db=f"bench_{tag}",
        redis_prefix=f"bench{tag}",
        topic_prefix=f"bench{tag}.",
        kafka_partitions=6,
        # One bench user sends every command: a command rate above any figure's (the sustained
        # steps stop at 400/s), but bounded, so the live-campaign cap counts as it would for a
        # real user (live_cap.py), not at every recount interval as under the tests' unbounded
        # rate. At 10,000/s it counted the bench user's campaigns every ~99 s (the tests' cap of
        # 1,000,000 minus the burst, over the rate): tens of thousands by the freshness runs, at
        # ~30 µs each on SecantusDB a stall of the whole server of up to a second. At 1,000/s a
        # count is due every ~17 minutes.
        command_rate_per_second=1_000.0,
        command_burst=1_000,
        command_api_port=free_port(),
        query_api_port=free_port(),
        # The APIs' uvicorn workers: the settings' default, or CAMPAIGNS_API_WORKERS (the figures
        # then say how many ran: the read path's bare app runs as many).
        api_workers=int(os.environ.get("CAMPAIGNS_API_WORKERS") or API_WORKERS_DEFAULT),
    )


def load_settings(main: Settings) -> Settings:
    """The projector load run: its own topics and keys, so the 100k events never reach the
    workers or the read models the other figures use."""
    return main.model_copy(
        update={
            "topic_prefix": main.topic_prefix.rstrip(".") + "L.",
            "redis_prefix": main.redis_prefix + "L",
            "projectors_metrics_port": free_port(),
        }
    )


@dataclass
class BenchEnvironment:
    settings: Settings
    work_dir: Path
    tag: str
    services: RunningServices = field(init=False)
    extra: list[RunningServices] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.services = RunningServices(self.settings, self.work_dir)

    @classmethod
    async def create(cls) -> BenchEnvironment:
        await asyncio.to_thread(ensure_stack_up)
        tag = uuid.uuid4().hex[:8]
        settings = bench_settings(tag)
        work_dir = REPO / ".local" / "bench" / tag
        work_dir.mkdir(parents=True, exist_ok=True)
        await create_topics(settings)
        await wait_for_leaders(settings, Topics(settings.topic_prefix).all())
        return cls(settings, work_dir, tag)

    def servers(self) -> dict[str, list[int]]:
        """The local stack's servers (mongodb, redis, kafka): their pids by name."""
        settings = self.settings
        return server_pids(
            mongo_port=int(settings.mongo_url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]),
            redis_port=int(settings.redis_url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]),
            # Resolved: a worktree's .local is a link to the running stack's, and Kafka's command
            # line names the real path (unresolved, a worktree's run counted no Kafka CPU).
            kafka_properties=str((REPO / settings.local_dir / "kafka.properties").resolve()),
        )

    def every_process(self) -> dict[str, list[int]]:
        """Every service process the bench runs now (its own and `other_services`', each as its
        process tree, the others named "<their name> <service>"), the servers and the bench."""
        groups = {name: tree_pids(p.pid) for name, p in self.services.processes.items() if p.poll() is None}
        for other in self.extra:
            for name, process in other.processes.items():
                if process.poll() is None:
                    groups[f"{other.log_dir.name} {name}"] = tree_pids(process.pid)
        groups.update(self.servers())
        groups["bench client"] = [os.getpid()]
        return groups

    def other_services(self, settings: Settings, name: str) -> RunningServices:
        directory = self.work_dir / name
        directory.mkdir(exist_ok=True)
        running = RunningServices(settings, directory)
        self.extra.append(running)
        return running

    async def cleanup(self) -> None:
        """Stop every process the bench started; delete its topics, database and keys."""
        for running in [self.services, *self.extra]:
            await asyncio.to_thread(running.stop_all)
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap)
        await admin.start()
        try:
            mine = [t for t in await admin.list_topics() if t.startswith(f"bench{self.tag}")]
            if mine:
                await admin.delete_topics(mine)
        finally:
            await admin.close()
        mongo: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(self.settings.mongo_url)
        try:
            # Bounded: a wedged MongoDB must not keep the bench (and its lock) from ending.
            await asyncio.wait_for(mongo.drop_database(self.settings.mongo_db), CLEANUP_SECONDS)
        except TimeoutError:
            print(f"database {self.settings.mongo_db} not dropped within {CLEANUP_SECONDS} s; drop it later")
        finally:
            await mongo.close()
        await delete_keys(self.settings, f"bench{self.tag}")
        if os.environ.get("BENCH_KEEP_LOGS") != "1":
            shutil.rmtree(self.work_dir, ignore_errors=True)


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The topic's partitions, as the broker lists them (a fresh consumer may not know it yet)."""
    cluster = await consumer._client.fetch_all_metadata()
    found = cluster.partitions_for_topic(topic)
    if not found:
        raise RuntimeError(f"topic {topic} has no partitions")
    return [TopicPartition(topic, p) for p in sorted(found)]


async def end_offsets(settings: Settings, topic: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(await topic_partitions(consumer, topic)))
    finally:
        await consumer.stop()


async def committed_total(admin: AIOKafkaAdminClient, group: str, topic: str) -> int:
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    except (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError):
        # A broker that never had a consumer group creates __consumer_offsets on first use.
        return 0
    return sum(max(meta.offset, 0) for tp, meta in offsets.items() if tp.topic == topic)


async def wait_for_group(
    settings: Settings,
    group: str,
    topic: str,
    target: int,
    limit_seconds: float,
    on_first_commit: Callable[[], None] | None = None,
) -> list[tuple[float, int]]:
    """Poll the group's committed offsets until they reach `target`; the (time, committed) samples.
    `on_first_commit` is called once, as soon as a sample finds anything committed."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    samples: list[tuple[float, int]] = []
    deadline = time.perf_counter() + limit_seconds
    try:
        while True:
            done = await committed_total(admin, group, topic)
            samples.append((time.perf_counter(), done))
            if done > 0 and on_first_commit is not None:
                on_first_commit()
                on_first_commit = None
            if done >= target:
                return samples
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{group} committed {done} of {target} on {topic} in {limit_seconds:.0f}s")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def wait_for_members(
    settings: Settings, groups: list[str], members: int, limit_seconds: float = 120
) -> None:
    """Until each consumer group is stable with `members` members (every one assigned its share:
    no rebalance still to come)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    deadline = time.monotonic() + limit_seconds
    try:
        while True:
            described = []
            for group in groups:
                for response in await admin.describe_consumer_groups([group]):
                    # (error_code, group_id, state, protocol_type, protocol, members, ...)
                    described += [(g[2], len(g[5])) for g in response.groups]
            if len(described) == len(groups) and all(
                state == "Stable" and count == members for state, count in described
            ):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{groups} not stable with {members} members: {described}")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def delete_keys(settings: Settings, prefix: str) -> int:
    """Unlink every key under `prefix` (the bench's own prefixes only)."""
    redis = connect_redis(settings)
    deleted = 0
    try:
        batch: list[bytes] = []
        async for key in redis.scan_iter(match=f"{prefix}*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                deleted += await redis.unlink(*batch)
                batch = []
        if batch:
            deleted += await redis.unlink(*batch)
    finally:
        await redis.aclose()
    return deleted


async def wait_for_leaders(settings: Settings, topics: list[str], limit_seconds: float = 30) -> None:
    """Until every partition of new topics has a leader (producing earlier only logs retries)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    deadline = time.monotonic() + limit_seconds
    try:
        while True:
            described = await admin.describe_topics(topics)
            if all(
                t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
                for t in described
            ):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics without leaders after {limit_seconds:.0f}s: {topics}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
