"""The highest version of each aggregate a replay has read: tells a catch-up pass what is new."""

from __future__ import annotations


class SeenVersions:
    """Per aggregate, the last version read from the source (events arrive in version order)."""

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
