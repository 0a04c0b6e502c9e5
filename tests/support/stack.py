"""Test access to the local stack: started by the same code as `campaigns stack up`."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from events.topics import Topics
from service_runtime.settings import Settings
from tests.support.keys import key_settings

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "infra" / "local" / "stack.py"


def ensure_stack_up() -> None:
    """Start every server not yet running (a no-op for running ones); fail loudly if one can't."""
    result = subprocess.run(
        [sys.executable, str(STACK), "up"], cwd=REPO, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"the local stack did not start:\n{result.stdout}\n{result.stderr}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def isolated_settings(**overrides: object) -> Settings:
    """Settings whose database, key prefix and topics belong to one test alone."""
    tag = uuid.uuid4().hex[:10]
    values: dict[str, object] = {
        "app_env": "test",
        "mongo_db": f"test_{tag}",
        "redis_prefix": f"t{tag}",
        "topic_prefix": f"t{tag}.",
        "kafka_partitions": 3,
        "read_wait_seconds": 5.0,
        # A test's processes must not collide with a running system's metrics endpoints.
        "relay_metrics_port": free_port(),
        "projectors_metrics_port": free_port(),
        "workers_metrics_port": free_port(),
        "scheduler_metrics_port": free_port(),
        # Tests register many users from 127.0.0.1; the registration throttle is tested on its own.
        "register_max_per_address": 1_000_000,
        # This run's own signing key (tests/support/keys.py), never a committed one.
        **key_settings(),
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


async def create_topics(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(name, num_partitions=settings.kafka_partitions, replication_factor=1)
                for name in Topics(settings.topic_prefix).all()
            ]
        )
    finally:
        await admin.close()


async def delete_topics(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        mine = [t for t in existing if t.startswith(settings.topic_prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()
