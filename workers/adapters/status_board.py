"""Worker status in Redis: a JSON heartbeat per worker (`readmodels.keyspace.worker_status_key`)."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from readmodels.keyspace import worker_status_key
from service_runtime.background import BackgroundLoops

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
# A status that is not refreshed disappears, so the monitor never shows a dead worker as running.
EXPIRY_HEARTBEATS = 3


class RedisStatusBoard:
    def __init__(self, redis: Redis, prefix: str, interval_seconds: float = HEARTBEAT_SECONDS) -> None:
        self.redis = redis
        self.prefix = prefix
        self.interval_seconds = interval_seconds
        self.instance = f"{socket.gethostname()}:{os.getpid()}"

    def key(self, worker: str) -> str:
        return worker_status_key(self.prefix, worker)

    async def write(self, worker: str, state: str, details: dict[str, Any]) -> None:
        status = {
            "worker": worker,
            "state": state,
            "instance": self.instance,
            "updated_at": time.time(),
            "heartbeat_seconds": self.interval_seconds,
            **details,
        }
        expiry = max(int(self.interval_seconds * EXPIRY_HEARTBEATS), 1)
        await self.redis.set(self.key(worker), orjson.dumps(status), ex=expiry)

    async def beat(self, reports: dict[str, Callable[[], dict[str, Any]]], loops: BackgroundLoops) -> None:
        """Write every worker's status each interval until `loops` stop; a Redis outage only logs."""
        while loops.running:
            for worker, details in reports.items():
                try:
                    await self.write(worker, "running", details())
                except RedisError as exc:
                    log.warning("heartbeat not written", extra={"worker": worker, "error": str(exc)})
            await loops.pause(self.interval_seconds)
