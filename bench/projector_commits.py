"""The projectors process alone at a live rate: its CPU per event with offsets committed per batch
(`CAMPAIGNS_PROJECTOR_COMMIT_SECONDS=0`) and on the default interval, in alternating rounds.

`python -m bench.projector_commits` (holds the bench lock): campaign-created events produced
into the bench's own campaigns topic at `BENCH_PC_RATE` (100) a second, one Kafka transaction
each as the relay sends them at that rate, for `BENCH_PC_SECONDS` (30) a round; the projectors
process (all three projections) restarted for each round with the setting of that round; its
CPU from /proc over the round, divided by the events; Kafka's beside it. Nothing else runs.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

from aiokafka import AIOKafkaProducer

from bench.environment import BenchEnvironment
from bench.event_load import campaign_events
from bench.lock import bench_lock
from bench.machine import load_average
from bench.memory import cpu_seconds, server_pids, tree_pids
from events import Topics
from tests.support.stack import REPO


async def _produce(settings: object, rate: float, seconds: float, first: int) -> int:
    topic = Topics(settings.topic_prefix).campaigns  # type: ignore[attr-defined]
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,  # type: ignore[attr-defined]
        enable_idempotence=True,
        transactional_id=f"bench-pc-{uuid.uuid4().hex[:8]}",
    )
    await producer.start()
    count = int(rate * seconds)
    started = time.monotonic()
    try:
        for i, (key, value) in enumerate(campaign_events(count, life=("CampaignCreated",), first=first)):
            due = started + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            async with producer.transaction():
                await producer.send(topic, value, key=key)
    finally:
        await producer.stop()
    return count


async def main() -> None:
    rate = float(os.environ.get("BENCH_PC_RATE", "100"))
    seconds = float(os.environ.get("BENCH_PC_SECONDS", "30"))
    order = [float(x) for x in os.environ.get("BENCH_PC_ROUNDS", "0,0.25,0,0.25").split(",")]
    env = await BenchEnvironment.create()
    settings = env.settings
    kafka = server_pids(
        mongo_port=0,
        redis_port=0,
        kafka_properties=str((REPO / settings.local_dir / "kafka.properties").resolve()),
    ).get("kafka", [])
    print(f"projector commits: {rate:.0f} events/s, {seconds:.0f} s a round, rounds {order}")
    first = 0
    try:
        for interval in order:
            services = env.other_services(
                settings.model_copy(update={"projector_commit_seconds": interval}), f"pc-{first}"
            )
            services.start(["projectors"])
            await asyncio.sleep(8)  # joined its groups, caught up with the earlier rounds
            pids = tree_pids(services.processes["projectors"].pid)
            cpu0 = sum(cpu_seconds(p) for p in pids)
            kafka0 = sum(cpu_seconds(p) for p in kafka)
            t0 = time.monotonic()
            count = await _produce(settings, rate, seconds, first)
            await asyncio.sleep(1)  # the last events projected
            elapsed = time.monotonic() - t0
            cpu = sum(cpu_seconds(p) for p in pids) - cpu0
            kafka_cpu = sum(cpu_seconds(p) for p in kafka) - kafka0
            first += count
            print(
                f"  commit every {interval} s: projectors {cpu / count * 1000:.2f} ms/event "
                f"({cpu / elapsed:.3f} core), kafka {kafka_cpu / count * 1000:.2f} ms/event; "
                f"{count} events in {elapsed:.1f} s; load {load_average()}",
                flush=True,
            )
            await asyncio.to_thread(services.stop_all)
    finally:
        await env.cleanup()


if __name__ == "__main__":
    with bench_lock():
        asyncio.run(main())
