"""The highest version of each aggregate a replay has read: tells a catch-up pass what is new.

The decision is pure (`newer_in_order`); where the marks live is the store's business. A log
of millions of aggregates must not keep a mark per aggregate in memory (the replay's memory
would grow with the log): the MongoDB source keeps them in a spill file
(projectors/replay/adapters/seen_spill.py); `SeenVersions` keeps them in a dict, for tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

Mark = tuple[str, int]  # (aggregate id, version)


def newer_in_order(marks: Sequence[Mark], known: Mapping[str, int]) -> tuple[list[bool], dict[str, int]]:
    """For each mark in order, whether it is newer than `known` and than the marks before it in
    the same batch; and the raised highs (only aggregates whose high went up)."""
    raised: dict[str, int] = {}
    verdicts = []
    for aggregate_id, version in marks:
        newer = version > raised.get(aggregate_id, known.get(aggregate_id, 0))
        if newer:
            raised[aggregate_id] = version
        verdicts.append(newer)
    return verdicts, raised


class SeenVersionStore(Protocol):
    def keep_newer(self, marks: Sequence[Mark]) -> list[bool]:
        """Which marks are newer than what was read (recording them as read)."""
        ...

    def close(self) -> None: ...


class SeenVersions:
    """Per aggregate, the last version read from the source (events arrive in version order), in
    memory: a store for tests and small logs."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._last)

    def is_new(self, aggregate_id: str, version: int) -> bool:
        return version > self._last.get(aggregate_id, 0)

    def record(self, aggregate_id: str, version: int) -> None:
        if version > self._last.get(aggregate_id, 0):
            self._last[aggregate_id] = version

    def last(self, aggregate_id: str) -> int:
        return self._last.get(aggregate_id, 0)

    def keep_newer(self, marks: Sequence[Mark]) -> list[bool]:
        verdicts, raised = newer_in_order(marks, self._last)
        self._last.update(raised)
        return verdicts

    def close(self) -> None:
        self._last.clear()
