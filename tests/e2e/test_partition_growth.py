"""End to end: grow the topics' partitions (3 to 6) under live campaign traffic.

The README's procedure, run against the real services on the real Kafka: `campaigns kafka topics
--reconcile` with a larger CAMPAIGNS_KAFKA_PARTITIONS while commands keep coming. After the
growth an aggregate's key hashes to another partition, so its next events can be consumed before
its earlier ones still waiting on the old partition; the projection's per-aggregate version guard
parks those and drains them. Every campaign must end projected at its latest version, and
`campaigns replay verify` must find no drift.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from events.topics import Topics
from readmodels.versions import read_versions
from service_runtime.settings import Settings
from tests.support import loopback
from tests.support.factories import campaign_body, register_body
from tests.support.services import RunningServices, free_port, settings_env
from tests.support.stack import REPO
from tests.support.waiting import eventually

SERVICES = ["command-api", "query-api", "relay", "projectors"]
CAMPAIGNS = 12


async def stats_at_latest(settings: Settings, versions: dict[str, int]) -> bool:
    redis = Redis.from_url(settings.redis_url)
    try:
        held = await read_versions(
            redis,
            settings.redis_prefix,
            "stats.1",
            "stats",
            "campaign",
            list(versions),
            settings.read_model_buckets,
        )
    finally:
        await redis.aclose()
    return held == list(versions.values())


def campaigns_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "launcher", *args],
        cwd=REPO,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )


async def records_in(settings: Settings, topic: str, partitions: range) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, isolation_level="read_committed")
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return sum(ends.values())
    finally:
        await consumer.stop()


async def test_growing_partitions_mid_traffic_keeps_every_campaign_projected(
    settings: Settings, tmp_path: Path
) -> None:
    before = settings.kafka_partitions
    grown = settings.model_copy(update={"kafka_partitions": before * 2})
    services = RunningServices(
        settings.model_copy(
            update={
                "command_api_port": free_port(),
                "query_api_port": free_port(),
                "api_workers": 1,
                # Producers and consumers see the new partitions within a second (default 30 s).
                "kafka_metadata_max_age_seconds": 1.0,
            }
        ),
        tmp_path,
    )
    services.start(SERVICES)
    try:
        services.wait_ready()
        async with (
            loopback.client(base_url=services.command_url, timeout=15) as commands,
            loopback.client(base_url=services.query_url, timeout=15) as queries,
        ):
            user = register_body()
            assert (await commands.post("/auth/register", json=user)).status_code == 201
            login = await commands.post(
                "/auth/login", json={"email": user["email"], "password": user["password"]}
            )
            auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
            versions: dict[str, int] = {}
            for n in range(CAMPAIGNS):
                created = await commands.post(
                    "/campaigns", json=campaign_body(name=f"Grown {n}"), headers=auth
                )
                assert created.status_code == 201, created.text
                versions[created.json()["id"]] = created.json()["version"]
            ids = list(versions)
            stop = asyncio.Event()

            async def change_campaigns() -> None:
                turn = 0
                while not stop.is_set():
                    campaign_id = ids[turn % len(ids)]
                    action = "activate" if versions[campaign_id] % 2 else "pause"
                    answer = await commands.post(f"/campaigns/{campaign_id}/{action}", headers=auth)
                    assert answer.status_code == 200, answer.text
                    versions[campaign_id] = answer.json()["version"]
                    turn += 1
                    await asyncio.sleep(0.01)

            traffic = asyncio.create_task(change_campaigns())
            await asyncio.sleep(1.5)
            reconciled = await asyncio.to_thread(
                campaigns_cli, grown, "kafka", "topics", "--reconcile", "--json"
            )
            assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
            report = json.loads(reconciled.stdout)
            assert {t["partitions"] for t in report["topics"]} == {grown.kafka_partitions}

            # The growth is exercised: events of the running traffic land in the new partitions.
            topic = Topics(settings.topic_prefix).campaigns
            new_partitions = range(before, grown.kafka_partitions)

            async def new_partitions_used() -> bool:
                assert not traffic.done(), traffic
                return await records_in(settings, topic, new_partitions) >= CAMPAIGNS

            await eventually(
                new_partitions_used, timeout=60, interval=0.5, what="events in the new partitions"
            )
            stop.set()
            await traffic

            async def at_latest(campaign_id: str) -> bool:
                read = await queries.get(f"/campaigns/{campaign_id}", headers=auth)
                return read.status_code == 200 and read.json()["version"] == versions[campaign_id]

            for campaign_id in ids:
                await eventually(
                    lambda c=campaign_id: at_latest(c),  # type: ignore[misc]
                    timeout=60,
                    interval=0.2,
                    what=f"campaign {campaign_id} projected at version {versions[campaign_id]}",
                )
            assert sum(versions.values()) > 2 * CAMPAIGNS, "traffic changed the campaigns"
            # The stats projection fetches in batches (up to batch_fetch_wait_ms behind the
            # campaigns one): stopping before it has every event would leave it behind, which
            # the verify below would rightly call drift.
            await eventually(
                lambda: stats_at_latest(settings, versions),
                timeout=60,
                interval=0.2,
                what="the stats projection at every campaign's latest version",
            )
    finally:
        services.stop_all()

    verified = await asyncio.to_thread(campaigns_cli, grown, "replay", "verify", "all")
    assert verified.returncode == 0, verified.stdout + verified.stderr
