"""The campaign read model: which fields each campaign event sets, its sort keys, and the fold.

The same `campaign_field_changes` drives both the atomic Redis apply (through `CampaignChange`)
and the in-memory fold that serves `as_of_version`, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from events import EventEnvelope
from projectors.domain.json_form import epoch_millis, fragment, json_time

# The order of the fields in every campaign document (Redis assembles documents in this order).
CAMPAIGN_FIELDS: tuple[str, ...] = (
    "id",
    "owner_id",
    "name",
    "description",
    "channel",
    "budget",
    "starts_at",
    "ends_at",
    "tags",
    "status",
    "version",
    "created_at",
    "updated_at",
)
SORT_KEYS: tuple[str, ...] = ("created", "updated", "name")
# Filters the list query can combine; each has one sorted index per sort key.
FILTER_DIMENSIONS: tuple[str, ...] = ("status", "channel", "tag", "owner")

_CREATED_FIELDS = ("owner_id", "name", "description", "channel", "budget", "starts_at", "ends_at", "tags")
_STATUS_AFTER = {
    "CampaignActivated": "active",
    "CampaignPaused": "paused",
    "CampaignCompleted": "completed",
    "CampaignDeleted": "deleted",
}
# Separates the sort value from the id in an index member: below every printable character,
# so "abc" sorts before "abcd" whatever follows.
MEMBER_SEPARATOR = b"\x00"


class NotACampaignEvent(ValueError):
    """The projection was handed an event it has no rule for."""


def campaign_field_changes(envelope: EventEnvelope) -> dict[str, Any]:
    """The document fields (JSON form) this event sets; `version` is the envelope's own."""
    payload = envelope.payload
    kind = envelope.event_type
    changes: dict[str, Any]
    if kind == "CampaignCreated":
        changes = {"id": envelope.aggregate_id, "status": "draft"}
        changes.update((name, payload[name]) for name in _CREATED_FIELDS)
        changes["created_at"] = json_time(envelope.occurred_at)
    elif kind == "CampaignUpdated":
        # Absent fields arrive as None after validation: only the ones present changed.
        changes = {name: value for name, value in payload.items() if value is not None}
    elif kind in _STATUS_AFTER:
        changes = {"status": _STATUS_AFTER[kind]}
    else:
        raise NotACampaignEvent(f"the campaign projection has no rule for {kind}")
    changes["updated_at"] = json_time(envelope.occurred_at)
    return changes


def fold_campaign(envelopes: Iterable[EventEnvelope]) -> dict[str, Any] | None:
    """The campaign document after these events (in version order), or None if there were none."""
    state: dict[str, Any] = {}
    for envelope in envelopes:
        state.update(campaign_field_changes(envelope))
        state["version"] = envelope.aggregate_version
    if not state:
        return None
    return {name: state[name] for name in CAMPAIGN_FIELDS if name in state}


def campaign_document(state: dict[str, Any]) -> bytes:
    """The document's JSON bytes, byte for byte what the Redis projection stores."""
    return orjson.dumps({name: state[name] for name in CAMPAIGN_FIELDS if name in state})


def sort_member(sort_value: str, campaign_id: str) -> bytes:
    return sort_value.encode() + MEMBER_SEPARATOR + campaign_id.encode()


def time_sort_value(millis: int) -> str:
    # Fixed width, so the lexicographic order of the index is the numeric order.
    return f"{millis:013d}"


def name_sort_value(name: str) -> str:
    return name.casefold()


@dataclass(frozen=True)
class CampaignChange:
    """What one event does to the campaign read model, as the Lua apply expects it.

    `fields` are JSON fragments of document fields; `index` the raw values the filter
    indexes are keyed by; `sort_members` the members of the sorted indexes. Only what the
    event changes is present: Redis merges it into what is stored.
    """

    delete: bool
    fields: dict[str, bytes]
    index: dict[str, str]
    sort_members: dict[str, bytes]

    def script_args(self) -> list[bytes | str]:
        if self.delete:
            return ["delete"]
        args: list[bytes | str] = ["upsert"]
        for name, value in self.fields.items():
            args += [f"f:{name}", value]
        for name, raw in self.index.items():
            args += [f"x:{name}", raw]
        for sort, member in self.sort_members.items():
            args += [f"s:{sort}", member]
        return args


def campaign_change(envelope: EventEnvelope) -> CampaignChange:
    changes = campaign_field_changes(envelope)
    if envelope.event_type == "CampaignDeleted":
        return CampaignChange(delete=True, fields={}, index={}, sort_members={})
    campaign_id = envelope.aggregate_id
    index: dict[str, str] = {}
    if "status" in changes:
        index["status"] = changes["status"]
    if "channel" in changes:
        index["channel"] = changes["channel"]
    if "owner_id" in changes:
        index["owner"] = changes["owner_id"]
    if "tags" in changes:
        index["tags"] = orjson.dumps(changes["tags"]).decode()
    millis = time_sort_value(epoch_millis(envelope.occurred_at))
    members = {"updated": sort_member(millis, campaign_id)}
    if "created_at" in changes:
        members["created"] = sort_member(millis, campaign_id)
    if "name" in changes:
        members["name"] = sort_member(name_sort_value(changes["name"]), campaign_id)
    return CampaignChange(
        delete=False,
        fields={name: fragment(value) for name, value in changes.items()},
        index=index,
        sort_members=members,
    )
