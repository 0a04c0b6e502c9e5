"""Parked events as the read models hold them: the entry each projection writes, and the listing
an operator reads (the console's gaps view).

An event that arrives before its predecessor is parked in its aggregate's parked hash (version ->
entry, `keyspace.parked_key`) and the aggregate is named in its bucket's parked set
(`keyspace.parked_set_key`). An entry takes one of two forms:

- the campaigns projection (projectors/adapters/campaigns_projection.py) keeps the event itself,
  as `{"parked_at": <ISO time>, "event": <the event's JSON>}` (`campaign_entry`; entries parked
  before the time was kept are the bare event's JSON);
- the projections applied by lua/guard.lua keep a MessagePack sequence: the notice (the event's
  pub/sub message without its closing brace; empty where the projection announces nothing), the
  change (an array of strings), then the time it was parked (absent in older entries).

The listing walks the parked sets one bucket at a time with SSCAN (on Redis Cluster each bucket's
set lives in its own slot), so a page costs about `limit` members whatever the number parked.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from readmodels.keyspace import generation_base, parked_key, parked_set_key
from readmodels.versions import VERSIONED_STATES, read_versions


class InvalidCursor(ValueError):
    """A listing cursor this deployment did not hand out."""


def campaign_entry(event: bytes, parked_at: str) -> bytes:
    """The campaigns projection's parked entry: the event's JSON and when it was parked."""
    return orjson.dumps({"parked_at": parked_at, "event": orjson.Fragment(event)})


def parked_event(raw: bytes) -> bytes:
    """The event's JSON in a campaigns projection's entry (either form); any other entry as it is."""
    if raw[:1] != b"{":
        return raw
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw
    if isinstance(data, dict) and isinstance(data.get("event"), dict) and "event_id" not in data:
        return orjson.dumps(data["event"])
    return raw


@dataclass(frozen=True)
class ParkedEntry:
    version: int
    event_type: str | None
    occurred_at: str | None
    parked_at: str | None  # None: parked before the time was kept


@dataclass(frozen=True)
class ParkedAggregate:
    aggregate_type: str
    aggregate_id: str
    # The version its read model holds (None: this projection keeps no versioned state of it).
    read_version: int | None
    parked_count: int
    entries: tuple[ParkedEntry, ...]  # the lowest versions, `entries_shown` at most

    @property
    def missing(self) -> tuple[int, ...]:
        """The versions the read model lacks before its lowest parked one (the gap)."""
        if not self.entries:
            return ()
        held = self.read_version or 0
        return tuple(range(held + 1, self.entries[0].version))


@dataclass(frozen=True)
class ParkedPage:
    aggregates: tuple[ParkedAggregate, ...]
    next_cursor: str | None  # None: the listing is complete


def describe_entry(version: int, raw: bytes) -> ParkedEntry:
    """What an operator is shown of one entry: unreadable parts are None, never an error."""
    if raw[:1] == b"{":
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return ParkedEntry(version, None, None, None)
        if not isinstance(data, dict):
            return ParkedEntry(version, None, None, None)
        event = data.get("event") if "event_id" not in data else data
        parked_at = data.get("parked_at") if event is not data else None
        event = event if isinstance(event, dict) else {}
        return ParkedEntry(
            version, _text(event.get("event_type")), _text(event.get("occurred_at")), _text(parked_at)
        )
    try:
        values = unpack_sequence(raw)
    except ValueError:
        return ParkedEntry(version, None, None, None)
    notice: dict[str, Any] = {}
    if values and isinstance(values[0], str) and values[0]:
        try:
            decoded = orjson.loads(values[0] + "}")
            notice = decoded if isinstance(decoded, dict) else {}
        except orjson.JSONDecodeError:
            notice = {}
    parked_at = values[2] if len(values) > 2 else None
    return ParkedEntry(
        version, _text(notice.get("event_type")), _text(notice.get("occurred_at")), _text(parked_at)
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def parse_cursor(cursor: str | None, buckets: int) -> tuple[int, int]:
    """(bucket, SSCAN position) of a listing cursor (`None`: the start)."""
    if cursor is None or cursor == "":
        return (0, 0)
    bucket, dot, position = cursor.partition(".")
    if not dot or not bucket.isdigit() or not position.isdigit():
        raise InvalidCursor("not a cursor of this listing: <bucket>.<position>, as next_cursor gives it")
    if int(bucket) >= max(1, buckets):
        raise InvalidCursor(f"bucket {bucket} does not exist (there are {max(1, buckets)})")
    return (int(bucket), int(position))


async def list_parked(
    redis: Redis,
    prefix: str,
    generation: str,
    projection: str,
    *,
    buckets: int,
    limit: int,
    entries_shown: int,
    cursor: str | None = None,
) -> ParkedPage:
    """About `limit` aggregates with parked events in one projection's generation, from `cursor`
    on, each with its lowest `entries_shown` parked entries and the version its read model holds."""
    base = generation_base(prefix, generation)
    buckets = max(1, buckets)
    bucket, position = parse_cursor(cursor, buckets)
    members: list[str] = []
    while bucket < buckets and len(members) < limit:
        position, found = await redis.sscan(
            parked_set_key(base, buckets, bucket), cursor=position, count=limit
        )
        members.extend(m.decode() if isinstance(m, bytes) else m for m in found)
        if position == 0:
            bucket += 1
    next_cursor = f"{bucket}.{position}" if bucket < buckets else None
    pairs: list[tuple[str, str]] = sorted({_pair(m) for m in members})
    if not pairs:
        return ParkedPage((), next_cursor)
    pipe = redis.pipeline(transaction=False)
    for aggregate_type, aggregate_id in pairs:
        key = parked_key(base, aggregate_type, aggregate_id, buckets)
        pipe.hlen(key)
        pipe.hscan(key, 0, count=entries_shown)
    replies = await pipe.execute()
    versions = await _read_versions(redis, prefix, generation, projection, pairs, buckets)
    aggregates = []
    for n, (aggregate_type, aggregate_id) in enumerate(pairs):
        count, (_, fields) = replies[2 * n], replies[2 * n + 1]
        entries = sorted(
            (describe_entry(int(v), raw) for v, raw in fields.items() if v.isdigit()),
            key=lambda e: e.version,
        )[:entries_shown]
        aggregates.append(
            ParkedAggregate(
                aggregate_type,
                aggregate_id,
                versions.get((aggregate_type, aggregate_id)),
                int(count),
                tuple(entries),
            )
        )
    return ParkedPage(tuple(aggregates), next_cursor)


def _pair(member: str) -> tuple[str, str]:
    """(aggregate type, id) of a parked set's member, `type:id`."""
    aggregate_type, _, aggregate_id = member.partition(":")
    return (aggregate_type, aggregate_id)


async def _read_versions(
    redis: Redis,
    prefix: str,
    generation: str,
    projection: str,
    pairs: Sequence[tuple[str, str]],
    buckets: int,
) -> dict[tuple[str, str], int]:
    found: dict[tuple[str, str], int] = {}
    for aggregate_type in VERSIONED_STATES.get(projection, frozenset()):
        ids = [aggregate_id for kind, aggregate_id in pairs if kind == aggregate_type]
        held = await read_versions(redis, prefix, generation, projection, aggregate_type, ids, buckets)
        found.update({(aggregate_type, i): v for i, v in zip(ids, held, strict=True)})
    return found


# ---------------------------------------------------------------- MessagePack, as Lua's cmsgpack packs


def unpack_sequence(data: bytes) -> list[Any]:
    """Every MessagePack value in `data`, in order (the subset lua cmsgpack writes: strings,
    binaries, arrays, maps, nil, booleans, integers, floats); ValueError on anything else."""
    values = []
    at = 0
    try:
        while at < len(data):
            value, at = _value(data, at)
            values.append(value)
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"not MessagePack: {exc}") from exc
    return values


_SIZED = {
    0xD9: (1, str),
    0xDA: (2, str),
    0xDB: (4, str),
    0xC4: (1, bytes),
    0xC5: (2, bytes),
    0xC6: (4, bytes),
}
_NUMBERS = {
    0xCA: ">f", 0xCB: ">d", 0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q",
    0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q",
}  # fmt: skip


def _value(data: bytes, at: int) -> tuple[Any, int]:
    head = data[at]
    at += 1
    if head <= 0x7F:
        return head, at
    if head >= 0xE0:
        return head - 0x100, at
    if 0xA0 <= head <= 0xBF:
        return _bytes(data, at, head & 0x1F, str)
    if 0x90 <= head <= 0x9F:
        return _array(data, at, head & 0x0F)
    if 0x80 <= head <= 0x8F:
        return _map(data, at, head & 0x0F)
    if head == 0xC0:
        return None, at
    if head in (0xC2, 0xC3):
        return head == 0xC3, at
    if head in _SIZED:
        width, kind = _SIZED[head]
        return _bytes(data, at + width, int.from_bytes(data[at : at + width], "big"), kind)
    if head in _NUMBERS:
        fmt = _NUMBERS[head]
        width = struct.calcsize(fmt)
        (number,) = struct.unpack(fmt, data[at : at + width])
        return number, at + width
    if head in (0xDC, 0xDD, 0xDE, 0xDF):
        width = 2 if head in (0xDC, 0xDE) else 4
        count = int.from_bytes(data[at : at + width], "big")
        return (_array if head in (0xDC, 0xDD) else _map)(data, at + width, count)
    raise ValueError(f"MessagePack type 0x{head:02x} is not read here")


def _bytes(data: bytes, at: int, size: int, kind: type) -> tuple[Any, int]:
    chunk = data[at : at + size]
    if len(chunk) != size:
        raise IndexError("truncated")
    if kind is str:
        # A Lua string is bytes: one that is not UTF-8 (the packed id leading a stats change,
        # lua/stats.lua) is kept as bytes.
        try:
            return chunk.decode(), at + size
        except UnicodeDecodeError:
            return bytes(chunk), at + size
    return bytes(chunk), at + size


def _array(data: bytes, at: int, count: int) -> tuple[list[Any], int]:
    items = []
    for _ in range(count):
        item, at = _value(data, at)
        items.append(item)
    return items, at


def _map(data: bytes, at: int, count: int) -> tuple[dict[Any, Any], int]:
    items: dict[Any, Any] = {}
    for _ in range(count):
        key, at = _value(data, at)
        value, at = _value(data, at)
        items[key if isinstance(key, str | int) else repr(key)] = value
    return items, at
