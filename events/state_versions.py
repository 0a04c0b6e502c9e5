"""The write side's state versions, read-only: which version of each aggregate MongoDB holds.

The command side keeps each aggregate's current state in its own collection (named here), with
the version of its last event, written in the same transaction as the events. Anti-entropy reads
these versions back, in pages, to compare them with the read models'.

A walk reads one slice of the id space at a time: `{_id: {$gte: lo, $lt: hi}}`, served by the
`{_id: 1, version: 1}` index (`ID_VERSION_INDEX`, which the command side creates). Not one cursor
over the whole collection: SecantusDB answers a find by reading every document it matches
before the first batch, under its storage lock, so a cursor over 20,000 campaigns stalled every
other client for 0.6-0.8 s at each sweep's start; a slice of a few hundred takes milliseconds.
(MongoDB serves either from an index, and this index covers the walk's reads there.)

Aggregate ids are UUIDs' text, so slices are cut at 8-hex-digit prefixes, and their width
follows the density the last slice found (about `size` ids each), and the next walk starts at the
density the whole walk found. The first slice has no lower bound and the last no upper one, so
every string id falls in exactly one slice, hex or not. A collection smaller than a page is read
whole, in one read.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

CAMPAIGNS_COLLECTION = "campaigns"
USERS_COLLECTION = "users"
# The collection holding each aggregate type's state.
STATE_COLLECTIONS: dict[str, str] = {"campaign": CAMPAIGNS_COLLECTION, "user": USERS_COLLECTION}
# The index each state collection has for the walk (command_api/adapters/mongo_schema.py).
ID_VERSION_INDEX = "id_version"
ID_VERSION_KEYS: list[tuple[str, int]] = [("_id", 1), ("version", 1)]

# The id space a walk slices: the first 8 hex digits of an id.
ID_SPACE = 1 << 32
PREFIX_DIGITS = 8
# A walk's first slice, before it knows the density: 1/1024 of the space (~1,000 of a million).
FIRST_WIDTH = ID_SPACE // 1024
# At least 16 slices a walk, so a collection that grew since the last walk is not read whole.
MAX_WIDTH = ID_SPACE // 16
# Documents a slice's first reply may carry (a slice holds about a page; more takes getMores).
SLICE_BATCH = 10_000
# How far one slice's count moves the next one's width, either way.
MAX_WIDTH_CHANGE = 4


def _prefix(position: int) -> str:
    return format(position, f"0{PREFIX_DIGITS}x")


def slice_filter(start: int, end: int) -> dict[str, Any]:
    """The filter of the ids in [start, end) of the id space: `$gte`/`$lt` on their prefixes,
    with no lower bound for the first slice and no upper bound for the last."""
    bounds: dict[str, str] = {}
    if start > 0:
        bounds["$gte"] = _prefix(start)
    if end < ID_SPACE:
        bounds["$lt"] = _prefix(end)
    return {"_id": bounds} if bounds else {}


def walk_width(size: int, walked: int) -> int:
    """Where the next walk starts, from how many ids the last one read: the whole space in one
    read when they were fewer than a page (cheaper than sixteen slices of nothing), else slices
    of about `size` at their density."""
    if walked < size:
        return ID_SPACE
    return max(1, min(MAX_WIDTH, ID_SPACE * size // walked))


def next_width(width: int, size: int, found: int) -> int:
    """The next slice's width: what would have held `size` ids at the density `found` shows,
    at most `MAX_WIDTH_CHANGE` times wider or narrower, between 1 and `MAX_WIDTH`."""
    if found == 0:
        wanted = width * MAX_WIDTH_CHANGE
    else:
        wanted = width * size // found
    wanted = max(width // MAX_WIDTH_CHANGE, min(wanted, width * MAX_WIDTH_CHANGE))
    return max(1, min(wanted, MAX_WIDTH))


class StateVersions:
    """Every (aggregate id, version) of one aggregate type, a slice of the id space at a time."""

    def __init__(self, database: AsyncDatabase[dict[str, Any]]) -> None:
        self.database = database
        # Where each aggregate type's next walk starts: its first slice's width (`walk_width`).
        self._widths: dict[str, int] = {}

    async def pages(self, aggregate_type: str, size: int) -> AsyncGenerator[list[tuple[str, int]], None]:
        """Pages of at most `size`, none empty, in slices of the id space (each slice one
        bounded read); the walk ends after the last slice."""
        collection = self.database[STATE_COLLECTIONS[aggregate_type]]
        start = walked = 0
        width = self._widths.get(aggregate_type, FIRST_WIDTH)
        while start < ID_SPACE:
            end = min(ID_SPACE, start + width)
            # The slice in one reply where it can (a find's first batch is 101 documents unless told).
            reply = collection.find(slice_filter(start, end), {"version": 1}, batch_size=SLICE_BATCH)
            docs = await reply.to_list()
            walked += len(docs)
            width = next_width(width, size, len(docs))
            start = end
            versions = [(str(doc["_id"]), int(doc.get("version", 0))) for doc in docs]
            for first in range(0, len(versions), size):
                yield versions[first : first + size]
        self._widths[aggregate_type] = walk_width(size, walked)
