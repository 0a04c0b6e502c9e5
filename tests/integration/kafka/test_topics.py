"""Topics as settings on the real Kafka: created with their shape, checked at start, reconciled."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from events.topics import Topics
from service_runtime.kafka_topics import (
    TopicsMismatch,
    check_topics,
    describe_topics,
    reconcile_topics,
)
from service_runtime.settings import Settings
from tests.support.services import settings_env
from tests.support.stack import REPO, delete_topics


async def test_created_topics_have_the_configured_shape(settings: Settings) -> None:
    states = await describe_topics(settings)
    assert [s.name for s in states] == Topics(settings.topic_prefix).all()
    for state in states:
        assert (state.partitions, state.replication_factor) == (
            settings.kafka_partitions,
            settings.kafka_replication_factor,
        )
        assert state.min_insync_replicas == settings.kafka_min_insync_replicas
    await check_topics(settings, "test")


async def test_check_names_the_topic_the_expected_and_the_actual_count(settings: Settings) -> None:
    more = settings.model_copy(update={"kafka_partitions": settings.kafka_partitions + 2})
    with pytest.raises(TopicsMismatch) as raised:
        await check_topics(more, "projectors")
    message = str(raised.value)
    campaigns = Topics(settings.topic_prefix).campaigns
    assert message.startswith("projectors refuses to start")
    assert (
        f"topic {campaigns} has {settings.kafka_partitions} partitions, expected {more.kafka_partitions}"
        in message
    )

    replicated = settings.model_copy(update={"kafka_replication_factor": 3, "kafka_min_insync_replicas": 2})
    with pytest.raises(TopicsMismatch, match=f"topic {campaigns} has replication factor 1, expected 3"):
        await check_topics(replicated, "relay")


async def test_reconcile_creates_the_missing_and_grows_partitions(settings: Settings) -> None:
    fresh = settings.model_copy(update={"topic_prefix": f"{settings.topic_prefix}fresh."})
    try:
        todo, states = await reconcile_topics(fresh, apply=True)
        assert sorted(todo.create) == sorted(Topics(fresh.topic_prefix).all())
        assert all(s.partitions == fresh.kafka_partitions for s in states)
        await check_topics(fresh, "test")
    finally:
        await delete_topics(fresh)

    grown = settings.model_copy(update={"kafka_partitions": settings.kafka_partitions * 2})
    todo, states = await reconcile_topics(grown, apply=False)
    assert set(todo.grow) == set(Topics(settings.topic_prefix).all())
    assert all(s.partitions == settings.kafka_partitions for s in states), "a dry run changes nothing"
    todo, states = await reconcile_topics(grown, apply=True)
    assert all(s.partitions == grown.kafka_partitions for s in states)
    await check_topics(grown, "test")

    # Back to fewer in the settings: reported, never shrunk.
    todo, states = await reconcile_topics(settings, apply=True)
    assert not todo.grow and len(todo.refused) == len(states)
    assert all(s.partitions == grown.kafka_partitions for s in states)


def test_the_command_shows_and_reconciles(settings: Settings) -> None:
    grown = settings.model_copy(update={"kafka_partitions": settings.kafka_partitions + 1})

    def run(*options: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "launcher", "kafka", "topics", "--json", *options],
            cwd=REPO,
            env=settings_env(grown),
            capture_output=True,
            text=True,
            timeout=60,
        )

    shown = run()
    assert shown.returncode == 1, shown.stderr
    report = json.loads(shown.stdout)
    assert report["applied"] is False and len(report["plan"]["grow"]) == 4
    assert any("expected" in problem for problem in report["problems"])

    reconciled = run("--reconcile")
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    assert {t["partitions"] for t in json.loads(reconciled.stdout)["topics"]} == {grown.kafka_partitions}
    assert run().returncode == 0


def test_a_service_refuses_to_start_on_a_mismatch(settings: Settings) -> None:
    more = settings.model_copy(update={"kafka_partitions": settings.kafka_partitions + 3})
    started = subprocess.run(
        [sys.executable, "-m", "launcher", "serve", "workers"],
        cwd=REPO,
        env=settings_env(more),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode != 0
    users = Topics(settings.topic_prefix).users
    assert (
        f"workers refuses to start: topic {users} has {settings.kafka_partitions} partitions, "
        f"expected {more.kafka_partitions}"
    ) in started.stderr
