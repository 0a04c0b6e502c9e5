"""What the domain refuses, and why, in terms an API can pass on to the caller."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

# Bidirectional overrides and isolates: they make a name display as something it is not.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
CONTROL_CHARACTERS_REASON = "must not contain control characters (line breaks, tabs, NUL, bidi overrides)"


def has_control_characters(value: str) -> bool:
    """Whether `value` holds a C0/C1 control (CR, LF, tab, NUL, ...), a line or paragraph
    separator, or a bidi override: nothing a name needs, and each can break a header, a log line
    or a display."""
    return any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") or ch in _BIDI_CONTROLS for ch in value)


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
