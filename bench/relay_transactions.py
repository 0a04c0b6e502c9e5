"""Figure 8: what Kafka transactions cost the outbox relay, in throughput and in freshness.

The same relay process (`campaigns serve relay`) runs twice per round, once with
`relay_transactions` on (the default: one Kafka transaction per batch, read_committed consumers)
and once off (the same idempotent producer, each batch sent and awaited with no transaction),
each on its own database and topics:

- throughput: a backlog of synthetic events is written into the log first, then the relay starts;
  a read_committed consumer times the backlog from its first record to its last;
- freshness: then single events are inserted at a steady rate (open loop); for each, the time
  from its insert's acknowledgement by MongoDB to its arrival at a read_committed consumer.

Rounds alternate the modes. The machine's bench lock (/tmp/campaigns-bench.lock, flock) is held
while measuring, so two people's benches do not measure each other. Knobs (environment):
BENCH_RELAY_EVENTS=6000, BENCH_RELAY_RATE=20, BENCH_RELAY_SECONDS=10, BENCH_RELAY_ROUNDS=2.
Run alone: `python -m bench.relay_transactions`.
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import os
import shutil
import signal
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from pymongo import AsyncMongoClient

from bench.environment import wait_for_leaders
from bench.lock import bench_lock
from bench.report import Figure
from command_api.adapters.kafka_publisher import KafkaEventPublisher, Outgoing, kafka_producer_factory
from events import EventEnvelope, Topics, encode_event, new_envelope, to_log_document
from events.envelope import utc_now
from service_runtime.background import BackgroundLoops
from service_runtime.settings import Settings
from tests.support.services import RunningServices
from tests.support.stack import create_topics, delete_topics, free_port
from tests.support.synthetic_log import synthetic_events, write_to_log


def progress(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


@dataclass
class ModeRun:
    transactional: bool
    backlog: int = 0
    backlog_seconds: float = 0.0
    publisher_per_second: float = 0.0
    freshness_ms: list[float] = field(default_factory=list)
    scheduled: int = 0

    @property
    def per_second(self) -> float:
        return (self.backlog - 1) / self.backlog_seconds if self.backlog_seconds else 0.0


def _q(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


class Arrivals:
    """A read_committed consumer on every partition of the users and campaigns topics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.times: dict[str, float] = {}
        self.first = 0.0
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            isolation_level="read_committed",
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
        )
        self._loops = BackgroundLoops()  # a stop ends the reading even if aiokafka swallows its cancel

    async def start(self) -> None:
        await self.consumer.start()
        topics = Topics(self.settings.topic_prefix)
        await self.consumer._client.force_metadata_update()  # no public call loads a topic's metadata
        partitions = [
            TopicPartition(topic, p)
            for topic in (topics.users, topics.campaigns)
            for p in self.consumer.partitions_for_topic(topic) or ()
        ]
        self.consumer.assign(partitions)
        await self.consumer.seek_to_beginning(*partitions)
        self._loops.start(self._read(), "bench-arrivals")

    async def _read(self) -> None:
        while self._loops.running:
            batch = await self.consumer.getmany(timeout_ms=200)
            now = time.perf_counter()
            for records in batch.values():
                for record in records:
                    event_id = dict(record.headers).get("event_id", b"").decode()
                    self.times.setdefault(event_id, now)
                    if not self.first:
                        self.first = now

    async def wait_for(self, count: int, within: float) -> None:
        deadline = time.monotonic() + within
        while len(self.times) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.times)} of {count} events arrived in {within:.0f} s")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        await self._loops.stop()
        await self.consumer.stop()


async def measure_mode(
    base: Settings, work_dir: Path, *, transactional: bool, events: int, rate: float, seconds: float
) -> ModeRun:
    tag = uuid.uuid4().hex[:6]
    settings = base.model_copy(
        update={
            "mongo_db": f"{base.mongo_db}_relay{tag}",
            "topic_prefix": f"{base.topic_prefix}relay{tag}.",
            "redis_prefix": f"{base.redis_prefix}relay{tag}",
            "relay_transactions": transactional,
            "relay_metrics_port": free_port(),
        }
    )
    mode = "on" if transactional else "off"
    progress(f"transactions {mode}: topics, then a backlog in the log")
    await create_topics(settings)
    await wait_for_leaders(settings, Topics(settings.topic_prefix).all())
    run = ModeRun(transactional)
    backlog = synthetic_events(users=50, campaigns=max(1, (events - 100) * 10 // 35))
    run.backlog = len(backlog)
    await write_to_log(settings, backlog)
    arrivals = Arrivals(settings)
    await arrivals.start()
    services = RunningServices(settings, work_dir / f"relay-{'tx' if transactional else 'plain'}-{tag}")
    services.log_dir.mkdir(parents=True, exist_ok=True)
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url)
    try:
        progress(f"transactions {mode}: the relay publishes {run.backlog} events")
        services.start(["relay"])
        await arrivals.wait_for(run.backlog, within=300)
        last = max(arrivals.times.values())
        run.backlog_seconds = last - arrivals.first

        events_log = mongo[settings.mongo_db]["events"]
        inserted: dict[str, float] = {}
        run.scheduled = int(rate * seconds)

        async def one(due: float) -> None:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            envelope = new_envelope(
                event_type="UserRegistered",
                aggregate_id=str(uuid.uuid4()),
                aggregate_version=1,
                payload={"email": f"{uuid.uuid4().hex[:12]}@example.com", "name": "Fresh", "roles": ["user"]},
                correlation_id=f"bench-{uuid.uuid4().hex}",
                actor_id=None,
            )
            document = to_log_document(envelope)
            document["recorded_at"] = utc_now()
            await events_log.insert_one(document)
            inserted[str(envelope.event_id)] = time.perf_counter()

        progress(f"transactions {mode}: {rate:.0f} inserts/s for {seconds:.0f} s")
        start = time.perf_counter() + 0.2
        await asyncio.gather(*(one(start + i / rate) for i in range(run.scheduled)))
        await arrivals.wait_for(run.backlog + run.scheduled, within=60)
        run.freshness_ms = [(arrivals.times[e] - at) * 1000 for e, at in inserted.items()]
        services.stop_all()
        progress(f"transactions {mode}: the publisher alone")
        run.publisher_per_second = await publisher_rate(settings, backlog, transactional)
    finally:
        services.stop_all()
        await arrivals.stop()
        await mongo.drop_database(settings.mongo_db)
        await mongo.close()
        await delete_topics(settings)
    return run


async def publisher_rate(settings: Settings, envelopes: list[EventEnvelope], transactional: bool) -> float:
    """The relay's Kafka publisher alone (no MongoDB): the backlog again in batches of the relay's
    size, each one transaction (or none), under a transactional.id of its own."""
    own = settings.model_copy(update={"relay_transactional_id": f"bench-publisher-{uuid.uuid4().hex[:6]}"})
    publisher = KafkaEventPublisher(
        kafka_producer_factory(own), Topics(own.topic_prefix), transactional=transactional
    )
    items = [Outgoing(envelope, encode_event(envelope)) for envelope in envelopes]
    size = settings.relay_batch_size
    try:
        await publisher.publish(items[:10], lambda: None)  # connections, producer id, metadata
        started = time.perf_counter()
        for start in range(0, len(items), size):
            await publisher.publish(items[start : start + size], lambda: None)
        return len(items) / (time.perf_counter() - started)
    finally:
        await publisher.close()


async def measure(base: Settings, work_dir: Path) -> Figure:
    events = int(os.environ.get("BENCH_RELAY_EVENTS", 6000))
    rate = float(os.environ.get("BENCH_RELAY_RATE", 20))
    seconds = float(os.environ.get("BENCH_RELAY_SECONDS", 10))
    rounds = int(os.environ.get("BENCH_RELAY_ROUNDS", 2))
    runs: dict[bool, list[ModeRun]] = {True: [], False: []}
    with bench_lock():
        for _ in range(rounds):
            for transactional in (True, False):
                runs[transactional].append(
                    await measure_mode(
                        base, work_dir, transactional=transactional, events=events, rate=rate, seconds=seconds
                    )
                )
    return figure(runs, rate, seconds)


def _summary(runs: list[ModeRun]) -> dict[str, float]:
    fresh = [ms for run in runs for ms in run.freshness_ms]
    return {
        "backlog_events_per_second": round(max(run.per_second for run in runs)),
        "backlog_rounds_per_second": [round(run.per_second) for run in runs],  # type: ignore[dict-item]
        "backlog_events": runs[0].backlog,
        "publisher_alone_events_per_second": round(max(run.publisher_per_second for run in runs)),
        "freshness_p50_ms": round(_q(fresh, 50), 1),
        "freshness_p99_ms": round(_q(fresh, 99), 1),
        "freshness_max_ms": round(max(fresh, default=0.0), 1),
        "freshness_events": len(fresh),
    }


def figure(runs: dict[bool, list[ModeRun]], rate: float, seconds: float) -> Figure:
    tx, plain = _summary(runs[True]), _summary(runs[False])
    ratio = tx["backlog_events_per_second"] / plain["backlog_events_per_second"]
    return Figure(
        key="relay_transactions",
        title="Relay: Kafka transactions on vs off",
        measured=(
            f"on: relay {tx['backlog_events_per_second']:,.0f} events/s, publisher alone "
            f"{tx['publisher_alone_events_per_second']:,.0f} events/s, freshness p50 "
            f"{tx['freshness_p50_ms']} ms p99 {tx['freshness_p99_ms']} ms"
        ),
        limit=(
            f"off: relay {plain['backlog_events_per_second']:,.0f} events/s, publisher alone "
            f"{plain['publisher_alone_events_per_second']:,.0f} events/s, freshness p50 "
            f"{plain['freshness_p50_ms']} ms p99 {plain['freshness_p99_ms']} ms"
        ),
        ratio=ratio,  # relay backlog throughput, on / off
        goal="a figure to know (fencing is not optional)",
        met=None,
        how=(
            "the relay process alone, best of the rounds; throughput: a backlog written to the log "
            "first, timed at a read_committed consumer from its first record to its last; freshness: "
            f"{rate:.0f} single inserts/s for {seconds:.0f} s, MongoDB's insert ack to the consumer; "
            "publisher alone: the relay's KafkaEventPublisher sending the backlog again in batches "
            "of relay_batch_size, no MongoDB"
        ),
        data={"transactional": tx, "plain": plain},
    )


async def _main() -> None:
    """Alone, on the servers the settings name (the local stack unless CAMPAIGNS_* say otherwise)."""
    from bench.environment import bench_settings
    from bench.report import show

    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints where it waits
    tag = uuid.uuid4().hex[:8]
    work_dir = Path(tempfile.mkdtemp(prefix=f"bench-relay-{tag}-"))
    try:
        result = await measure(bench_settings(tag), work_dir)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    show([result], "Relay transactions")
    print(json.dumps(result.data, indent=2))


if __name__ == "__main__":
    asyncio.run(_main())
