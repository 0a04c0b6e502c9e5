"""Group commit: commands that queue for a transaction share the next one.

A process runs at most `in_flight` command transactions at once (`mongo_transactions_in_flight`).
A command that finds a free place runs its transaction alone, in its own task, as it always did;
one that finds none queues, and when a transaction ends, everything queued by then (up to
`max_commands`) goes in the next one together: every command's state writes and events, in one
transaction. Each command's writes stay atomic with its events (they commit together or not at
all), now beside others'. An idle process pays nothing for this (nothing queues), and under load
the server is spared what it spends per transaction rather than per document: on the local
SecantusDB (a probe, 1,600 creates, four in flight) one command a transaction made 336 commands/s,
four a transaction 592, eight 746.

A group commits all its commands or none. When it is refused for a command's writes (a version
another command took, a taken e-mail or idempotency key), nothing of it was written: the others go
again together, and that command runs alone after them, so it gets its own answer, as it would
have had it come last (which it may as well have: they were all under way at once). One error
whose command cannot be told (any other the server answers) runs each command again alone. When
it fails on the server or the network (`ConnectionFailure`, after the transaction's own retries),
or its commit's outcome is unknown, every command of it gets that error: running each again alone
would only wait out the same timeout once per command, or answer a command whose commit did take
with a conflict against itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from prometheus_client import Counter, Histogram
from pymongo.errors import ConnectionFailure, PyMongoError

W = TypeVar("W")
# A transaction's wait between two attempts (a transient error): `GroupCommit.pause`.
Pause = Callable[[float], Awaitable[None]]

COMMANDS_PER_TRANSACTION = Histogram(
    "command_transaction_commands",
    "Commands committed in one MongoDB transaction (more than one: a group commit)",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
REFUSED = Counter(
    "command_transaction_groups_refused_total",
    "Group commits refused for a command's own writes (that command then runs alone, after the others)",
)


@dataclass(eq=False)
class _Queued(Generic[W]):
    writes: Sequence[W]
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class GroupCommit(Generic[W]):
    """One process's command transactions: `commit(writes)` returns once they are committed (or
    raises what the transaction raised). `transact` runs one transaction of the writes given,
    waiting between its attempts with the pause it is given; `refused` names the write an error
    of it refused, if it can tell."""

    def __init__(
        self,
        transact: Callable[[list[W], Pause], Awaitable[None]],
        *,
        in_flight: int,
        max_commands: int,
        refused: Callable[[BaseException], W | None] = lambda error: None,
    ) -> None:
        if in_flight < 1 or max_commands < 1:
            raise ValueError("in_flight and max_commands must be at least 1")
        self._transact = transact
        self._refused = refused
        self._limit = in_flight
        self._max_commands = max_commands
        self._running = 0
        self._queue: deque[_Queued[W]] = deque()
        # Transactions back from a pause, waiting for a place (given before any queued command's).
        self._resuming: deque[asyncio.Future[None]] = deque()
        self._groups: set[asyncio.Task[None]] = set()
        # Transactions run and commands committed in groups (for tests and curiosity).
        self.transactions = 0
        self.grouped_commands = 0

    @property
    def running(self) -> int:
        """Transactions in flight."""
        return self._running

    async def commit(self, writes: Sequence[W]) -> None:
        if self._running < self._limit and not self._queue and not self._resuming:
            self._running += 1
            try:
                await self._alone(writes)
            finally:
                self._release()
            return
        queued = _Queued(writes)
        self._queue.append(queued)
        try:
            await asyncio.shield(queued.done)
        except asyncio.CancelledError:
            if queued in self._queue:
                self._queue.remove(queued)  # never started: nothing of it is written
            else:  # in a group under way: it commits or not with the group; nobody waits now
                queued.done.add_done_callback(_consume)
            raise

    async def drain(self) -> None:
        """Wait for the groups under way and any they start (a clean stop, once no request is
        left: a command committing alone is its caller's to wait for)."""
        while self._groups:
            await asyncio.gather(*self._groups, return_exceptions=True)

    async def pause(self, seconds: float) -> None:
        """A transaction's wait before its next attempt: its place is given up meanwhile (a
        server answering write conflicts must not hold up every other command), then taken back
        ahead of any queued command."""
        self._release()
        resumed: asyncio.Future[None] | None = None
        try:
            await asyncio.sleep(seconds)
            if self._running < self._limit and not self._resuming:
                self._running += 1
                return
            resumed = asyncio.get_running_loop().create_future()
            self._resuming.append(resumed)
            await resumed  # `_start_next` counts the place as taken for it
        except asyncio.CancelledError:
            if resumed is None or resumed.cancelled():
                # Stopped without its place back: counted again, since its caller gives it up.
                if resumed is not None and resumed in self._resuming:
                    self._resuming.remove(resumed)
                self._running += 1
            raise

    async def _alone(self, writes: Sequence[W]) -> None:
        self.transactions += 1
        await self._transact(list(writes), self.pause)
        COMMANDS_PER_TRANSACTION.observe(1)

    def _release(self) -> None:
        self._running -= 1
        self._start_next()

    def _start_next(self) -> None:
        while self._resuming and self._running < self._limit:
            resumed = self._resuming.popleft()
            if not resumed.done():  # one cancelled meanwhile takes nothing
                self._running += 1
                resumed.set_result(None)
        while self._queue and self._running < self._limit:
            group = [self._queue.popleft() for _ in range(min(self._max_commands, len(self._queue)))]
            self._running += 1
            task = asyncio.create_task(self._run_group(group), name="group-commit")
            self._groups.add(task)
            task.add_done_callback(self._groups.discard)

    async def _run_group(self, group: list[_Queued[W]]) -> None:
        try:
            await self._group(group)
        except asyncio.CancelledError:  # the process stops: whoever still waits is told
            for queued in group:
                queued.done.cancel()
            raise
        finally:
            self._release()

    async def _group(self, group: list[_Queued[W]]) -> None:
        aside: list[_Queued[W]] = []
        while len(group) > 1:
            self.transactions += 1
            try:
                await self._transact([write for queued in group for write in queued.writes], self.pause)
            except Exception as exc:
                if _unanswered(exc):
                    for queued in (*group, *aside):
                        _fail(queued, exc)
                    return
                REFUSED.inc()
                refused = self._refused(exc)
                owner = next((q for q in group if any(w is refused for w in q.writes)), None)
                if owner is None:  # whose it was is not known: each alone
                    aside = [*group, *aside]
                    group = []
                else:  # the others again together; that one after them, alone
                    group = [queued for queued in group if queued is not owner]
                    aside.insert(0, owner)
            else:
                COMMANDS_PER_TRANSACTION.observe(len(group))
                self.grouped_commands += len(group)
                for queued in group:
                    if not queued.done.done():
                        queued.done.set_result(None)
                group = []
        for queued in (*group, *aside):
            await _settle(queued, self._alone(queued.writes))


def _unanswered(error: BaseException) -> bool:
    """The server or the network failed (after the transaction's own retries), or whether the
    commit took is unknown: no command of the group has an answer of its own to get by running
    again alone (and one whose commit did take would be answered a conflict with itself)."""
    return isinstance(error, ConnectionFailure) or (
        isinstance(error, PyMongoError) and error.has_error_label("UnknownTransactionCommitResult")
    )


async def _settle(queued: _Queued[W], transaction: Awaitable[None]) -> None:
    try:
        await transaction
    except Exception as exc:
        _fail(queued, exc)
    else:
        if not queued.done.done():
            queued.done.set_result(None)


def _fail(queued: _Queued[W], exc: BaseException) -> None:
    if not queued.done.done():
        queued.done.set_exception(exc)


def _consume(future: asyncio.Future[None]) -> None:
    with contextlib.suppress(BaseException):
        future.exception()
