"""The order dead letters are re-driven in: once per original record, each aggregate's in version order.

- One original record dead-lettered by several consumer groups (the campaigns and the stats
  projections both refuse a bad campaign event) has one dead letter per group; it is produced
  back once, and every one of its dead letters counts as re-driven.
- An aggregate's records go back in `aggregate_version` order, whatever order the groups wrote
  them in; records without a version (not JSON, say) keep the order they were dead-lettered in,
  after the versioned ones of their aggregate.
- Aggregates keep the order in which each first appears in the dead-letter topic.
- `limit` counts records produced back; it never splits the copies of one original record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from deadletters.domain.records import DeadLetterSummary, Origin, RecordRef


@dataclass(frozen=True)
class Redrive:
    """One record to produce back, read from `ref`; `copies` are the other groups' dead letters of it."""

    ref: RecordRef
    origin: Origin
    aggregate_id: str | None
    aggregate_version: int | None
    copies: tuple[RecordRef, ...] = ()

    @property
    def refs(self) -> tuple[RecordRef, ...]:
        return (self.ref, *self.copies)


OriginKey = tuple[str, int, int] | RecordRef


def _origin_key(summary: DeadLetterSummary) -> OriginKey:
    origin = summary.origin
    if origin.partition is None or origin.offset is None:
        return summary.ref  # no origin recorded: each dead letter stands alone
    return (origin.topic, origin.partition, origin.offset)


def order_for_redrive(summaries: Iterable[DeadLetterSummary], limit: int | None = None) -> list[Redrive]:
    firsts: dict[OriginKey, DeadLetterSummary] = {}
    copies: dict[OriginKey, list[RecordRef]] = {}
    for summary in summaries:
        key = _origin_key(summary)
        if key in firsts:
            copies[key].append(summary.ref)
        else:
            firsts[key] = summary
            copies[key] = []

    by_aggregate: dict[str | None, list[tuple[int, DeadLetterSummary, OriginKey]]] = {}
    for position, (key, summary) in enumerate(firsts.items()):
        by_aggregate.setdefault(summary.aggregate_id, []).append((position, summary, key))

    ordered: list[Redrive] = []
    for entries in by_aggregate.values():
        entries.sort(key=lambda e: (e[1].aggregate_version is None, e[1].aggregate_version or 0, e[0]))
        for _, summary, key in entries:
            if limit is not None and len(ordered) >= limit:
                return ordered
            ordered.append(
                Redrive(
                    summary.ref,
                    summary.origin,
                    summary.aggregate_id,
                    summary.aggregate_version,
                    tuple(copies[key]),
                )
            )
    return ordered
