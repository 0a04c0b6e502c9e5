"""Dead-letter operations on the real Kafka and MongoDB: the read side's fixtures, and the operations."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from deadletters.bootstrap import DeadLetterOperations, dead_letter_operations
from service_runtime.settings import Settings
from tests.integration.read_side.conftest import producer, projectors, redis

__all__ = ["dlq", "producer", "projectors", "redis"]


@pytest.fixture
async def dlq(settings: Settings) -> AsyncIterator[DeadLetterOperations]:
    async with dead_letter_operations(settings) as operations:
        yield operations
