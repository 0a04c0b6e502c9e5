"""The scheduler: fires campaigns' due transitions through the normal command path.

A process manager with durable timers. While it holds the scheduler's lease (one scheduler at
a time; with no lease, always), each pass reads the timers due within `lookahead` (earliest
first), waits until the next one is due on the injected clock, and fires every timer due by then
(up to `fire_batch`) with `fire_due_transitions` on a fresh unit of work: the same handler code,
version checks and events as any command, one transaction per batch. Batches grow by themselves
under a burst: while `concurrency` batches are in flight, what falls due waits for the next one.
Nothing is kept only in memory: a timer leaves the store only in the transaction of the event it
caused (or as provably stale), so a scheduler that dies before or during a firing leaves the
timer to be fired, late, by the next holder of the lease; and a timer that fell due while no
scheduler ran is fired at once at the next start, its lateness recorded in the event
(`timer.lateness_ms`) and in the lateness histogram. The lease only spares work: a scheduler that
fires after losing it (paused past its term) fires nothing twice, the version check sees to that.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from command_api.application.campaign_handlers import fire_due_transition, fire_due_transitions
from command_api.application.commands import FireDueTransition, FireDueTransitions
from command_api.application.ports import CommandResult, UnitOfWork
from command_api.domain.campaign import DueTimer

log = logging.getLogger(__name__)

# The narrowest window a forward read spans (due times are kept to the millisecond).
MIN_READ_SPAN = timedelta(milliseconds=1)


class Clock(Protocol):
    def now(self) -> datetime: ...
    async def sleep(self, seconds: float) -> None: ...


class TimerStore(Protocol):
    async def read_due(
        self, until: datetime, limit: int, since: datetime | None = None
    ) -> list[DueTimer]: ...
    async def discard(self, timers: Sequence[DueTimer]) -> None: ...


class Lease(Protocol):
    """Who may fire: one scheduler at a time (`RelayLease` on the scheduler's lease document)."""

    @property
    def held(self) -> bool: ...
    async def keep(self) -> None: ...


class FiringObserver(Protocol):
    """Where each firing's outcome goes (metrics, the status report)."""

    def fired(self, timer: DueTimer, lateness: timedelta) -> None: ...
    def skipped(self, timer: DueTimer) -> None: ...
    def failed(self, timer: DueTimer, error: BaseException) -> None: ...


@dataclass(frozen=True)
class SchedulerConfig:
    lookahead_seconds: float = 1.0
    poll_seconds: float = 0.25
    batch_size: int = 500
    concurrency: int = 1
    fire_batch: int = 200
    firing_timeout_seconds: float = 10.0
    sweep_seconds: float = 5.0


@dataclass
class Scheduler:
    store: TimerStore
    unit_of_work: Callable[[], UnitOfWork]
    clock: Clock
    observer: FiringObserver
    config: SchedulerConfig = field(default_factory=SchedulerConfig)
    # None: this scheduler always fires (tests, a single scheduler by construction).
    lease: Lease | None = None
    _in_flight: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)
    # Timers read and waiting for their due time, earliest first (heap of (due_at, timer_id, timer)).
    _queue: list[tuple[datetime, str, DueTimer]] = field(default_factory=list, init=False, repr=False)
    # The ids of the timers held: queued, or in a firing not yet finished (a read finds a timer
    # until its firing commits; it must not be queued twice).
    _held: set[str] = field(default_factory=set, init=False, repr=False)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event, init=False, repr=False)
    # Forward reads: every timer due by `_read_through` has been read (None: sweep next); the next
    # reads a window of `_span` from there. A sweep (from the earliest due time) runs at least
    # every `sweep_seconds`.
    _read_through: datetime | None = field(default=None, init=False, repr=False)
    _span: timedelta = field(default=timedelta(seconds=1), init=False, repr=False)
    # Whether the last read was full, and whether it left more to read (it was full, or its
    # window ended before the lookahead).
    _read_full: bool = field(default=False, init=False, repr=False)
    _read_more: bool = field(default=False, init=False, repr=False)
    _swept_at: datetime | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._span = timedelta(seconds=self.config.lookahead_seconds)

    def next_due_at(self) -> datetime | None:
        """The earliest due time among the timers this scheduler holds (read, not yet fired)."""
        return self._queue[0][0] if self._queue else None

    def behind(self) -> bool:
        """Whether it works through a backlog: a timer it holds is due and waits for a firing."""
        return bool(self._queue) and self._queue[0][0] <= self.clock.now()

    @property
    def leading(self) -> bool:
        """Whether this scheduler may fire now (it holds the lease, or there is none)."""
        return self.lease is None or self.lease.held

    async def run(self) -> None:
        """Read and fire until cancelled: reading runs ahead of firing, so a read's round trip
        to the database never delays a firing that is due (the next window is read while the
        current one fires). With a lease, it is kept (taken, renewed) beside them."""
        background = [asyncio.create_task(self._keep_claiming(), name="scheduler-claims")]
        if self.lease is not None:
            background.append(asyncio.create_task(self.lease.keep(), name="scheduler-lease"))
        try:
            await self._keep_firing()
        finally:
            for task in [*background, *self._in_flight]:
                task.cancel()
            await asyncio.gather(*background, *self._in_flight, return_exceptions=True)

    async def run_once(self) -> int:
        """One read, then every timer read fired at its due time (on the injected clock).

        Returns how many timers the read brought; firings may still be in flight (see `drain`)."""
        claimed = await self.claim()
        while self._queue:
            # A timer sleep may end a little early: the firing must not find its timer not yet due.
            while (wait := (self._queue[0][0] - self.clock.now()).total_seconds()) > 0:
                await self.clock.sleep(wait)
            await self.fire_due()
        return claimed

    async def claim(self) -> int:
        """Read the timers due within the lookahead and queue those not held yet, by due time;
        how many were new (0 without the lease: then nothing is held).

        Reads go forward through due time in windows sized to hold about one read
        (`batch_size`): on SecantusDB a read decodes every timer of its due-time range before it
        limits, so a read of 500 from a backlog of thousands cost the server the whole backlog
        (301-441 ms with 9,000 in range, 34-44 ms with 600). Each forward read starts where the
        previous one ended (`_read_through`: every timer due by then has been read); a full read
        narrows the next window to the span that held it, a short one widens it. Timers behind
        that point (left after a failed firing, or written by a command meanwhile) are read by
        a sweep, a read from the earliest due time up to that point: when the forward reads have
        caught up with the lookahead, and `sweep_seconds` after the last sweep. (More than
        `batch_size` timers due at the very same moment are read as the first of them fire.)"""
        if not self.leading:
            self._let_go()
            return 0
        now = self.clock.now()
        until = now + timedelta(seconds=self.config.lookahead_seconds)
        through = self._read_through
        sweep = through is None or (
            self._swept_at is None or now - self._swept_at >= timedelta(seconds=self.config.sweep_seconds)
        )
        since: datetime | None
        if sweep:
            self._swept_at = now
            since, high = None, until if through is None else min(until, through)
        else:
            assert through is not None
            since, high = through, min(until, through + self._span)
        timers = await self.store.read_due(high, self.config.batch_size, since)
        full = len(timers) >= self.config.batch_size
        if full:
            latest = max(t.due_at for t in timers)
            # The due times that held a whole read: the next window spans as much.
            self._span = max(MIN_READ_SPAN, latest - min(t.due_at for t in timers))
            if sweep or through is None:
                # A full sweep sends the forward reads back to its end (they reread what is held,
                # skipping it, and find what was left behind it).
                self._read_through = latest if through is None else min(latest, through)
            else:
                self._read_through = latest
        elif high < until:
            # Every timer due by `high` is read; more may be due before the lookahead ends.
            self._read_through = high
            if not sweep:
                self._span = min(self._span * 2, timedelta(seconds=self.config.lookahead_seconds))
        else:
            # Caught up: the next read sweeps from the earliest due time.
            self._read_through = None
            self._span = timedelta(seconds=self.config.lookahead_seconds)
        self._read_full, self._read_more = full, full or high < until
        new = 0
        for timer in timers:
            if timer.timer_id not in self._held:
                self._held.add(timer.timer_id)
                heapq.heappush(self._queue, (timer.due_at, timer.timer_id, timer))
                new += 1
        if new:
            self._arrived.set()
        return new

    def _let_go(self) -> None:
        """Without the lease: drop the queued timers (the holder fires them); firings in flight
        finish (the version check keeps them from doubling anything)."""
        for _, timer_id, _timer in self._queue:
            self._held.discard(timer_id)
        self._queue.clear()
        self._read_through = None

    def _forget(self, timers: Sequence[DueTimer]) -> None:
        """Timers no longer held: the next read from the earliest due time finds them again if
        they are still in the store."""
        for timer in timers:
            self._held.discard(timer.timer_id)

    async def fire_due(self) -> None:
        """Start one firing of what is due now (up to `fire_batch`), once a slot is free."""
        while len(self._in_flight) >= self.config.concurrency:
            await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
        if not self.leading:
            self._let_go()
            return
        now = self.clock.now()
        batch: list[DueTimer] = []
        while self._queue and self._queue[0][0] <= now and len(batch) < self.config.fire_batch:
            batch.append(heapq.heappop(self._queue)[2])
        if batch:
            task = asyncio.create_task(self.fire(batch), name=f"fire-{batch[0].timer_id}")
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    def _plenty_queued(self) -> bool:
        return len(self._queue) >= 4 * self.config.batch_size

    async def _keep_claiming(self) -> None:
        while True:
            if self._plenty_queued() and self.leading:
                # A backlog: no read until the queue runs low. On SecantusDB a read decodes every
                # timer of its due-time range before it limits (500 of 9,000 overdue: 300-440 ms
                # of the server, 34-44 ms with 600 in range), so reading every poll while
                # thousands were overdue took the server from the firings.
                await self.clock.sleep(self.config.poll_seconds)
                continue
            try:
                new = await self.claim()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("reading due timers failed, trying again: %s", exc)
                new, self._read_full, self._read_more = 0, False, False
            # A full read that brought new timers means more is due soon, and a window that ended
            # before the lookahead leaves the rest of it to read: read again at once, unless
            # plenty is queued (a full read of timers all held already waits: they are more due
            # at one moment than a read takes, and fire before the rest is read).
            more = (self._read_full and new) or (self._read_more and not self._read_full)
            if not more or self._plenty_queued():
                await self.clock.sleep(self.config.poll_seconds)

    async def _keep_firing(self) -> None:
        while True:
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            wait = (self._queue[0][0] - self.clock.now()).total_seconds()
            if wait > 0:
                # Woken early by a new claim: it may hold an earlier timer.
                self._arrived.clear()
                # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation
                # that lands as the wait ends (service_runtime/background.py).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._arrived.wait()
                continue
            await self.fire_due()

    async def drain(self) -> None:
        """Wait for the firings in flight (tests, and a clean stop)."""
        while self._in_flight:
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)

    async def fire(self, timers: list[DueTimer]) -> None:
        """Fire these timers (one transaction), then report each and tidy what fired nothing; they
        are no longer held once it is done."""
        try:
            await self._fire(timers)
        finally:
            self._forget(timers)

    async def _fire(self, timers: list[DueTimer]) -> None:
        now = self.clock.now()
        results: list[CommandResult | None]
        try:
            # A transaction the server never answers must not hold the scheduler.
            async with asyncio.timeout(self.config.firing_timeout_seconds):
                if len(timers) == 1:
                    command = FireDueTransition(timer=timers[0], now=now)
                    results = [await fire_due_transition(command, self.unit_of_work())]
                else:
                    batch = FireDueTransitions(timers=timers, now=now)
                    results = await fire_due_transitions(batch, self.unit_of_work())
        except Exception as exc:
            log.warning("firing %d timer(s) failed; left for another try: %s", len(timers), exc)
            for timer in timers:
                self.observer.failed(timer, exc)
            # The next read sweeps from the earliest due time, and finds them again.
            self._read_through = None
            return
        stale: list[DueTimer] = []
        for timer, result in zip(timers, results, strict=True):
            if result is not None:
                self.observer.fired(timer, max(timedelta(0), now - timer.due_at))
                continue
            self.observer.skipped(timer)
            if now < timer.due_at:
                # Not due after all (a clock that ran behind): read again, fired later.
                self._read_through = None
            else:
                stale.append(timer)
        await self._tidy(self.store.discard, stale)

    @staticmethod
    async def _tidy(
        action: Callable[[Sequence[DueTimer]], Awaitable[None]], timers: Sequence[DueTimer]
    ) -> None:
        """Discard timers in one go; should that fail, they are read again and found stale again."""
        if not timers:
            return
        try:
            await action(timers)
        except Exception as exc:
            log.warning("could not tidy %d timer(s) (tried again when read again): %s", len(timers), exc)
