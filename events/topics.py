"""The one place that knows topic names."""

from __future__ import annotations

from dataclasses import dataclass

USERS = "users.events"
CAMPAIGNS = "campaigns.events"
DLQ_SUFFIX = ".dlq"


@dataclass(frozen=True)
class Topics:
    """Topic names, optionally under a prefix (tests isolate themselves with one)."""

    prefix: str = ""

    @property
    def users(self) -> str:
        return f"{self.prefix}{USERS}"

    @property
    def campaigns(self) -> str:
        return f"{self.prefix}{CAMPAIGNS}"

    def for_aggregate(self, aggregate_type: str) -> str:
        if aggregate_type == "user":
            return self.users
        if aggregate_type == "campaign":
            return self.campaigns
        raise ValueError(f"no topic for aggregate type {aggregate_type!r}")

    @staticmethod
    def dlq(topic: str) -> str:
        return f"{topic}{DLQ_SUFFIX}"

    def all(self) -> list[str]:
        """Every topic the system uses, dead-letter topics included."""
        main = [self.users, self.campaigns]
        return main + [self.dlq(t) for t in main]
