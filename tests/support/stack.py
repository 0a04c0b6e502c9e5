"""Test access to the local stack: started by the same code as `campaigns stack up`."""

from __future__ import annotations

import asyncio
import fcntl
import socket
import subprocess
import sys
import uuid
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from pymongo import AsyncMongoClient

from service_runtime.kafka_topics import ensure_topics
from service_runtime.redis_client import connect_redis
from service_runtime.settings import Settings
from tests.support.keys import key_settings

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "infra" / "local" / "stack.py"


def ensure_stack_up() -> None:
    """Start every server not yet running (a no-op for running ones); fail loudly if one can't.

    `make test` runs pytest-xdist workers, each a session calling this at once: a lock beside the
    stack's directory lets one of them start what is missing while the others wait for it.
    """
    root = (REPO / Settings().local_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".tests-stack-up.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = subprocess.run(
            [sys.executable, str(STACK), "up"], cwd=REPO, capture_output=True, text=True, check=False
        )
    if result.returncode != 0:
        raise RuntimeError(f"the local stack did not start:\n{result.stdout}\n{result.stderr}")


# Ports this test process has handed out. The kernel may give the same free port to two binds
# in a row once the first socket is closed, and a test's settings pick eight at once (two APIs,
# six metrics servers): a service whose port another one of them took first finds it in use, and
# the other's server answers in its place (a metrics server answering the command API's URL).
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free now and not handed out before by this process."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


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
        "command_api_metrics_port": free_port(),
        "query_api_metrics_port": free_port(),
        # Tests and the bench send many commands and waits as one user; these limits are tested
        # on their own (tests/security/test_abuse_limits.py).
        "command_rate_per_second": 1_000_000.0,
        "command_burst": 1_000_000,
        "max_live_campaigns": 1_000_000,
        "min_version_waiters_per_user": 1_000_000,
        "min_version_waiters_per_worker": 1_000_000,
        # Tests register many users from 127.0.0.1; the registration throttle is tested on its own.
        "register_max_per_address": 1_000_000,
        # This run's own signing key (tests/support/keys.py), never a committed one.
        **key_settings(),
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


async def create_topics(settings: Settings) -> None:
    """This test's topics, shaped by its settings, as the services expect them at start."""
    await ensure_topics(settings)


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


async def drop_database(settings: Settings) -> None:
    client: AsyncMongoClient = AsyncMongoClient(settings.mongo_url)
    try:
        await client.drop_database(settings.mongo_db)
    finally:
        await client.close()


async def delete_keys(settings: Settings) -> None:
    """Every key under the settings' prefix (on a cluster, scan_iter walks every primary and
    delete splits the keys by slot)."""
    redis = connect_redis(settings)
    try:
        keys = [key async for key in redis.scan_iter(match=f"{settings.redis_prefix}:*", count=1000)]
        for start in range(0, len(keys), 1000):
            await redis.delete(*keys[start : start + 1000])
    finally:
        await redis.aclose()


async def remove_test_data(settings: Settings) -> None:
    """A test's topics, database and keys deleted, the three servers at once (one after the other
    cost every isolated test their sum); the first failure is raised once all three ended."""
    results = await asyncio.gather(
        delete_topics(settings), drop_database(settings), delete_keys(settings), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
