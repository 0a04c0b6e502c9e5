"""A stale relay cannot publish: Kafka fences its transactional producer once a newer relay started.

On the real Kafka and MongoDB: a publisher paused inside its transaction cannot commit it after
another started, and a relay process SIGSTOPped past its lease publishes nothing after SIGCONT.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from command_api.adapters.kafka_publisher import (
    KafkaEventPublisher,
    Outgoing,
    ProducerFencedOut,
    kafka_producer_factory,
)
from command_api.adapters.mongo_schema import Document
from events import Topics, encode_event, from_log_document
from events.log import relay_backlog
from service_runtime.settings import Settings
from tests.integration.command_api.outbox import (
    consume,
    interleaved,
    log_documents,
    running_relay,
    versions_by_key,
    wait_until,
)
from tests.support.services import settings_env
from tests.support.stack import REPO


def outgoing(documents: list[Document]) -> list[Outgoing]:
    envelopes = [from_log_document(d) for d in documents]
    return [Outgoing(e, encode_event(e)) for e in envelopes]


async def test_a_publisher_paused_inside_its_transaction_cannot_commit_after_a_newer_one_started(
    settings: Settings,
) -> None:
    paused = asyncio.Event()
    resume = asyncio.Event()
    make = kafka_producer_factory(settings)

    def stalling_producer() -> AIOKafkaProducer:
        producer = make()
        commit = producer.commit_transaction

        async def commit_after_the_pause() -> None:
            paused.set()
            await resume.wait()  # as if the process were stopped here
            await commit()

        producer.commit_transaction = commit_after_the_pause  # type: ignore[method-assign]
        return producer

    topics = Topics(settings.topic_prefix)
    stale = KafkaEventPublisher(stalling_producer, topics)
    newer = KafkaEventPublisher(make, topics)
    stale_publishing = asyncio.create_task(
        stale.publish(outgoing(log_documents("a", range(1, 4))), lambda: None)
    )
    try:
        await asyncio.wait_for(paused.wait(), 30)
        # The newer relay starts its producer (same transactional.id) and publishes.
        await newer.publish(outgoing(log_documents("b", range(1, 3))), lambda: None)
        resume.set()
        with pytest.raises(ProducerFencedOut):
            await stale_publishing
        # And it stays fenced: its next batch goes nowhere either.
    finally:
        resume.set()
        await newer.close()
        await stale.close()

    received = await consume(settings, 2, settle=1.0)
    # Consumers read committed: nothing of the stale relay's transaction is visible.
    assert versions_by_key(received) == {"b": [1, 2]}


def _published_by(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(m.group(1)) for m in re.finditer(r"^relay_events_published_total\{[^}]*\} (\S+)$", text, re.M)
    )


async def _insert(db: AsyncDatabase[Document], aggregates: list[str], versions: range) -> None:
    """One version of every aggregate every 50 ms, as steady traffic would write them."""
    for version in versions:
        await db["events"].insert_many(interleaved(aggregates, range(version, version + 1)))
        await asyncio.sleep(0.05)


async def test_a_relay_process_stopped_past_its_lease_publishes_nothing_after_it_continues(
    settings: Settings, mongo: AsyncMongoClient[Document], db: AsyncDatabase[Document], tmp_path: Path
) -> None:
    quick = settings.model_copy(update={"relay_lease_seconds": 2.0, "relay_batch_size": 50})
    aggregates = [f"s{i}" for i in range(5)]
    output = tmp_path / "relay-a.log"
    with output.open("wb") as log_file:
        stale = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "launcher",
            "serve",
            "relay",
            cwd=REPO,
            env=settings_env(quick),
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
    try:
        await _insert(db, aggregates, range(1, 11))
        await wait_until(lambda: _all_published(db), 60, "relay A to publish the first versions")
        # A's own count, from its metrics endpoint (a stopped process cannot answer).
        by_a = _published_by(quick.relay_metrics_port)
        os.kill(stale.pid, signal.SIGSTOP)
        # Traffic goes on while A is stopped: A's change stream has these waiting for it.
        await _insert(db, aggregates, range(11, 31))  # 1 s
        await asyncio.sleep(quick.relay_lease_seconds * 1.5)  # A's lease runs out meanwhile
        # B's lease is longer than A's: with 2 s, a stall of this test's loop on a busy machine
        # let B's lease lapse, and A, running again, rightly took it (a new epoch) and published.
        # What is tested is that A publishes nothing while another holds the lease.
        steady = quick.model_copy(update={"relay_lease_seconds": 10.0})
        async with running_relay(steady, mongo, holder="relay-b") as newer:
            await wait_until(lambda: _holds(newer.lease.held), 20, "relay B to take the lease")
            await wait_until(lambda: _published(newer), 20, "relay B to publish")
            os.kill(stale.pid, signal.SIGCONT)
            await _insert(db, aggregates, range(31, 61))  # A runs again, beside B, under traffic
            await wait_until(lambda: _all_published(db), 60, "relay B to publish everything")
            assert _published_by(quick.relay_metrics_port) == by_a, "relay A published after it was stopped"
            assert stale.returncode is None, "relay A steps down and waits; it does not crash"
    finally:
        if stale.returncode is None:
            os.killpg(stale.pid, signal.SIGCONT)
            os.killpg(stale.pid, signal.SIGTERM)
            await asyncio.wait_for(stale.wait(), 20)

    log_text = output.read_text(errors="replace")
    assert "does not hold the lease" in log_text or "fenced" in log_text
    received = await consume(quick, len(aggregates) * 60, settle=1.0)
    by_key = versions_by_key(received)
    assert set(by_key) == set(aggregates)
    for key, versions in by_key.items():
        # Nothing lost and nothing out of order (by first arrival; a re-send may repeat some).
        assert list(dict.fromkeys(versions)) == list(range(1, 61)), key


async def _all_published(db: AsyncDatabase[Document]) -> bool:
    return await relay_backlog(db) == 0


async def _holds(value: bool) -> bool:
    return value


async def _published(relay: Any) -> bool:
    return bool(relay.published_total > 0)
