"""Group commit: commands queued for a transaction share the next one; each keeps its own outcome."""

from __future__ import annotations

import asyncio

import pytest
from pymongo.errors import AutoReconnect, OperationFailure

from command_api.adapters.group_commit import GroupCommit, Pause


class Refused(ValueError):
    def __init__(self, write: str) -> None:
        super().__init__(f"{write} refused")
        self.write = write  # the very object the command gave


class Transactions:
    """A fake `transact`: records each transaction's writes; the first waits for `release` when
    `hold` is set; a transaction holding any write in `refused` fails with `Refused` (a ValueError), and any
    transaction fails with `outage` while it is set."""

    def __init__(self, *, hold: bool = False, refused: frozenset[str] = frozenset()) -> None:
        self.runs: list[list[str]] = []
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self._hold = hold
        self._refused = refused
        self.outage: Exception | None = None

    async def __call__(self, writes: list[str], pause: Pause) -> None:
        self.runs.append(writes)
        self.started.set()
        if self._hold:
            self._hold = False
            await self.release.wait()
        if self.outage is not None:
            raise self.outage
        if refused := [w for w in writes if w in self._refused]:
            raise Refused(refused[0])


async def queued_behind_first(
    group: GroupCommit[str], db: Transactions, *commands: list[str]
) -> list[asyncio.Task[None]]:
    """The first command's transaction under way (held), then `commands` queued behind it."""
    first = asyncio.create_task(group.commit(["a1", "a2"]))
    await db.started.wait()
    tasks = [asyncio.create_task(group.commit(writes)) for writes in commands]
    await asyncio.sleep(0)
    return [first, *tasks]


async def test_a_command_with_room_runs_its_transaction_alone_at_once() -> None:
    db = Transactions()
    group = GroupCommit(db, in_flight=2, max_commands=32)
    await asyncio.gather(group.commit(["a"]), group.commit(["b"]))
    assert db.runs == [["a"], ["b"]]
    assert (group.transactions, group.grouped_commands) == (2, 0)


async def test_commands_queued_while_every_transaction_runs_commit_together_in_the_next() -> None:
    db = Transactions(hold=True)
    group = GroupCommit(db, in_flight=1, max_commands=32)
    tasks = await queued_behind_first(group, db, ["b1"], ["c1", "c2"], ["d1"])
    assert db.runs == [["a1", "a2"]]  # the others wait in the process
    db.release.set()
    await asyncio.gather(*tasks)
    assert db.runs == [["a1", "a2"], ["b1", "c1", "c2", "d1"]]
    assert (group.transactions, group.grouped_commands, group.running) == (2, 3, 0)


async def test_a_group_holds_at_most_max_commands() -> None:
    db = Transactions(hold=True)
    group = GroupCommit(db, in_flight=1, max_commands=2)
    tasks = await queued_behind_first(group, db, ["b"], ["c"], ["d"], ["e"], ["f"])
    db.release.set()
    await asyncio.gather(*tasks)
    assert db.runs[1:] == [["b", "c"], ["d", "e"], ["f"]]


async def test_a_group_refused_for_one_command_runs_each_alone_and_only_that_one_fails() -> None:
    db = Transactions(hold=True, refused=frozenset({"c1"}))
    group = GroupCommit(db, in_flight=1, max_commands=32)
    first, b, c, d = await queued_behind_first(group, db, ["b1"], ["c1"], ["d1"])
    db.release.set()
    await asyncio.gather(first, b, d)
    with pytest.raises(ValueError, match="c1 refused"):
        await c
    # The group's transaction failed as a whole (nothing of it written), then each went alone.
    assert db.runs[1:] == [["b1", "c1", "d1"], ["b1"], ["c1"], ["d1"]]
    assert group.grouped_commands == 0


async def test_a_command_whose_write_was_refused_runs_alone_after_the_others_commit_together() -> None:
    db = Transactions(hold=True, refused=frozenset({"c1"}))

    def refused(error: BaseException) -> str | None:
        return error.write if isinstance(error, Refused) else None

    group = GroupCommit(db, in_flight=1, max_commands=32, refused=refused)
    first, b, c, d = await queued_behind_first(group, db, ["b1"], ["c0", "c1"], ["d1"])
    db.release.set()
    await asyncio.gather(first, b, d)
    with pytest.raises(ValueError, match="c1 refused"):
        await c
    assert db.runs[1:] == [["b1", "c0", "c1", "d1"], ["b1", "d1"], ["c0", "c1"]]
    assert group.grouped_commands == 2


async def test_a_group_the_server_cannot_take_fails_every_command_without_running_each_again() -> None:
    db = Transactions(hold=True)
    group = GroupCommit(db, in_flight=1, max_commands=32)
    first, *queued = await queued_behind_first(group, db, ["b"], ["c"])
    db.outage = AutoReconnect("connection refused")
    db.release.set()
    for task in (first, *queued):
        with pytest.raises(AutoReconnect):
            await task
    assert db.runs == [["a1", "a2"], ["b", "c"]]


async def test_a_group_whose_commit_may_have_taken_fails_every_command_without_running_each_again() -> None:
    db = Transactions(hold=True)
    group = GroupCommit(db, in_flight=1, max_commands=32)
    first, *queued = await queued_behind_first(group, db, ["b"], ["c"])
    labels = {"errorLabels": ["UnknownTransactionCommitResult"]}
    db.outage = OperationFailure("commit outcome unknown", details=labels)
    db.release.set()
    for task in (first, *queued):
        with pytest.raises(OperationFailure, match="commit outcome unknown"):
            await task
    assert db.runs == [["a1", "a2"], ["b", "c"]]


async def test_a_queued_command_cancelled_before_its_turn_is_never_written() -> None:
    db = Transactions(hold=True)
    group = GroupCommit(db, in_flight=1, max_commands=32)
    first, b, c = await queued_behind_first(group, db, ["b"], ["c"])
    b.cancel()
    with pytest.raises(asyncio.CancelledError):
        await b
    db.release.set()
    await asyncio.gather(first, c)
    assert db.runs == [["a1", "a2"], ["c"]]


async def test_drain_waits_for_the_groups_under_way() -> None:
    db = Transactions(hold=True)
    group = GroupCommit(db, in_flight=1, max_commands=32)
    tasks = await queued_behind_first(group, db, ["b"], ["c"])
    db.release.set()
    await tasks[0]  # the first ends: the group of the other two starts
    await group.drain()
    assert db.runs[-1] == ["b", "c"]
    assert group.running == 0
    await asyncio.gather(*tasks)


def test_limits_below_one_are_refused() -> None:
    with pytest.raises(ValueError):
        GroupCommit(Transactions(), in_flight=0, max_commands=1)
    with pytest.raises(ValueError):
        GroupCommit(Transactions(), in_flight=1, max_commands=0)


async def test_a_transaction_waiting_to_retry_gives_its_place_up_and_takes_it_back_before_the_queue() -> None:
    order: list[str] = []
    b_release = asyncio.Event()

    async def transact(writes: list[str], pause: Pause) -> None:
        order.append(f"start {writes[0]}")
        if writes == ["a"]:
            await pause(0.05)  # a transient error: waits, then tries again
            order.append("retry a")
        if writes == ["b"]:
            await b_release.wait()

    group = GroupCommit(transact, in_flight=1, max_commands=32)
    a = asyncio.create_task(group.commit(["a"]))
    await asyncio.sleep(0.01)
    b = asyncio.create_task(group.commit(["b"]))  # a's place is free while it waits: b runs now
    await asyncio.sleep(0.1)  # a's wait is over, but b holds the place
    c = asyncio.create_task(group.commit(["c"]))
    await asyncio.sleep(0.01)
    assert order == ["start a", "start b"] and group.running == 1
    b_release.set()
    await asyncio.gather(a, b, c)
    assert order == ["start a", "start b", "retry a", "start c"]  # a back ahead of c
    assert group.running == 0


async def test_a_command_stopped_while_it_waits_to_retry_leaves_its_place_free() -> None:
    retried = asyncio.Event()

    async def transact(writes: list[str], pause: Pause) -> None:
        if writes == ["a"]:
            await pause(10)  # stopped during this wait
        retried.set()

    group = GroupCommit(transact, in_flight=1, max_commands=32)
    a = asyncio.create_task(group.commit(["a"]))
    await asyncio.sleep(0.01)
    assert group.running == 0  # given up for the wait
    a.cancel()
    with pytest.raises(asyncio.CancelledError):
        await a
    assert group.running == 0
    await group.commit(["b"])  # runs at once: the place is free, and counted once
    assert retried.is_set() and group.running == 0


async def test_a_command_stopped_while_it_waits_for_its_place_back_leaves_the_count_right() -> None:
    b_release = asyncio.Event()

    async def transact(writes: list[str], pause: Pause) -> None:
        if writes == ["a"]:
            await pause(0.02)
        if writes == ["b"]:
            await b_release.wait()

    group = GroupCommit(transact, in_flight=1, max_commands=32)
    a = asyncio.create_task(group.commit(["a"]))
    await asyncio.sleep(0.01)
    b = asyncio.create_task(group.commit(["b"]))  # takes the place a gave up
    await asyncio.sleep(0.05)  # a waits for its place back
    a.cancel()
    with pytest.raises(asyncio.CancelledError):
        await a
    assert group.running == 1  # b's
    b_release.set()
    await b
    assert group.running == 0
    await group.commit(["c"])
