"""What each Redis projection takes from its group's spec (`readmodels.groups`): the aggregate
types it accepts and whether it announces the events it applies."""

from __future__ import annotations

from events import EventEnvelope
from readmodels.groups import SPECS_BY_NAME


class FromItsGroupSpec:
    """Base of the projections' dataclasses, whose `name` is their group's."""

    name: str

    @property
    def aggregate_types(self) -> frozenset[str]:
        return SPECS_BY_NAME[self.name].aggregate_types

    @property
    def announces(self) -> bool:
        # Each event is announced by exactly one projection (see `readmodels.groups`).
        return SPECS_BY_NAME[self.name].announces

    def accepts(self, envelope: EventEnvelope) -> bool:
        return envelope.aggregate_type in self.aggregate_types
