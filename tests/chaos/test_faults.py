"""Faults with real processes on a private stack: killed processes, stopped servers.

Each test drives the running services, injects one fault, lets the system recover and then
accounts for every event: accepted in the MongoDB log, projected into the Redis read models,
lost, or applied twice. A clean rebuild of the log into scratch generations must have the same
digests as the live read models. Each test adds its row to the fault table (`make chaos`).
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from events import Topics
from events.log import relay_backlog
from readmodels.generations import live_generations
from readmodels.keyspace import sentinel_key
from readmodels.status import read_status
from readmodels.versions import aggregate_state, delete_state
from service_runtime.settings import Settings
from service_runtime.tokens import issue_access_token
from tests.support import loopback
from tests.support.fault_table import record_fault
from tests.support.ledger import (
    Verdict,
    applied_by_stats,
    kafka_event_ids,
    kafka_messages,
    kafka_offsets,
    log_envelopes,
    max_versions,
    projected_versions,
    verdict,
    wait_for,
    wait_projected,
    write_side_consistency,
)
from tests.support.private_stack import PrivateStack
from tests.support.services import RunningServices, settings_env
from tests.support.stack import REPO
from tests.support.synthetic_log import synthetic_events, write_to_log
from tests.support.traffic import CommandTraffic

pytestmark = pytest.mark.chaos

PROBLEM_JSON = "application/problem+json"


def assert_clean(result: Verdict, fault: str) -> None:
    record_fault(result.row(fault))
    assert result.lost == 0, f"{fault}: {result.lost} events lost ({result})"
    assert result.duplicates_applied == 0, f"{fault}: {result.duplicates_applied} applied twice ({result})"
    assert result.projected == result.accepted, result
    assert result.digests_match, f"{fault}: live read models differ from a clean rebuild: {result.details}"


async def unpublished(settings: Settings) -> int:
    """Events recorded after the newest the relay's saved watermark holds."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url)
    try:
        return await relay_backlog(client[settings.mongo_db])
    finally:
        await client.close()


async def projector_counters(redis: Redis, settings: Settings) -> dict[str, dict[str, str]]:
    return await read_status(redis, settings.redis_prefix, ["campaigns", "users", "stats"])


# ---------------------------------------------------------------------- projector killed


async def test_projector_killed_mid_batch_restarts_to_the_clean_rebuild(
    private_services: RunningServices, private_settings: Settings, private_redis: Redis
) -> None:
    services, settings, redis = private_services, private_settings, private_redis
    backlog = synthetic_events(users=40, campaigns=900)
    await write_to_log(settings, backlog)
    services.start(["relay"])
    await wait_for(lambda: _none_unpublished(settings), 90, "the relay to publish the backlog")

    services.start(["projectors"])
    # Kill while the stats projection has applied some of the backlog but not all of it.
    total = len(backlog)
    applied = 0
    deadline = time.monotonic() + 60
    while not 0 < applied < total * 0.8:
        assert time.monotonic() < deadline, f"projectors applied {applied} of {total} events in 60 s"
        await asyncio.sleep(0.005)
        applied = await applied_by_stats(redis, settings)
    services.stop("projectors", signal.SIGKILL)
    at_kill = await applied_by_stats(redis, settings)

    services.start(["projectors"])
    await wait_projected(redis, settings, within=120)
    result = await verdict(redis, settings)
    counters = await projector_counters(redis, settings)
    redelivered = sum(int(c.get("duplicates_total", 0)) for c in counters.values())
    print(f"killed with {at_kill}/{total} applied; {redelivered} redelivered events ignored after restart")
    assert_clean(result, "projector SIGKILL mid-batch")
    assert 0 < at_kill < total
    replay("verify", settings)  # the replay tool agrees: live == rebuilt from the log


async def _none_unpublished(settings: Settings) -> bool:
    return await unpublished(settings) == 0


# ---------------------------------------------------------------------- relay killed


async def test_relay_killed_between_publish_and_mark_sends_duplicates_that_change_nothing(
    private_services: RunningServices, private_settings: Settings, private_redis: Redis
) -> None:
    services, settings, redis = private_services, private_settings, private_redis
    backlog = synthetic_events(users=40, campaigns=900)
    await write_to_log(settings, backlog)
    # One large catch-up batch: a long stretch in which Kafka has acknowledged part of it and
    # the relay's watermark holds none of it (it is saved once the whole scan is done).
    services.settings = services.settings.model_copy(update={"relay_batch_size": len(backlog)})
    services.start(["projectors"])
    services.start(["relay"])

    # Kill once Kafka holds events the watermark does not yet hold.
    topics = Topics(settings.topic_prefix)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        await wait_for(
            lambda: _has_metadata(consumer, [topics.users, topics.campaigns]), 20, "topic metadata"
        )
        partitions = [
            TopicPartition(t, p)
            for t in (topics.users, topics.campaigns)
            for p in consumer.partitions_for_topic(t)
        ]
        total = len(backlog)
        deadline = time.monotonic() + 90
        while True:
            assert time.monotonic() < deadline, "never saw events published but not yet marked"
            marked = total - await unpublished(settings)
            on_kafka = sum((await consumer.end_offsets(partitions)).values())
            if marked == 0 and 0 < on_kafka < total * 0.6:
                break
            await asyncio.sleep(0.01)
    finally:
        await consumer.stop()
    services.stop("relay", signal.SIGKILL)
    at_kill_marked = total - await unpublished(settings)

    services.start(["relay"])
    await wait_for(lambda: _none_unpublished(settings), 120, "the restarted relay to publish the rest")
    await wait_projected(redis, settings, within=120)
    on_kafka = await kafka_offsets(settings)
    result = await verdict(redis, settings)
    print(f"killed with {at_kill_marked}/{total} marked; Kafka holds {on_kafka} records for {total} events")
    assert_clean(result, "relay SIGKILL between publish and mark")
    replay("verify", settings)
    assert on_kafka > total, (
        "the restart published no duplicate: the kill did not land between publish and mark"
    )


async def _has_metadata(consumer: AIOKafkaConsumer, topics: list[str]) -> bool:
    await consumer._client.force_metadata_update()
    return all(consumer.partitions_for_topic(t) for t in topics)


# ---------------------------------------------------------------------- Kafka stopped


async def test_kafka_down_for_20_seconds_loses_no_accepted_command(
    private_services: RunningServices,
    private_settings: Settings,
    private_redis: Redis,
    private_stack: PrivateStack,
) -> None:
    services, settings, redis = private_services, private_settings, private_redis
    services.start(["command-api", "relay", "projectors"])
    services.wait_ready()
    async with loopback.client(base_url=services.command_url, timeout=20) as client:
        traffic = CommandTraffic(client)
        await traffic.sign_up(4)

        async def outage() -> tuple[int, int]:
            await asyncio.sleep(4)
            private_stack.stop("kafka")
            accepted_before = traffic.accepted
            await asyncio.sleep(20)
            accepted_during = traffic.accepted - accepted_before
            private_stack.start("kafka")
            return accepted_before, accepted_during

        _, (_, during) = await asyncio.gather(traffic.run(seconds=34, rate=12), outage())

    assert traffic.server_errors == [], traffic.server_errors[:5]
    assert traffic.server_error_count(allow_503=False) == 0, traffic.statuses
    assert during > 50, f"only {during} commands accepted while Kafka was down"
    await wait_projected(redis, settings, within=120)
    await _assert_acknowledged_projected(redis, settings, traffic)
    assert_clean(await verdict(redis, settings), "Kafka stopped 20 s under traffic")
    assert await kafka_messages(settings) >= traffic.accepted


async def _assert_acknowledged_projected(redis: Redis, settings: Settings, traffic: CommandTraffic) -> None:
    """Every version a 2xx answer reported is in the log and in the campaigns read model."""
    logged = max_versions(await log_envelopes(settings))
    missing = {
        cid: version
        for cid, version in traffic.acknowledged.items()
        if logged.get(("campaign", cid), 0) < version
    }
    assert not missing, f"acknowledged but not in the log: {list(missing.items())[:5]}"
    reached = (await projected_versions(redis, settings))["campaigns"]
    behind = {cid: v for cid, v in traffic.acknowledged.items() if reached.get(("campaign", cid), 0) < v}
    assert not behind, f"acknowledged but not projected: {list(behind.items())[:5]}"


# ---------------------------------------------------------------------- Redis stopped


async def test_redis_down_query_api_answers_503_and_recovers_after_a_rebuild(
    private_services: RunningServices,
    private_settings: Settings,
    private_redis: Redis,
    private_stack: PrivateStack,
) -> None:
    services, settings, redis = private_services, private_settings, private_redis
    services.start(["command-api", "query-api", "relay", "projectors"])
    services.wait_ready()
    async with (
        loopback.client(base_url=services.command_url, timeout=20) as commands,
        loopback.client(base_url=services.query_url, timeout=20) as queries,
    ):
        traffic = CommandTraffic(commands)
        await traffic.sign_up(2)
        await traffic.run(seconds=4, rate=15)
        # A reader of their own campaign, which the traffic never touches.
        reader = CommandTraffic(commands)
        owner = (await reader.sign_up(1))[0]
        await reader.create()
        (campaign_id,) = reader.campaigns
        admin = {"Authorization": f"Bearer {issue_access_token(settings, 'an-admin', ['user', 'admin'])}"}
        reads = [
            (f"/campaigns/{campaign_id}", owner.auth),
            (f"/campaigns/{campaign_id}?min_version=1", owner.auth),
            ("/campaigns?limit=5", owner.auth),
            ("/users/me", owner.auth),
            ("/stats", admin),
            ("/health/ready", {}),
        ]
        await wait_projected(redis, settings, within=60)
        for path, headers in reads:
            assert (await queries.get(path, headers=headers)).status_code == 200, path

        private_stack.kill("redis")
        # Commands go on while Redis is down (only logins need it: they may answer 503).
        outage_traffic = asyncio.create_task(traffic.run(seconds=8, rate=10))
        # The query API's campaign cache may answer from memory for a moment: it empties when the
        # events feed drops and holds nothing longer than CAMPAIGN_CACHE_SECONDS (1 s). After
        # that, every read is a 503.
        await asyncio.sleep(settings.campaign_cache_seconds + 0.5)
        for path, headers in reads:
            response = await queries.get(path, headers=headers)
            assert response.status_code == 503, (path, response.status_code, response.text)
            assert response.headers["content-type"].startswith(PROBLEM_JSON), (path, response.headers)
            assert response.json()["status"] == 503
        await outage_traffic
        private_stack.start("redis")
        await redis.connection_pool.disconnect()  # this test's own connections died with the server

        # Redis lost what it had not saved: rebuild every projection from the log and swap it in.
        await traffic.run(seconds=3, rate=10)
        await wait_for(lambda: _none_unpublished(settings), 60, "the relay to publish everything")
        await asyncio.sleep(3)  # the projectors take what the relay published
        replay("rebuild", settings)

        last: dict[str, str] = {}

        async def reads_recovered() -> bool:
            for path, headers in reads:
                answer = await queries.get(path, headers=headers)
                last[path] = f"{answer.status_code} {answer.text[:200]}"
            return all(v.startswith("200") for v in last.values())

        try:
            await wait_for(reads_recovered, 30, "the query API to answer 200 again")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {last}") from None
        # Traffic after the rebuild lands on the rebuilt generation.
        await traffic.run(seconds=4, rate=10)

    assert traffic.server_errors == [], traffic.server_errors[:5]
    assert traffic.server_error_count(allow_503=True) == 0, traffic.statuses
    await wait_projected(redis, settings, within=60)
    await _assert_acknowledged_projected(redis, settings, traffic)
    assert_clean(await verdict(redis, settings), "Redis SIGKILL, replay rebuild")
    replay("verify", settings)


# ---------------------------------------------------------------------- Redis stopped briefly


async def test_redis_stopped_briefly_under_traffic_dead_letters_nothing(
    private_services: RunningServices,
    private_settings: Settings,
    private_redis: Redis,
    private_stack: PrivateStack,
) -> None:
    """A transient outage is the servers' error, not the events': the batch is retried, holding
    its partition, and every event is applied once Redis is back; nothing is dead-lettered."""
    services, settings, redis = private_services, private_settings, private_redis
    services.start(["command-api", "relay", "projectors"])
    services.wait_ready()
    async with loopback.client(base_url=services.command_url, timeout=20) as commands:
        traffic = CommandTraffic(commands)
        await traffic.sign_up(3)

        async def outage() -> None:
            await asyncio.sleep(3)
            private_stack.stop("redis")  # SIGTERM: Redis saves its data set, as in a restart
            await asyncio.sleep(6)
            private_stack.start("redis")

        await asyncio.gather(traffic.run(seconds=14, rate=10), outage())
    await redis.connection_pool.disconnect()  # this test's own connections died with the server
    await wait_for(lambda: _none_unpublished(settings), 60, "the relay to publish everything")
    await wait_projected(redis, settings, within=90)
    await _assert_acknowledged_projected(redis, settings, traffic)
    assert await dead_letters(settings) == 0
    counters = await projector_counters(redis, settings)
    assert all(int(c.get("dead_lettered_total", 0)) == 0 for c in counters.values()), counters
    assert_clean(await verdict(redis, settings), "Redis stopped 6 s under traffic: 0 dead letters")


async def test_redis_flushall_under_traffic_is_rebuilt_with_no_operator_action(
    private_services: RunningServices,
    private_settings: Settings,
    private_redis: Redis,
) -> None:
    """FLUSHALL (the private stack's own Redis): the projectors see the sentinel gone, rebuild
    every projection from the log, and every acknowledged version is readable again."""
    services, settings, redis = private_services, private_settings, private_redis
    services.settings = services.settings.model_copy(update={"redis_loss_check_seconds": 0.5})
    services.start(["command-api", "relay", "projectors"])
    services.wait_ready()
    async with loopback.client(base_url=services.command_url, timeout=20) as commands:
        traffic = CommandTraffic(commands)
        await traffic.sign_up(3)

        async def flush() -> None:
            await asyncio.sleep(4)
            await redis.flushall()

        await asyncio.gather(traffic.run(seconds=10, rate=10), flush())
    await wait_for(lambda: _none_unpublished(settings), 60, "the relay to publish everything")
    await wait_for(lambda: _sentinel_back(redis, settings), 60, "the rebuild after the FLUSHALL")
    await wait_projected(redis, settings, within=60)
    await _assert_acknowledged_projected(redis, settings, traffic)
    assert await dead_letters(settings) == 0
    assert_clean(await verdict(redis, settings), "Redis FLUSHALL under traffic: automatic rebuild")


async def test_read_model_keys_deleted_under_traffic_are_repaired_by_anti_entropy(
    private_services: RunningServices,
    private_settings: Settings,
    private_redis: Redis,
) -> None:
    """Random read-model keys deleted while commands flow (a lost write, a hand at the console):
    anti-entropy finds each aggregate behind the write side and repairs it from the log, with
    no operator; the live read models end equal to a clean rebuild (stats counted once)."""
    services, settings, redis = private_services, private_settings, private_redis
    services.settings = services.settings.model_copy(
        update={"anti_entropy_interval_seconds": 0.5, "anti_entropy_grace_seconds": 2.0}
    )
    services.start(["command-api", "relay", "projectors"])
    services.wait_ready()
    rng = random.Random(18)
    deleted: list[str] = []
    async with loopback.client(base_url=services.command_url, timeout=20) as commands:
        traffic = CommandTraffic(commands)
        await traffic.sign_up(3)

        async def delete_keys() -> None:
            for _ in range(4):
                await asyncio.sleep(2)
                live = await live_generations(redis, settings.redis_prefix)
                for campaign_id in rng.sample(sorted(traffic.campaigns), min(3, len(traffic.campaigns))):
                    projection = rng.choice(["campaigns", "stats"])
                    state = aggregate_state(
                        settings.redis_prefix,
                        live[projection],
                        projection,
                        "campaign",
                        campaign_id,
                        settings.read_model_buckets,
                    )
                    deleted.append(str(state))
                    await delete_state(redis, state)

        await asyncio.gather(traffic.run(seconds=10, rate=10), delete_keys())
    assert deleted
    await wait_for(lambda: _none_unpublished(settings), 60, "the relay to publish everything")
    await wait_projected(redis, settings, within=60)
    await _assert_acknowledged_projected(redis, settings, traffic)
    assert await dead_letters(settings) == 0
    counters = await projector_counters(redis, settings)
    assert sum(int(c.get("anti_entropy_repairs_total", 0)) for c in counters.values()) >= 1, counters
    result = await verdict(redis, settings)
    if not result.digests_match:  # the stats recount (a rebuild) may still be finishing
        await asyncio.sleep(10)
        result = await verdict(redis, settings)
    assert_clean(result, f"{len(deleted)} read-model keys deleted under traffic: anti-entropy")


async def _sentinel_back(redis: Redis, settings: Settings) -> bool:
    return bool(await redis.exists(sentinel_key(settings.redis_prefix)))


async def dead_letters(settings: Settings) -> int:
    """Records on the dead-letter topics."""
    topics = Topics(settings.topic_prefix)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        names = [Topics.dlq(topics.users), Topics.dlq(topics.campaigns)]
        await consumer._client.force_metadata_update()
        partitions = [
            TopicPartition(t, p) for t in names for p in (consumer.partitions_for_topic(t) or set())
        ]
        return sum((await consumer.end_offsets(partitions)).values()) if partitions else 0
    finally:
        await consumer.stop()


def replay(action: str, settings: Settings) -> None:
    """`campaigns replay ACTION all`, as an operator runs it."""
    extra = ["--grace-seconds", "0"] if action == "rebuild" else []
    done = subprocess.run(
        [sys.executable, "-m", "launcher", "replay", action, "all", *extra],
        cwd=REPO,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"replay {action}: {done.stdout[-2000:]}{done.stderr[-2000:]}"


# ---------------------------------------------------------------------- MongoDB stopped


async def test_mongodb_down_command_api_answers_503_publishes_nothing_and_writes_nothing_half(
    private_services: RunningServices,
    private_settings: Settings,
    private_redis: Redis,
    private_stack: PrivateStack,
) -> None:
    services, settings, redis = private_services, private_settings, private_redis
    services.start(["command-api", "relay", "projectors"])
    services.wait_ready()
    async with loopback.client(base_url=services.command_url, timeout=30) as client:
        traffic = CommandTraffic(client)
        await traffic.sign_up(4)

        async def outage() -> int:
            await asyncio.sleep(4)
            private_stack.kill("mongo")
            accepted_at_kill = traffic.accepted
            await asyncio.sleep(10)
            accepted_during = traffic.accepted - accepted_at_kill
            private_stack.start("mongo")
            return accepted_during

        _, during = await asyncio.gather(traffic.run(seconds=24, rate=12), outage())

    assert traffic.server_errors == [], traffic.server_errors[:5]
    assert traffic.server_error_count(allow_503=True) == 0, traffic.statuses
    assert traffic.unavailable > 0, f"no command was refused while MongoDB was down: {traffic.statuses}"
    assert during <= 12, f"{during} commands were accepted while MongoDB was down"
    assert await write_side_consistency(settings) == []
    await wait_for(lambda: _none_unpublished(settings), 60, "the relay to publish everything")
    await wait_projected(redis, settings, within=90)
    await _assert_acknowledged_projected(redis, settings, traffic)
    logged = {str(e.event_id) for e in await log_envelopes(settings)}
    on_kafka = await kafka_event_ids(settings, expected=len(logged))
    assert set(on_kafka) == logged, f"on Kafka but not in the log: {list(set(on_kafka) - logged)[:5]}"
    assert_clean(await verdict(redis, settings), "MongoDB SIGKILL under traffic")
