"""In-memory stand-ins for the dead-letter ports (unit tests of the use cases only)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from deadletters.application.ports import AuditEntry
from deadletters.domain.records import DeadLetter, RecordRef


class FakeLog:
    def __init__(self, records: Sequence[DeadLetter], page: int = 2) -> None:
        self.records = list(records)
        self.page = page
        self.fetches: list[list[RecordRef]] = []

    async def end_offsets(self, topic: str) -> dict[int, int]:
        ends: dict[int, int] = {}
        for r in self.records:
            if r.ref.topic == topic:
                ends[r.ref.partition] = max(ends.get(r.ref.partition, 0), r.ref.offset + 1)
        return ends

    async def scan(self, topic: str, start: Mapping[int, int]) -> AsyncIterator[Sequence[DeadLetter]]:
        mine = [
            r for r in self.records if r.ref.topic == topic and r.ref.offset >= start.get(r.ref.partition, 0)
        ]
        for i in range(0, len(mine), self.page):
            yield mine[i : i + self.page]

    async def fetch(self, refs: Collection[RecordRef]) -> dict[RecordRef, DeadLetter]:
        self.fetches.append(list(refs))
        return {r.ref: r for r in self.records if r.ref in refs}


class FakeRedriver:
    def __init__(self) -> None:
        self.produced: list[DeadLetter] = []

    async def produce(self, letters: Sequence[DeadLetter]) -> None:
        self.produced.extend(letters)


class FakeLedger:
    def __init__(self) -> None:
        self.marks: dict[RecordRef, str] = {}
        self.purges: dict[str, dict[int, int]] = {}
        self.audits: dict[str, dict[str, Any]] = {}
        self.ids = itertools.count(1)

    async def purged_below(self, topic: str) -> dict[int, int]:
        return dict(self.purges.get(topic, {}))

    async def mark_purged(self, topic: str, below: Mapping[int, int], audit_id: str) -> None:
        self.purges[topic] = dict(below)

    async def redriven(self, refs: Collection[RecordRef]) -> set[RecordRef]:
        return {ref for ref in refs if ref in self.marks}

    async def mark_redriven(self, refs: Collection[RecordRef], audit_id: str, at: datetime) -> None:
        for ref in refs:
            self.marks.setdefault(ref, audit_id)

    async def open_audit(self, entry: AuditEntry) -> str:
        audit_id = f"audit-{next(self.ids)}"
        self.audits[audit_id] = {
            "action": entry.action,
            "actor": entry.actor,
            "topic": entry.topic,
            "result": "running",
            **entry.details,
        }
        return audit_id

    async def close_audit(self, audit_id: str, result: str, details: Mapping[str, Any], at: datetime) -> None:
        self.audits[audit_id].update(result=result, **details)

    async def redrive_of(self, ref: RecordRef) -> dict[str, Any] | None:
        return {"audit_id": self.marks[ref]} if ref in self.marks else None
