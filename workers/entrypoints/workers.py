"""The workers process: welcome e-mails and campaign reports, as FastStream consumers on Kafka.

Each worker has its own consumer group, so instances scale out to the number of partitions. It
consumes batches (up to `worker_batch_size` records) and commits a batch's offsets once, after
every record in it is dealt with: done, skipped, or dead-lettered (ack policy NACK_ON_ERROR;
offsets are not auto-committed; a batch that fails is consumed again whole). Records of types a
worker does not handle (most of them) are skipped by their `event_type` header, undecoded. A
consumer takes the raw records rather than typed payloads because a record that does not decode
must still reach the dead-letter topic with its reason; `events.decode_event` is the validation,
and it upcasts old schema versions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRecord
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.message import StreamMessage
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from events import EventEnvelope, Topics
from readmodels.groups import NOTIFICATIONS_GROUP, REPORTS_GROUP, worker_group
from service_runtime.background import BackgroundLoops
from service_runtime.kafka_batches import NoCast, tolerant_headers, wake_at_once
from service_runtime.kafka_topics import require_topics
from service_runtime.logs import configure_logging
from service_runtime.redis_client import connect_redis
from service_runtime.settings import Settings
from workers.adapters.dead_letters import KafkaDeadLetters
from workers.adapters.event_log import MongoEventLog
from workers.adapters.report_store import RedisReportStore
from workers.adapters.send_records import RedisSendRecords
from workers.adapters.smtp import SmtpMailer
from workers.adapters.status_board import RedisStatusBoard
from workers.application.campaign_reports import CampaignReports
from workers.application.event_worker import Delivery, EventWorker, WorkerStats
from workers.application.retries import Backoff
from workers.application.welcome_emails import WelcomeEmails

log = logging.getLogger(__name__)


@dataclass
class WorkersProcess:
    """Everything the workers hold open, built from settings in one place."""

    broker: KafkaBroker
    redis: Redis
    mongo: AsyncMongoClient[dict[str, Any]]
    status: RedisStatusBoard
    workers: dict[str, tuple[EventWorker, str, str]]  # name -> (worker, topic, consumer group)

    def status_of(self, name: str) -> dict[str, Any]:
        worker, topic, group = self.workers[name]
        return {"topic": topic, "group_id": group, **worker.stats.snapshot()}


def build_workers(settings: Settings) -> WorkersProcess:
    topics = Topics(settings.topic_prefix)
    broker = KafkaBroker(
        settings.kafka_bootstrap_servers,
        client_id="campaigns-workers",
        acks="all",
        enable_idempotence=True,
        metadata_max_age_ms=settings.kafka_metadata_max_age_ms,
        # Through the root logger, so FastStream's lines are JSON like ours; its per-message
        # "received/processed" lines at debug, or they would drown the rest.
        logger=logging.getLogger("faststream.workers"),
        log_level=logging.DEBUG,
    )
    redis = connect_redis(settings)
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url)
    backoff = Backoff(settings.worker_backoff_seconds, settings.worker_max_attempts)
    notifications_group = worker_group(settings, NOTIFICATIONS_GROUP)
    reports_group = worker_group(settings, REPORTS_GROUP)

    def dead_letters(group: str, topic: str) -> KafkaDeadLetters:
        dlq = Topics.dlq(topic)
        publisher = broker.publisher(
            dlq,
            title=f"{dlq}:publish:{group}",
            description=f"Events {group} could not handle: the original record, reason in dlq_* headers.",
            schema=EventEnvelope,
        )
        return KafkaDeadLetters(group, {dlq: publisher})

    notifications = EventWorker(
        WelcomeEmails(
            SmtpMailer(settings.smtp_host, settings.smtp_port),
            RedisSendRecords(redis, settings.redis_prefix, "welcome"),
            settings.smtp_sender,
        ),
        dead_letters(notifications_group, topics.users),
        backoff,
        WorkerStats("notifications"),
    )
    reports = EventWorker(
        CampaignReports(
            MongoEventLog(mongo, settings.mongo_db), RedisReportStore(redis, settings.redis_prefix)
        ),
        dead_letters(reports_group, topics.campaigns),
        backoff,
        WorkerStats("reports"),
    )

    # A new consumer group starts at the beginning of its topic, so events published before the
    # workers first ran are not skipped; send records and version-guarded reports make that safe.
    # Should even the dead-letter publish fail, the record is consumed again (nack seeks back to
    # it); the pause keeps that from spinning while Kafka is away.
    retry_pause = settings.worker_backoff_seconds

    def subscribe(worker: EventWorker, topic: str, group: str, description: str) -> None:
        subscriber = broker.subscriber(
            topic,
            group_id=group,
            batch=True,
            batch_timeout_ms=settings.consumer_poll_ms,
            # No reader waits on a worker within the second: fetched in batches (see the setting).
            fetch_min_bytes=settings.batch_fetch_min_bytes,
            fetch_max_wait_ms=settings.batch_fetch_wait_ms,
            max_records=settings.worker_batch_size,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
            ack_policy=AckPolicy.NACK_ON_ERROR,
            parser=tolerant_headers,
            decoder=_deliveries,
            title=f"{topic}:subscribe:{group}",
            description=description,
        )

        async def consume(deliveries: NoCast[list[Delivery]]) -> None:
            try:
                await worker.consume_batch(deliveries)
            except Exception:
                await asyncio.sleep(retry_pause)
                raise

        consume.__name__ = consume.__qualname__ = f"consume_{worker.handler.name}"
        subscriber(consume)
        wake_at_once(subscriber)

    subscribe(
        notifications,
        topics.users,
        notifications_group,
        "Sends each new user one welcome e-mail (UserRegistered); other types are skipped.",
    )
    subscribe(
        reports,
        topics.campaigns,
        reports_group,
        "Builds the report of each completed campaign (CampaignCompleted) from the events log.",
    )

    return WorkersProcess(
        broker=broker,
        redis=redis,
        mongo=mongo,
        status=RedisStatusBoard(redis, settings.redis_prefix),
        workers={
            "notifications": (notifications, topics.users, notifications_group),
            "reports": (reports, topics.campaigns, reports_group),
        },
    )


async def _deliveries(message: StreamMessage[Any], original: Callable[..., Awaitable[Any]]) -> list[Delivery]:
    """The batch as deliveries, values undecoded (each is decoded, skipped or dead-lettered alone)."""
    raw: tuple[ConsumerRecord[bytes, bytes], ...] = message.raw_message
    return [
        Delivery(
            topic=r.topic,
            partition=r.partition,
            offset=r.offset,
            key=r.key,
            value=r.value or b"",
            headers={k: v.decode("utf-8", "replace") for k, v in (r.headers or ())},
        )
        for r in raw
    ]


async def serve(settings: Settings) -> None:
    """Run both workers until cancelled; then stop consuming, finish in-flight work, close clients."""
    await require_topics(settings, "workers")
    process = build_workers(settings)
    loops = BackgroundLoops(settings.background_stop_seconds)
    try:
        await process.broker.start()
        reports = {name: _reporter(process, name) for name in process.workers}
        loops.start(process.status.beat(reports, loops), "workers-heartbeat")
        log.info("workers started", extra={"workers": sorted(process.workers)})
        await asyncio.Event().wait()
    finally:
        await loops.stop()
        # Stopping the broker waits (bounded) for the record in hand, whose offset is then
        # committed; a record cut off is not committed and is consumed again after restart.
        await process.broker.stop()
        for name in process.workers:
            with contextlib.suppress(Exception):  # best effort: the status expires anyway
                await process.status.write(name, "stopped", process.status_of(name))
        await process.redis.aclose()
        await process.mongo.close()
        log.info("workers stopped")


def _reporter(process: WorkersProcess, name: str) -> Any:
    return lambda: process.status_of(name)


async def run(settings: Settings) -> None:
    """`campaigns serve workers`: run until SIGTERM or SIGINT, then shut down cleanly."""
    configure_logging("workers")
    _faststream_logs_as_json()
    _prepare_metrics_dir()
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(serve(settings))
    signalled: list[int] = []

    def stop(sig: int) -> None:
        log.info("stopping on signal", extra={"signal": signal.Signals(sig).name})
        signalled.append(sig)
        task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig)
    try:
        await task
    except asyncio.CancelledError:
        if not signalled:
            raise
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _faststream_logs_as_json() -> None:
    # FastStream's own logger writes coloured text to stderr and does not propagate; through the
    # root handler its lines (partition assignments, errors) become JSON like every other line.
    library = logging.getLogger("faststream")
    library.handlers.clear()
    library.propagate = True


def _prepare_metrics_dir() -> None:
    # prometheus-client's multiprocess mode (set by the supervisor) writes into this directory and
    # fails if it is missing.
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
