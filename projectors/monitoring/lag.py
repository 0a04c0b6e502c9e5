"""Lag, dead-letter and throughput samples from Kafka offsets: pure functions, no I/O.

A partition's lag is what its consumer group has not committed yet: from the committed offset
(or, with none, from the start of the log, where a new group begins: auto_offset_reset=earliest)
to the end offset. A dead-letter topic's count is its records still in the log (end - start).
Throughput is the difference of two samples' totals over the time between them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from events.envelope import utc_text
from readmodels.groups import MonitoredGroup

Partition = tuple[str, int]


@dataclass(frozen=True)
class Offsets:
    """What one round read from Kafka."""

    starts: Mapping[Partition, int]
    ends: Mapping[Partition, int]
    committed: Mapping[str, Mapping[Partition, int]]  # group id -> partition -> offset, -1 for none


def position(committed: int, start: int) -> int:
    """Where the group reads next: its committed offset, or the log start (none, or trimmed away)."""
    return max(committed, start) if committed >= 0 else start


def lag_sample(
    groups: Sequence[MonitoredGroup],
    partitions: Mapping[str, Sequence[int]],
    offsets: Offsets,
    dead_letter_topics: Sequence[str],
    published_topics: Sequence[str],
    sampled_at: datetime,
) -> dict[str, Any]:
    """The JSON sample: lag per group and partition, dead letters per topic, running totals."""
    described = []
    consumed: dict[str, int] = {}
    projected = 0
    for group in groups:
        committed = offsets.committed.get(group.group_id, {})
        rows = []
        total_lag = 0
        total_position = 0
        for topic in group.topics:
            for partition in sorted(partitions.get(topic, ())):
                key = (topic, partition)
                start, end = offsets.starts.get(key, 0), offsets.ends.get(key, 0)
                offset = committed.get(key, -1)
                at = position(offset, start)
                lag = max(0, end - at)
                rows.append(
                    {
                        "topic": topic,
                        "partition": partition,
                        "committed": offset if offset >= 0 else None,
                        "end": end,
                        "lag": lag,
                    }
                )
                total_lag += lag
                total_position += at
        consumed[group.name] = total_position
        if group.counts_projected:
            projected += total_position
        described.append(
            {
                "name": group.name,
                "kind": group.kind,
                "group_id": group.group_id,
                "lag": total_lag,
                "partitions": rows,
            }
        )
    return {
        "sampled_at": utc_text(sampled_at),
        "groups": described,
        "dead_letters": {topic: _records_in(topic, partitions, offsets) for topic in dead_letter_topics},
        "totals": {
            "published": sum(
                offsets.ends.get((topic, p), 0)
                for topic in published_topics
                for p in partitions.get(topic, ())
            ),
            "projected": projected,
            "consumed": consumed,
        },
    }


def _records_in(topic: str, partitions: Mapping[str, Sequence[int]], offsets: Offsets) -> int:
    return sum(
        max(0, offsets.ends.get((topic, p), 0) - offsets.starts.get((topic, p), 0))
        for p in partitions.get(topic, ())
    )


def throughput_sample(
    previous: Mapping[str, Any] | None, current: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Events published and projected between two lag samples, and per second; None without a
    usable previous sample (the first one, or one taken at the same moment)."""
    if previous is None or "totals" not in previous:
        return None
    seconds = (
        datetime.fromisoformat(current["sampled_at"]) - datetime.fromisoformat(previous["sampled_at"])
    ).total_seconds()
    if seconds <= 0:
        return None
    before, now = previous["totals"], current["totals"]
    # A recreated topic or a reset group moves offsets back: count nothing rather than a negative.
    published = max(0, now["published"] - before["published"])
    projected = max(0, now["projected"] - before["projected"])
    consumed = {
        name: max(0, count - before.get("consumed", {}).get(name, count))
        for name, count in now["consumed"].items()
    }
    return {
        "at": current["sampled_at"],
        "interval_seconds": round(seconds, 3),
        "published": published,
        "projected": projected,
        "published_per_second": round(published / seconds, 3),
        "projected_per_second": round(projected / seconds, 3),
        "consumed_per_second": {name: round(count / seconds, 3) for name, count in consumed.items()},
    }
