"""`campaigns serve scheduler`: fires campaigns' due transitions, until SIGTERM or cancellation.

Several may run at once: each claims its own timers (see `command_api.adapters.due_transitions`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import uuid

from pymongo.errors import PyMongoError
from redis.exceptions import RedisError

from command_api.adapters.relay_lease import new_holder_id
from command_api.bootstrap import SchedulerSide, open_scheduler_side
from events.envelope import utc_now
from service_runtime.logs import configure_logging, correlation_id
from service_runtime.settings import Settings

log = logging.getLogger(__name__)

STATUS_INTERVAL_SECONDS = 2.0


async def run(settings: Settings, *, instance: str | None = None) -> None:
    configure_logging("scheduler")
    correlation_id.set(f"scheduler-{uuid.uuid4().hex[:12]}")
    side = open_scheduler_side(settings, instance=instance or new_holder_id())
    log.info("scheduler %s starting", side.instance)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    tasks = {
        asyncio.create_task(side.scheduler.run(), name="scheduler"),
        asyncio.create_task(_report_status(side), name="scheduler-status"),
        asyncio.create_task(stop.wait(), name="scheduler-stop"),
    }
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        with contextlib.suppress(RedisError):
            await side.status.withdraw(side.instance)
        await side.close()
        log.info("scheduler %s stopped", side.instance)


async def _report_status(side: SchedulerSide) -> None:
    while True:
        try:
            now = utc_now()
            queue = await side.timers.queue(now)
            await side.status.publish(side.instance, side.report.status(queue, now))
        except (PyMongoError, RedisError) as exc:
            log.warning("scheduler status not reported: %s", exc)
        except Exception:
            log.exception("unexpected error reporting the scheduler status")
        await asyncio.sleep(STATUS_INTERVAL_SECONDS)
