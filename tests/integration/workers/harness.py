"""Driving the workers on the real stack: run them in-process, produce to Kafka, read what came out."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import REGISTRY

from service_runtime.settings import Settings
from tests.support.stack import REPO
from tests.support.waiting import eventually
from workers.entrypoints.workers import serve

SMTP_SINK = REPO / "infra" / "local" / "smtp_sink.py"


@contextlib.asynccontextmanager
async def running_workers(settings: Settings) -> AsyncIterator[None]:
    """Both workers, as `campaigns serve workers` runs them, until the block ends."""
    task = asyncio.create_task(serve(settings))
    try:
        await asyncio.sleep(0)
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def produce(settings: Settings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Send (key, value) records in order, as the outbox relay does (idempotent, acks=all)."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key, headers=[("source", b"test")])
    finally:
        await producer.stop()


async def committed_offsets(settings: Settings, group: str, topic: str) -> int:
    """How many records of `topic` the group has committed (offsets summed over partitions)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0)


async def read_topic(settings: Settings, topic: str, expected: int, within_seconds: float = 20) -> list[Any]:
    """The first `expected` records of `topic` (every partition, from the beginning)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        await consumer.seek_to_beginning()
        records: list[Any] = []
        deadline = time.monotonic() + within_seconds
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                records.extend(messages)
        return records
    finally:
        await consumer.stop()


async def wait_for(
    condition: Callable[[], Awaitable[bool]], within_seconds: float = 30, what: str = "condition"
) -> None:
    await eventually(condition, timeout=within_seconds, interval=0.2, what=what)


def mails_to(maildir: Path, recipient: str) -> list[str]:
    """The messages a sink in `maildir` received for `recipient`, as text."""
    index = maildir / "index.jsonl"
    if not index.exists():
        return []
    found = []
    for line in index.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if recipient in record["rcpt_tos"]:
            found.append((maildir / f"{record['id']}.eml").read_text())
    return found


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@contextlib.asynccontextmanager
async def smtp_sink(port: int, maildir: Path) -> AsyncIterator[None]:
    """This test's own SMTP sink (the stack's sink program) on `port`, until the block ends."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SMTP_SINK),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--maildir",
        str(maildir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        banner = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert "SMTP sink on" in banner, banner  # printed once it listens
        yield
    finally:
        process.terminate()
        await process.wait()
