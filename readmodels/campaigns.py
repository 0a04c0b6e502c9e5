"""The campaign read model: which fields each campaign event sets, its sort keys, and the fold.

The same `campaign_field_changes` drives both the Redis projection (through `next_campaign_state`,
planned per aggregate in `campaign_plan`) and the in-memory fold that serves `as_of_version`, so
the two cannot drift apart.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

import orjson

from events import EventEnvelope
from readmodels.json_form import epoch_millis, json_time

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
    "next_transition",
    "version",
    "created_at",
    "updated_at",
)
SORT_KEYS: tuple[str, ...] = ("created", "updated", "name")
# Filters the list query can combine.
FILTER_DIMENSIONS: tuple[str, ...] = ("status", "channel", "tag", "owner")
# The lean index layout (measured: bench/README). A page is walked in one sorted index per sort
# key: all campaigns', or the owner's, since every user's list is filtered by its owner and an
# owner holds a small share of all campaigns. The other filters are plain sets of campaign ids,
# intersected at read time with the index walked (lua/list_campaigns.lua): they move only when
# the campaign's status, channel or tags change, never with its sort values, where a sorted index
# per filter value and sort key made ~18 index writes an event (every event moves updated_at).
SORTED_DIMENSIONS: tuple[str, ...] = ("owner",)
SET_DIMENSIONS: tuple[str, ...] = ("status", "channel", "tag")

_CREATED_FIELDS = ("owner_id", "name", "description", "channel", "budget", "starts_at", "ends_at", "tags")
_STATUS_AFTER = {
    "CampaignScheduled": "scheduled",
    "CampaignUnscheduled": "draft",
    "CampaignActivated": "active",
    "CampaignPaused": "paused",
    "CampaignCompleted": "completed",
    "CampaignDeleted": "deleted",
}
CAMPAIGN_EVENT_TYPES = frozenset({"CampaignCreated", "CampaignUpdated", *_STATUS_AFTER})
# Separates the sort value from the id in an index member: below every printable character,
# so "abc" sorts before "abcd" whatever follows.
MEMBER_SEPARATOR = b"\x00"
# The key layout (readmodels.generations.LAYOUT_VERSIONS) from which index members and filter
# sets hold packed ids and time sorts a 6-byte time (`packed_member`); before it, the text
# member `sortvalue \0 id` (`sort_member`) and the id's text in the sets.
PACKED_LAYOUT = 3


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


def next_transition(state: dict[str, Any]) -> dict[str, str] | None:
    """What the scheduler will do to the campaign next, and when (the write side's
    `Campaign.next_transition`, on the document's fields): a scheduled campaign becomes active at
    its starts_at; an active or paused one completed at its ends_at."""
    status = state.get("status")
    if status == "scheduled" and "starts_at" in state:
        return {"to": "active", "at": state["starts_at"]}
    if status in ("active", "paused") and "ends_at" in state:
        return {"to": "completed", "at": state["ends_at"]}
    return None


def fold_campaign(envelopes: Iterable[EventEnvelope]) -> dict[str, Any] | None:
    """The campaign document after these events (in version order), or None if there were none."""
    state: dict[str, Any] = {}
    for envelope in envelopes:
        state.update(campaign_field_changes(envelope))
        state["version"] = envelope.aggregate_version
        state["next_transition"] = next_transition(state)
    if not state:
        return None
    return {name: state[name] for name in CAMPAIGN_FIELDS if name in state}


def campaign_document(state: dict[str, Any]) -> bytes:
    """The document's JSON bytes, byte for byte what the Redis projection stores."""
    return orjson.dumps({name: state[name] for name in CAMPAIGN_FIELDS if name in state})


def sort_member(sort_value: str, campaign_id: str) -> bytes:
    """The text member of layouts 1 and 2: `sortvalue \\0 id`."""
    return sort_value.encode() + MEMBER_SEPARATOR + campaign_id.encode()


def time_sort_value(millis: int) -> str:
    # Fixed width, so the lexicographic order of the index is the numeric order.
    return f"{millis:013d}"


def name_sort_value(name: str) -> str:
    return name.casefold()


# Packed members (layout 3). A member costs Redis its bytes twice over in a sorted set's
# skiplist node and dict (measured: 161 B an entry with the 50-byte text member, 129 B with a
# 23-byte packed one; 92 -> 76 B an entry of an id set), and a campaign has six members and
# four or so set entries. The id: a canonical UUID's 16 bytes (what the command API issues),
# any other id's UTF-8 after 0xff (a byte UTF-8 never holds; in a filter set such an id could
# only meet a UUID whose bytes are 0xff and 15 bytes of UTF-8, and campaigns get uuid4s from the
# command API). The member ends with a tail that
# says where the id starts, read from the end (lua/list_campaigns.lua does the same):
# 0x00 after a 16-byte UUID, or the id's length (2 bytes) and 0x01. A time sort's value is
# the milliseconds in 6 big-endian bytes (fixed width: byte order is time order); a name's is
# its casefolded UTF-8 and 0x00, so "abc" sorts before "abcd".
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TEXT_ID = b"\xff"
_UUID_TAIL = b"\x00"
_TEXT_TAIL = b"\x01"
TIME_BYTES = 6


@lru_cache(maxsize=8192)
def packed_id(campaign_id: str) -> bytes:
    """The campaign's id as packed members and the filter sets of layout 3 hold it."""
    if _UUID.fullmatch(campaign_id):
        return bytes.fromhex(campaign_id.replace("-", ""))
    return _TEXT_ID + campaign_id.encode()


def unpacked_id(raw: bytes) -> str:
    """The id `packed_id` packed (its inverse; 16 bytes are read as a UUID, so a text id of 15
    bytes would be read wrong: ids are the command API's UUIDs)."""
    if len(raw) == 16:
        return str(uuid.UUID(bytes=raw))
    if raw[:1] != _TEXT_ID:
        raise ValueError("not a packed id")
    return raw[1:].decode()


@lru_cache(maxsize=8192)
def _id_with_tail(campaign_id: str) -> bytes:
    raw = packed_id(campaign_id)
    if _UUID.fullmatch(campaign_id):
        return raw + _UUID_TAIL
    return raw + len(raw).to_bytes(2, "big") + _TEXT_TAIL


def packed_time_member(millis: int, campaign_id: str) -> bytes:
    return max(millis, 0).to_bytes(TIME_BYTES, "big") + _id_with_tail(campaign_id)


def packed_name_member(name: str, campaign_id: str) -> bytes:
    return name_sort_value(name).encode() + MEMBER_SEPARATOR + _id_with_tail(campaign_id)


def _packed_id_span(member: bytes) -> tuple[int, int]:
    """Where the packed id sits in a packed member: (start, end) from the member's start."""
    if member[-1:] == _UUID_TAIL:
        if len(member) < 17:
            raise ValueError("not a packed member")
        return len(member) - 17, len(member) - 1
    if member[-1:] != _TEXT_TAIL or len(member) < 3:
        raise ValueError("not a packed member")
    n = int.from_bytes(member[-3:-1], "big")
    start = len(member) - 3 - n
    if start < 0 or member[start : start + 1] != _TEXT_ID:
        raise ValueError("not a packed member")
    return start, len(member) - 3


def member_campaign_id(member: bytes, packed: bool) -> str:
    """The campaign id of an index member (packed: layout 3's members, else the text ones)."""
    if not packed:
        return member.rpartition(MEMBER_SEPARATOR)[2].decode()
    start, end = _packed_id_span(member)
    if member[-1:] == _UUID_TAIL:
        return str(uuid.UUID(bytes=member[start:end]))
    return member[start + 1 : end].decode()


def set_member(campaign_id: str, packed: bool) -> bytes:
    """What the filter sets hold for the campaign."""
    return packed_id(campaign_id) if packed else campaign_id.encode()


def packed_from_text(sort: str, member: bytes) -> bytes:
    """A text member (layouts 1 and 2) as the packed member of the same campaign and sort value,
    so a cursor issued before an upgrade goes on where it stopped. ValueError if it is none."""
    value, separator, campaign_id = member.rpartition(MEMBER_SEPARATOR)
    if not separator or not campaign_id:
        raise ValueError("not an index member")
    if sort == "name":
        return packed_name_member(value.decode(), campaign_id.decode())
    if len(value) != 13 or not value.isdigit():
        raise ValueError("not a time member")
    return packed_time_member(int(value), campaign_id.decode())


def text_from_packed(sort: str, member: bytes) -> bytes:
    """A packed member as the text member of the same campaign and sort value (a cursor of this
    code used on a generation of the earlier layout, until its rebuild swaps it out)."""
    start, _ = _packed_id_span(member)
    campaign_id = member_campaign_id(member, True)
    if sort == "name":
        if member[start - 1 : start] != MEMBER_SEPARATOR:
            raise ValueError("not a name member")
        return sort_member(member[: start - 1].decode(), campaign_id)
    if start != TIME_BYTES:
        raise ValueError("not a time member")
    return sort_member(time_sort_value(int.from_bytes(member[:TIME_BYTES], "big")), campaign_id)


class MissingCreation(ValueError):
    """An event for a campaign the read model has never seen created."""


# An index a campaign belongs to, by (dimension, value); None is the index of all campaigns.
IndexFilter = tuple[str, str] | None
REQUIRED_FIELDS = ("status", "channel", "owner_id", "tags")
_REQUIRED = frozenset(REQUIRED_FIELDS)


def next_campaign_state(state: dict[str, Any] | None, envelope: EventEnvelope) -> dict[str, Any]:
    """The campaign's fields after `envelope`, from its fields before (None: never seen).

    Raises `MissingCreation` for anything but a creation or a deletion on a campaign whose
    fields are incomplete: the read model never shows a campaign it did not see created.
    """
    changes = campaign_field_changes(envelope)
    new = dict(state) if state else {}
    new.update(changes)
    new["version"] = envelope.aggregate_version
    new["next_transition"] = next_transition(new)
    if envelope.event_type != "CampaignDeleted" and not new.keys() >= _REQUIRED:
        raise MissingCreation(
            f"campaign {envelope.aggregate_id} has no creation event before version "
            f"{envelope.aggregate_version}"
        )
    return new


def _millis(text: str) -> int:
    return epoch_millis(datetime.fromisoformat(text))


def campaign_memberships(
    state: dict[str, Any], packed: bool = True
) -> dict[str, tuple[bytes, list[IndexFilter]]]:
    """For each sort key: the campaign's member in its sorted indexes, and the indexes it belongs
    to (all campaigns', its owner's).

    Derived from the document's own fields, so what is stored (the document) is all a
    projector needs to know which memberships an event moves.
    """
    filters: list[IndexFilter] = [None, ("owner", state["owner_id"])]
    return {sort: (_sort_member(sort, state, packed), filters) for sort in SORT_KEYS}


class MembershipMove(NamedTuple):
    """What one sort's indexes need when a campaign goes from one state to another."""

    sort: str
    old_member: bytes
    leaves: list[IndexFilter]  # indexes `old_member` is removed from
    new_member: bytes
    joins: list[IndexFilter]  # indexes `new_member` is added to


_SORT_FIELDS = {"created": "created_at", "updated": "updated_at", "name": "name"}


def _sort_member(sort: str, state: dict[str, Any], packed: bool) -> bytes:
    text = state[_SORT_FIELDS[sort]]
    if packed:
        if sort == "name":
            return packed_name_member(text, state["id"])
        return packed_time_member(_millis(text), state["id"])
    value = name_sort_value(text) if sort == "name" else time_sort_value(_millis(text))
    return sort_member(value, state["id"])


def membership_moves(
    old: dict[str, Any] | None, new: dict[str, Any] | None, packed: bool = True
) -> list[MembershipMove]:
    """Only the memberships that change: an index member moves only if its index or its sort
    value changed (most events move the updated sort only). None: no campaign (never created, or
    deleted). The same as comparing `campaign_memberships` of both, computing only the members
    whose field or indexes changed (this runs for every event)."""
    if not old and not new:
        return []
    old_in: list[IndexFilter] = [None, ("owner", old["owner_id"])] if old else []
    new_in: list[IndexFilter] = [None, ("owner", new["owner_id"])] if new else []
    same_indexes = old_in == new_in
    moves = []
    for sort in SORT_KEYS:
        field = _SORT_FIELDS[sort]
        if same_indexes and old and new and old[field] == new[field]:
            continue
        old_member = _sort_member(sort, old, packed) if old else b""
        new_member = _sort_member(sort, new, packed) if new else b""
        kept = set(old_in) & set(new_in) if old_member == new_member else set()
        leaves = [where for where in old_in if where not in kept]
        joins = [where for where in new_in if where not in kept]
        if leaves or joins:
            moves.append(MembershipMove(sort, old_member, leaves, new_member, joins))
    return moves


def filter_memberships(state: dict[str, Any]) -> list[tuple[str, str]]:
    """The id sets (SET_DIMENSIONS) the campaign belongs to, by (dimension, value)."""
    sets = [("status", state["status"]), ("channel", state["channel"])]
    sets += [("tag", tag) for tag in state["tags"]]
    return sets


def filter_moves(
    old: dict[str, Any] | None, new: dict[str, Any] | None
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The id sets the campaign leaves and joins from `old` to `new` (None: no campaign): only
    the ones whose value changed, so most events move none."""
    before = filter_memberships(old) if old else []
    after = filter_memberships(new) if new else []
    return [f for f in before if f not in after], [f for f in after if f not in before]
