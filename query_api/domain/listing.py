"""Listing campaigns: the sort orders, the filters, and the opaque keyset cursor.

A cursor is the index member of the last campaign of a page, so the next page starts strictly
after it whatever was added meanwhile: stable while campaigns arrive. It is bound to its sort
order; used with another it is refused rather than misread. It says which member form it holds
(`c1`: the text member of layouts 1 and 2, `c2`: layout 3's packed one) and is turned into the
form of the generation it is used on, so a cursor stays good across a layout upgrade.
"""

from __future__ import annotations

import base64
import binascii
import heapq
from dataclasses import dataclass
from enum import StrEnum

from readmodels.campaigns import packed_from_text, text_from_packed
from service_runtime.tokens import Principal

_TEXT_CURSOR = b"c1"
_PACKED_CURSOR = b"c2"


class SortOrder(StrEnum):
    CREATED = "created_at"
    CREATED_DESC = "-created_at"
    UPDATED = "updated_at"
    UPDATED_DESC = "-updated_at"
    NAME = "name"
    NAME_DESC = "-name"

    @property
    def index_key(self) -> str:
        """The sort key of the campaign indexes (see readmodels.campaigns.SORT_KEYS)."""
        return {"created_at": "created", "updated_at": "updated", "name": "name"}[self.value.lstrip("-")]

    @property
    def descending(self) -> bool:
        return self.value.startswith("-")


class InvalidCursor(ValueError):
    pass


def encode_cursor(sort: SortOrder, member: bytes, packed: bool = True) -> str:
    raw = (_PACKED_CURSOR if packed else _TEXT_CURSOR) + sort.value.encode() + b"\n" + member
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str, sort: SortOrder, packed: bool = True) -> bytes:
    """The member a cursor holds, in the form asked for (packed: layout 3's)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidCursor("not a cursor this API issued") from exc
    version = raw[:2]
    if version not in (_TEXT_CURSOR, _PACKED_CURSOR) or b"\n" not in raw:
        raise InvalidCursor("not a cursor this API issued")
    sort_text, _, member = raw[2:].partition(b"\n")
    if sort_text != sort.value.encode():
        raise InvalidCursor(f"this cursor belongs to sort={sort_text.decode(errors='replace')}")
    if not member:
        raise InvalidCursor("not a cursor this API issued")
    was_packed = version == _PACKED_CURSOR
    if was_packed == packed:
        return member
    try:
        if packed:
            return packed_from_text(sort.index_key, member)
        return text_from_packed(sort.index_key, member)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor("not a cursor this API issued") from exc


@dataclass(frozen=True)
class CampaignFilters:
    status: str | None = None
    channel: str | None = None
    tag: str | None = None
    owner_id: str | None = None

    def visible_to(self, principal: Principal) -> CampaignFilters | None:
        """The filters as `principal` may apply them: users only ever see their own campaigns.

        None means the answer is empty (a user asking for someone else's campaigns).
        """
        if principal.is_admin:
            return self
        if self.owner_id is not None and self.owner_id != principal.user_id:
            return None
        return CampaignFilters(self.status, self.channel, self.tag, principal.user_id)

    def index_pairs(self) -> list[tuple[str, str]]:
        """(dimension, value) of each filter given, as the campaign indexes are keyed."""
        pairs = [
            ("status", self.status),
            ("channel", self.channel),
            ("tag", self.tag),
            ("owner", self.owner_id),
        ]
        return [(dimension, value) for dimension, value in pairs if value is not None]


def merge_bucket_pages(
    shares: list[tuple[bytes, list[bytes]]], limit: int, descending: bool
) -> tuple[list[bytes], bytes | None]:
    """One page from every bucket's share (lua/list_campaigns.lua): the first `limit` members of
    all buckets in sort order, and the member the next page starts after (None: no more).

    A share is (frontier, members in order): frontier b"" when its bucket has nothing more, else
    the last member it examined. Only members up to the nearest frontier are known to be complete
    across buckets, so the page stops there (a bucket stopped by its scan budget makes a short
    page whose cursor is that frontier, as one index would).
    """

    def ahead(a: bytes, b: bytes) -> bool:
        """`a` comes before `b` in the page's order."""
        return a > b if descending else a < b

    bound: bytes | None = None
    for frontier, _ in shares:
        if frontier and (bound is None or ahead(frontier, bound)):
            bound = frontier
    streams = [members for _, members in shares]
    merged = heapq.merge(*streams, reverse=descending)
    eligible: list[bytes] = []
    for member in merged:
        if bound is not None and ahead(bound, member):
            break
        eligible.append(member)
        if len(eligible) > limit:
            return eligible[:limit], eligible[limit - 1]
    return eligible, bound
