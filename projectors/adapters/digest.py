"""The digest of one generation of a projection: equal digests mean equal read models.

It hashes the logical content of every key under the generation's base, with key names taken
relative to that base, so a generation rebuilt by replay and the live one compare equal
exactly when they hold the same data. (DUMP would not do: its bytes depend on the internal
encoding a key happens to have, which differs with the history of writes.)
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence

from redis.asyncio import Redis

from readmodels.keyspace import generation_base, generation_pattern
from readmodels.stored_documents import UnreadableDocument, document_json

_CHUNK = 500


async def generation_keys(redis: Redis, prefix: str, generation: str) -> list[bytes]:
    """Every key of the generation, sorted (all in memory: for digests, counts and tests)."""
    return sorted({key async for page in generation_key_pages(redis, prefix, generation) for key in page})


async def generation_key_pages(
    redis: Redis, prefix: str, generation: str, page: int = 1000
) -> AsyncIterator[list[bytes]]:
    """The generation's keys a page at a time, as SCAN finds them: memory of one page, not of the
    generation (a million campaigns' key names are ~130 MB of Python bytes in a set). A key may
    come twice (SCAN's guarantee is at least once for keys there throughout)."""
    pattern = generation_pattern(prefix, generation)
    keys: list[bytes] = []
    async for key in redis.scan_iter(match=pattern, count=page):
        keys.append(key)
        if len(keys) >= page:
            yield keys
            keys = []
    if keys:
        yield keys


async def generation_digest(redis: Redis, prefix: str, generation: str) -> str:
    """SHA-256 over (relative key, type, canonical content) of every key, in key order."""
    base = generation_base(prefix, generation).encode() + b":"
    keys = await generation_keys(redis, prefix, generation)
    digest = hashlib.sha256()
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        for key, kind, content in zip(chunk, *await _contents(redis, chunk), strict=True):
            digest.update(_frame(key.removeprefix(base)))
            digest.update(_frame(kind))
            for part in content:
                digest.update(_frame(part))
    return digest.hexdigest()


async def generation_key_digests(redis: Redis, prefix: str, generation: str) -> dict[bytes, str]:
    """SHA-256 of (type, canonical content) per key, by key relative to the base: where two differ."""
    base = generation_base(prefix, generation).encode() + b":"
    keys = await generation_keys(redis, prefix, generation)
    digests: dict[bytes, str] = {}
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        for key, kind, content in zip(chunk, *await _contents(redis, chunk), strict=True):
            digest = hashlib.sha256(_frame(kind))
            for part in content:
                digest.update(_frame(part))
            digests[key.removeprefix(base)] = digest.hexdigest()
    return digests


async def _contents(redis: Redis, keys: Sequence[bytes]) -> tuple[list[bytes], list[list[bytes]]]:
    pipe = redis.pipeline(transaction=False)
    for key in keys:
        pipe.type(key)
    kinds: list[bytes] = await pipe.execute()
    pipe = redis.pipeline(transaction=False)
    for key, kind in zip(keys, kinds, strict=True):
        if kind == b"string":
            pipe.get(key)
        elif kind == b"hash":
            pipe.hgetall(key)
        elif kind == b"zset":
            pipe.zrange(key, 0, -1, withscores=True)
        elif kind == b"set":
            pipe.smembers(key)
        elif kind == b"list":
            pipe.lrange(key, 0, -1)
        else:
            pipe.echo(b"")  # gone since SCAN, or a type read models do not use
    contents: list[list[bytes]] = []
    for kind, value in zip(kinds, await pipe.execute(), strict=True):
        contents.append(_canonical(kind, value))
    return kinds, contents


def _canonical(kind: bytes, value: object) -> list[bytes]:
    if kind == b"hash":
        assert isinstance(value, dict)
        return [part for field in sorted(value) for part in (field, _field_value(field, value[field]))]
    if kind == b"zset":
        assert isinstance(value, list)
        return [part for member, score in value for part in (member, repr(float(score)).encode())]
    if kind == b"set":
        assert isinstance(value, set)
        return sorted(value)
    if kind == b"list":
        assert isinstance(value, list)
        return list(value)
    return [value] if isinstance(value, bytes) else []


def _field_value(field: bytes, value: bytes) -> bytes:
    """A document as its JSON, whichever form it is stored in (compressed from the campaigns' key
    layout 4): the same read model compares equal whatever compressor version wrote it."""
    if field != b"doc":
        return value
    try:
        return document_json(value)
    except UnreadableDocument:
        return value


def _frame(part: bytes) -> bytes:
    # Length-prefixed, so ("ab", "c") and ("a", "bc") hash differently.
    return len(part).to_bytes(8, "big") + part
