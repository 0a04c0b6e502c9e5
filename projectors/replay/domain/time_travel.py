"""An aggregate as it was: the prefix of its events up to a version or a moment, folded.

The folds are the read models' own (`fold_campaign`, `fold_user`), the ones behind
`as_of_version` on the query API, so `inspect` shows exactly what the read model held then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from events import EventEnvelope
from readmodels.campaigns import fold_campaign
from readmodels.json_form import json_time
from readmodels.users import fold_user

FOLDS = {"campaign": fold_campaign, "user": fold_user}


@dataclass(frozen=True)
class AsOf:
    """At most one of the two; neither means the latest version."""

    version: int | None = None
    moment: datetime | None = None

    def __post_init__(self) -> None:
        if self.version is not None and self.moment is not None:
            raise ValueError("give a version or a moment, not both")
        if self.version is not None and self.version < 1:
            raise ValueError("versions start at 1")

    def select(self, events: Sequence[EventEnvelope]) -> list[EventEnvelope]:
        """The events applied by then, in version order (a prefix: state as of one version)."""
        if self.version is not None:
            return [e for e in events if e.aggregate_version <= self.version]
        if self.moment is not None:
            moment = self.moment if self.moment.tzinfo else self.moment.replace(tzinfo=UTC)
            selected: list[EventEnvelope] = []
            for envelope in events:
                if envelope.occurred_at > moment:
                    break
                selected.append(envelope)
            return selected
        return list(events)

    def describe(self) -> dict[str, Any]:
        if self.version is not None:
            return {"version": self.version}
        if self.moment is not None:
            moment = self.moment if self.moment.tzinfo else self.moment.replace(tzinfo=UTC)
            return {"timestamp": json_time(moment)}
        return {"latest": True}


def parse_moment(text: str) -> datetime:
    """ISO 8601; a time without an offset is taken as UTC (the events' own zone)."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Inspection:
    aggregate_type: str
    aggregate_id: str
    as_of: AsOf
    applied: list[EventEnvelope]
    latest_version: int

    @property
    def version(self) -> int:
        return self.applied[-1].aggregate_version if self.applied else 0

    @property
    def state(self) -> dict[str, Any] | None:
        return FOLDS[self.aggregate_type](self.applied)

    def as_json(self) -> dict[str, Any]:
        return {
            "aggregate_type": self.aggregate_type,
            "aggregate_id": self.aggregate_id,
            "as_of": self.as_of.describe(),
            "version": self.version,
            "latest_version": self.latest_version,
            "state": self.state,
            "events": [
                {
                    "version": e.aggregate_version,
                    "event_type": e.event_type,
                    "occurred_at": json_time(e.occurred_at),
                    "actor_id": e.actor_id,
                    "payload": e.payload,
                }
                for e in self.applied
            ],
        }


def inspect_events(aggregate_type: str, events: Sequence[EventEnvelope], as_of: AsOf) -> Inspection | None:
    """None when the aggregate has no events at all."""
    if not events:
        return None
    return Inspection(
        aggregate_type=aggregate_type,
        aggregate_id=events[0].aggregate_id,
        as_of=as_of,
        applied=as_of.select(events),
        latest_version=events[-1].aggregate_version,
    )
