"""The user profile read model: which fields each user event sets, and the fold of a user's events."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from events import EventEnvelope
from readmodels.json_form import fragment, json_time

USER_FIELDS: tuple[str, ...] = (
    "id",
    "email",
    "name",
    "roles",
    "version",
    "created_at",
    "updated_at",
    "last_login_at",
)


class NotAUserEvent(ValueError):
    """The projection was handed an event it has no rule for."""


def user_field_changes(envelope: EventEnvelope) -> dict[str, Any]:
    payload = envelope.payload
    kind = envelope.event_type
    occurred = json_time(envelope.occurred_at)
    changes: dict[str, Any]
    if kind == "UserRegistered":
        changes = {
            "id": envelope.aggregate_id,
            # E-mail addresses are unique case-insensitively; the profile shows the canonical form.
            "email": payload["email"].lower(),
            "name": payload["name"],
            "roles": payload["roles"],
            "created_at": occurred,
            "last_login_at": None,
        }
    elif kind == "UserLoggedIn":
        changes = {"last_login_at": occurred}
    elif kind == "UserRolesChanged":
        changes = {"roles": payload["roles"]}
    elif kind == "UserPasswordChanged":
        changes = {}  # nothing the profile shows but the time of the change
    else:
        raise NotAUserEvent(f"the user projection has no rule for {kind}")
    changes["updated_at"] = occurred
    return changes


def fold_user(envelopes: Iterable[EventEnvelope]) -> dict[str, Any] | None:
    """The profile document after these events (in version order), or None if there were none."""
    state: dict[str, Any] = {}
    for envelope in envelopes:
        state.update(user_field_changes(envelope))
        state["version"] = envelope.aggregate_version
    if not state:
        return None
    return {name: state[name] for name in USER_FIELDS if name in state}


def user_change_args(envelope: EventEnvelope) -> list[bytes | str]:
    """The Lua apply's arguments: pairs of document field and JSON fragment."""
    args: list[bytes | str] = []
    for name, value in user_field_changes(envelope).items():
        args += [name, fragment(value)]
    return args
