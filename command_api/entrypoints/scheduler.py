"""`campaigns serve scheduler`: fires campaigns' due transitions, until SIGTERM or cancellation.

Several may run at once: the one holding the scheduler's lease fires, the others wait to take over
(see `command_api.adapters.due_transitions`). A clean stop hands the lease over at once.
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
from command_api.adapters.scheduler_status import QueueReading
from command_api.bootstrap import SchedulerSide, open_scheduler_side
from events.envelope import utc_now
from service_runtime.background import BackgroundLoops
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
    loops = BackgroundLoops(settings.background_stop_seconds)
    stopping = asyncio.create_task(stop.wait(), name="scheduler-stop")
    # Ends once done: not among the tasks whose end stops the scheduler.
    loops.start(_adopt_legacy_timers(side, loops), "scheduler-adopt")
    tasks = {
        loops.start(side.scheduler.run(), "scheduler"),
        loops.start(_report_status(side, settings, loops), "scheduler-status"),
        stopping,
    }
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        await loops.stop()  # bounded, and logs a loop that had failed
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        with contextlib.suppress(RedisError):
            await side.status.withdraw(side.instance)
        with contextlib.suppress(PyMongoError):
            await side.lease.release()
        await side.close()
        log.info("scheduler %s stopped", side.instance)


async def _report_status(side: SchedulerSide, settings: Settings, loops: BackgroundLoops) -> None:
    """Publish the status every `STATUS_INTERVAL_SECONDS`: the firings from memory, the timer queue
    from MongoDB every `scheduler_queue_seconds`, less often while a backlog fires (`QueueReading`)."""
    queue = QueueReading(
        read=lambda now, next_due_at: side.timers.queue(
            now,
            overdue_limit=settings.scheduler_overdue_count_limit,
            pending_limit=settings.scheduler_pending_count_limit,
            next_due_at=next_due_at,
        ),
        every=settings.scheduler_queue_seconds,
        deferred=settings.scheduler_queue_deferred_seconds,
    )
    while loops.running:
        try:
            now = utc_now()
            scheduler = side.scheduler
            current = await queue.current(now, scheduler.next_due_at(), behind=scheduler.behind())
            await side.status.publish(
                side.instance, side.report.status(current, now, leading=scheduler.leading)
            )
        except (PyMongoError, RedisError) as exc:
            log.warning("scheduler status not reported: %s", exc)
        except Exception:
            log.exception("unexpected error reporting the scheduler status")
        await loops.pause(STATUS_INTERVAL_SECONDS)


async def _adopt_legacy_timers(side: SchedulerSide, loops: BackgroundLoops) -> None:
    """Timers an earlier release kept in a collection of their own, moved into their campaigns
    once (tried again while MongoDB is unreachable)."""
    while loops.running:
        try:
            moved = await side.timers.adopt_legacy()
        except PyMongoError as exc:
            log.warning("moving the timers of an earlier release failed, trying again: %s", exc)
            await loops.pause(STATUS_INTERVAL_SECONDS)
            continue
        if moved:
            log.info("moved %d timer(s) of an earlier release into their campaigns", moved)
        return
