"""Where a command's freshness goes, stage by stage (`BENCH_STAGES=1` beside the freshness runs).

The pipeline is watched from outside, without touching a service: a read_committed Kafka
consumer of the run's campaigns topic (no group) notes each record's timestamp (the relay's send
time: the producer stamps it) and when the record became visible to it (the relay's transaction
committed); a subscription to the announcement channels notes each projector notice's
`occurred_at` (the command handler's clock, before its transaction), `projected_at` (the
projector's, as it applied the batch) and when the notice arrived. The freshness client adds
each command's 201 and the 200 that carried its version. One machine, one wall clock.

Stages of a command (each a difference of two of those instants, percentiles over the run):

  handler → 201           occurred_at to the client's 201 (the transaction, the response)
  handler → relay sent    occurred_at to the Kafka record's timestamp (commit, change stream, relay)
  relay sent → visible    record timestamp to this consumer's fetch (the Kafka transaction's commit)
  relay sent → projected  record timestamp to projected_at (consumer fetch, the projector's batch)
  projected → announced   projected_at to the notice's arrival here (the script, pub/sub)
  announced → client 200  the notice here to the 200 (the query API's wake-up and answer)
  201 → 200               the freshness figure itself

The tap costs the bench client a consumer and a subscription (its CPU, and Kafka a fetch per
batch): off by default, so the CPU-per-command figure stays the services' own.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from bench.environment import topic_partitions
from events import Topics
from readmodels.keyspace import announcement_channels
from service_runtime.background import BackgroundLoops
from service_runtime.redis_client import connect_redis
from service_runtime.redis_pubsub import Message, Subscription
from service_runtime.settings import Settings

Key = tuple[str, int]  # (aggregate id, version)


@dataclass
class CommandTimes:
    """One command as the freshness client saw it, wall clock (time.time())."""

    aggregate_id: str
    version: int
    accepted: float
    seen: float | None = None


@dataclass
class StageTap:
    settings: Settings
    sent: dict[Key, tuple[float, float]] = field(default_factory=dict)  # record ts, visible here
    notices: dict[Key, tuple[float, float, float]] = field(default_factory=dict)  # occurred, projected, here
    # Ended by a stop even if aiokafka or redis-py swallows the cancellation.
    _loops: BackgroundLoops = field(default_factory=BackgroundLoops)
    _closers: list[Any] = field(default_factory=list)

    async def __aenter__(self) -> StageTap:
        settings = self.settings
        topic = Topics(settings.topic_prefix).campaigns
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        await consumer.start()
        self._closers.append(consumer.stop)
        partitions = await topic_partitions(consumer, topic)
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for partition in partitions:
            await consumer.position(partition)
        redis = connect_redis(settings)
        self._closers.append(redis.aclose)
        channels = announcement_channels(settings.redis_prefix, settings.read_model_buckets)
        subscription = Subscription(redis, shard_channels=channels)
        await subscription.open()
        self._closers.insert(0, subscription.aclose)
        self._loops.start(self._records(consumer), "bench-stage-records")
        self._loops.start(subscription.run(self._notice), "bench-stage-notices")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._loops.stop()
        for close in self._closers:
            with contextlib.suppress(Exception):
                await close()

    async def _records(self, consumer: AIOKafkaConsumer) -> None:
        while self._loops.running:
            batches = await consumer.getmany(timeout_ms=1000)
            here = time.time()
            for records in batches.values():
                for record in records:
                    version = dict(record.headers or ()).get("aggregate_version")
                    if record.key is None or version is None:
                        continue
                    self.sent[(record.key.decode(), int(version))] = (record.timestamp / 1000, here)

    def _notice(self, message: Message) -> None:
        here = time.time()
        try:
            notice = orjson.loads(message["data"])
            key = (str(notice["aggregate_id"]), int(notice["aggregate_version"]))
            occurred = datetime.fromisoformat(notice["occurred_at"]).timestamp()
            projected = datetime.fromisoformat(notice["projected_at"]).timestamp()
        except (ValueError, KeyError, TypeError):
            return
        self.notices[key] = (occurred, projected, here)

    def report(self, commands: list[CommandTimes]) -> dict[str, Any]:
        """Per stage: p50, p99 and max in ms over the commands seen at every point; and, for the
        slowest 1% by freshness, each stage's median (which stage the tail is made of)."""
        rows: list[dict[str, float]] = []
        for command in commands:
            key = (command.aggregate_id, command.version)
            if command.seen is None or key not in self.sent or key not in self.notices:
                continue
            sent_at, visible_at = self.sent[key]
            occurred, projected, announced = self.notices[key]
            rows.append(
                {
                    "handler → 201": command.accepted - occurred,
                    "handler → relay sent": sent_at - occurred,
                    "relay sent → visible": visible_at - sent_at,
                    "relay sent → projected": projected - sent_at,
                    "projected → announced": announced - projected,
                    "announced → client 200": command.seen - announced,
                    "201 → 200": command.seen - command.accepted,
                }
            )
        if not rows:
            return {"commands_traced": 0}
        stages = list(rows[0])
        tail = sorted(rows, key=lambda row: row["201 → 200"])[-max(1, len(rows) // 100) :]
        return {
            "commands_traced": len(rows),
            "commands": len(commands),
            "stages_ms": {
                name: {
                    "p50": _ms(_quantile([row[name] for row in rows], 50)),
                    "p99": _ms(_quantile([row[name] for row in rows], 99)),
                    "max": _ms(max(row[name] for row in rows)),
                }
                for name in stages
            },
            "slowest_5_ms": [{name: _ms(row[name]) for name in stages} for row in tail[-5:]],
            "slowest_1pct_median_ms": {
                name: _ms(statistics.median(row[name] for row in tail)) for name in stages
            },
        }


def _quantile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def lines(report: dict[str, Any]) -> list[str]:
    """The report as a few printable lines."""
    if not report.get("commands_traced"):
        return ["stages: no command traced end to end"]
    traced = f"{report['commands_traced']} of {report['commands']} commands"
    out = [f"stages over {traced} (ms: p50 / p99 / max; median of the slowest 1%)"]
    for name, figures in report["stages_ms"].items():
        out.append(
            f"  {name:<24} {figures['p50']:>8} {figures['p99']:>8} {figures['max']:>8}   "
            f"{report['slowest_1pct_median_ms'][name]:>8}"
        )
    return out
