"""Is this process able to do its job: MongoDB answers, and a Kafka broker answers."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaClient
from aiokafka.errors import KafkaError
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError

from command_api.adapters.mongo_schema import Document

CHECK_TIMEOUT_SECONDS = 2.0
# Every API worker answers probes; remembering Kafka's answer briefly keeps them from
# opening a broker connection per probe.
KAFKA_ANSWER_CACHE_SECONDS = 5.0


class Readiness:
    def __init__(self, db: AsyncDatabase[Document], kafka_bootstrap: str) -> None:
        self._db = db
        self._bootstrap = kafka_bootstrap
        self._kafka_answer: tuple[float, str | None] | None = None
        self._kafka_lock = asyncio.Lock()

    async def problems(self) -> dict[str, str]:
        """Each unready dependency with what is wrong; empty when all is well."""
        mongo, kafka = await asyncio.gather(self._mongo(), self._kafka())
        found = {}
        if mongo:
            found["mongodb"] = mongo
        if kafka:
            found["kafka"] = kafka
        return found

    async def _mongo(self) -> str | None:
        try:
            await asyncio.wait_for(self._db.command("ping"), CHECK_TIMEOUT_SECONDS)
        except (TimeoutError, PyMongoError) as exc:
            return f"MongoDB does not answer: {type(exc).__name__}"
        return None

    async def _kafka(self) -> str | None:
        async with self._kafka_lock:
            cached = self._kafka_answer
            if cached is not None and time.monotonic() - cached[0] < KAFKA_ANSWER_CACHE_SECONDS:
                return cached[1]
            answer = await self._ask_kafka()
            self._kafka_answer = (time.monotonic(), answer)
            return answer

    async def _ask_kafka(self) -> str | None:
        client = AIOKafkaClient(
            bootstrap_servers=self._bootstrap, request_timeout_ms=int(CHECK_TIMEOUT_SECONDS * 1000)
        )
        try:
            await asyncio.wait_for(client.bootstrap(), CHECK_TIMEOUT_SECONDS + 0.5)
        except (TimeoutError, KafkaError, OSError) as exc:
            return f"Kafka does not answer: {type(exc).__name__}"
        finally:
            await client.close()
        return None
