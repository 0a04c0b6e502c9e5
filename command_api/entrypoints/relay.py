"""`campaigns serve relay`: the outbox relay process, until SIGTERM or cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import uuid
from pathlib import Path

from command_api.adapters.mongo_schema import mongo_client
from command_api.bootstrap import build_outbox_relay
from service_runtime.kafka_topics import require_topics
from service_runtime.logs import configure_logging, correlation_id
from service_runtime.redis_client import connect_redis
from service_runtime.settings import Settings

log = logging.getLogger(__name__)


async def run(settings: Settings) -> None:
    configure_logging("relay")
    _prepare_metrics_directory()
    correlation_id.set(f"relay-{uuid.uuid4().hex[:12]}")
    await require_topics(settings, "relay")
    mongo = mongo_client(settings)
    redis = connect_redis(settings)
    relay = build_outbox_relay(settings, mongo=mongo, redis=redis)
    log.info("relay %s starting", relay.holder)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    relaying = asyncio.create_task(relay.run(), name="outbox-relay")
    stopping = asyncio.create_task(stop.wait(), name="relay-stop")
    try:
        await asyncio.wait({relaying, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        relaying.cancel()
        # relay.run() releases its lease and closes its producer on the way out.
        with contextlib.suppress(asyncio.CancelledError):
            await relaying
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await mongo.close()
        await redis.aclose()
        log.info("relay %s stopped", relay.holder)


def _prepare_metrics_directory() -> None:
    # prometheus-client's multiprocess mode writes into this directory; it must exist.
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
