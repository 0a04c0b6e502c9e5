"""What a run of one campaign's events does to its read model, planned in memory.

The projector reads a campaign's stored state once per batch, plans every event of that
campaign in the batch here (pure: no Redis), and writes the outcome in one guarded call that
only succeeds if the stored version and parked events are still what was read. The rules are
the version guard's, event by event, in the order given:

- version <= last applied: DUPLICATE, nothing changes;
- version == last + 1: APPLIED (or FAILED if the read model refuses it: nothing changes), and
  any parked versions that have become contiguous are applied after it (`drained`);
- version > last + 1: PARKED, kept aside until the missing version arrives.

A deleted campaign keeps a tombstone (its version and owner): later events advance the
version and change nothing else, and a redelivered creation is a duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from events import EventEnvelope
from projectors.domain.outcomes import EventOutcome, Outcome
from readmodels.campaigns import (
    CAMPAIGN_EVENT_TYPES,
    MissingCreation,
    NotACampaignEvent,
    next_campaign_state,
)


@dataclass(frozen=True, slots=True)
class StoredCampaign:
    """What the read model holds for one campaign before the batch."""

    version: int = 0
    state: dict[str, Any] | None = None  # the document's fields; None if never created or deleted
    deleted: bool = False
    owner: str = ""
    parked: dict[int, EventEnvelope] = field(default_factory=dict)


@dataclass
class CampaignPlan:
    before: StoredCampaign
    outcomes: list[EventOutcome]
    version: int
    state: dict[str, Any] | None
    deleted: bool
    owner: str
    applied: list[EventEnvelope]  # in version order, drained ones included: one notice each
    parked: dict[int, EventEnvelope]  # everything parked after the batch (kept and new)

    @property
    def changed(self) -> bool:
        return self.version != self.before.version or self.parked.keys() != self.before.parked.keys()

    @property
    def newly_parked(self) -> dict[int, EventEnvelope]:
        return {v: e for v, e in self.parked.items() if v not in self.before.parked}

    @property
    def unparked(self) -> list[int]:
        """Versions that were parked before the batch and were applied by it."""
        return [v for v in self.before.parked if v not in self.parked]


def plan_campaign(stored: StoredCampaign, events: list[EventEnvelope]) -> CampaignPlan:
    version, state, deleted, owner = stored.version, stored.state, stored.deleted, stored.owner
    parked = dict(stored.parked)
    applied: list[EventEnvelope] = []
    outcomes: list[EventOutcome] = []

    def apply(envelope: EventEnvelope) -> str | None:
        """Apply one contiguous event; the reason it was refused, or None."""
        nonlocal version, state, deleted, owner
        if not deleted:
            try:
                new = next_campaign_state(state, envelope)
            except (MissingCreation, NotACampaignEvent) as exc:
                return str(exc)
            if envelope.event_type == "CampaignDeleted":
                owner = (state or {}).get("owner_id", owner)
                state, deleted = None, True
            else:
                state, owner = new, new["owner_id"]
        version = envelope.aggregate_version
        applied.append(envelope)
        return None

    for envelope in events:
        v = envelope.aggregate_version
        if envelope.event_type not in CAMPAIGN_EVENT_TYPES:
            reason = f"the campaign projection has no rule for {envelope.event_type}"
            outcomes.append(EventOutcome(Outcome.FAILED, error=reason))
        elif v <= version:
            outcomes.append(EventOutcome(Outcome.DUPLICATE))
        elif v > version + 1:
            parked[v] = envelope
            outcomes.append(EventOutcome(Outcome.PARKED))
        elif (refused := apply(envelope)) is not None:
            outcomes.append(EventOutcome(Outcome.FAILED, error=refused))
        else:
            drained = 0
            # A refused parked event stays parked (and visible in the parked set).
            while (waiting := parked.get(version + 1)) is not None and apply(waiting) is None:
                del parked[waiting.aggregate_version]
                drained += 1
            outcomes.append(EventOutcome(Outcome.APPLIED, drained=drained))
    return CampaignPlan(stored, outcomes, version, state, deleted, owner, applied, parked)
