"""What the domain refuses, and why, in terms an API can pass on to the caller."""

from __future__ import annotations

from dataclasses import dataclass


class DomainError(Exception):
    """A command the model refuses."""


@dataclass(frozen=True)
class FieldError:
    field: str
    reason: str


class InvalidInput(DomainError):
    """One or more values break an invariant; each bad field is named with its reason."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e.field}: {e.reason}" for e in errors))


class InvalidTransition(DomainError):
    """The aggregate's current state does not allow this command."""


class AggregateGone(DomainError):
    """The aggregate was deleted; it answers to no further command."""


class FieldChecks:
    """Collects every bad field of one command, so the caller learns all of them at once."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def fail(self, field: str, reason: str) -> None:
        self.errors.append(FieldError(field, reason))

    def raise_if_any(self) -> None:
        if self.errors:
            raise InvalidInput(self.errors)
