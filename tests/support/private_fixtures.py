"""Fixtures on the private stack (see `private_stack`): import them into a conftest by name.

`private_stack` is the running stack (started on first use, torn down by `release_private_stack`
after the last test that uses it, tests/conftest.py); `private_settings` gives a test its own
database, key prefix and topics on it; `private_services` runs the real services as processes
there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from service_runtime.redis_client import connect_redis
from service_runtime.settings import Settings
from tests.support.private_stack import SERVERS, PrivateStack, acquire_private_stack
from tests.support.services import RunningServices, free_port
from tests.support.stack import create_topics, remove_test_data


@pytest.fixture(scope="module")
def private_stack() -> PrivateStack:
    return acquire_private_stack()


@pytest.fixture
async def private_settings(private_stack: PrivateStack) -> AsyncIterator[Settings]:
    settings = private_stack.settings()
    await create_topics(settings)
    yield settings
    # A failed fault test may have left a server down: bring every one back before cleaning up.
    for server in SERVERS:
        if private_stack.pid(server) is None:
            private_stack.start(server)
    await remove_test_data(settings)


@pytest.fixture
async def private_redis(private_settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = connect_redis(private_settings)
    yield client
    await client.aclose()


@pytest.fixture
def private_services(private_settings: Settings, tmp_path: Path) -> Iterator[RunningServices]:
    """Services as processes on the private stack: `start([...])`, `wait_ready()`, `stop(name, sig)`."""
    settings = private_settings.model_copy(
        update={"command_api_port": free_port(), "query_api_port": free_port(), "api_workers": 1}
    )
    running = RunningServices(settings, tmp_path)
    yield running
    running.stop_all()
