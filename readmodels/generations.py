"""Generations: which copy of each projection is live, named by one pointer key per projection.

Projectors write to the live generation; the query API reads it; the replay tool builds a new
generation beside it and swaps the pointer with `swap_generation`. Generation names are
`{projection}.{n}`, so keys of different projections never share a base.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import overload

from redis.asyncio import Redis

from readmodels.groups import PROJECTIONS
from readmodels.keyspace import generations_channel, layout_key, pointer_key, rebuilding_key, sentinel_key
from readmodels.scripts import pipelined


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


__all__ = [
    "LAYOUT_VERSIONS",
    "PROJECTIONS",
    "GenerationClaim",
    "GenerationLayouts",
    "GenerationMoved",
    "ReadModelsLost",
    "claim_commands",
    "claim_live_generation",
    "claim_while_whole",
    "drop_layout",
    "initial_generation",
    "layout_marker",
    "layout_version",
    "live_generations",
    "mark_layout",
    "mark_rebuilding",
    "mark_whole",
    "outdated_layouts",
    "read_models_whole",
    "swap_generation",
]


# The key layout of each projection's generations, raised when this code no longer reads what an
# older one wrote, so the read model must be rebuilt (the projectors do it at start:
# `outdated_layouts`). 2: campaigns' lean list indexes (sorted per sort key for all campaigns and
# per owner, id sets per status, channel and tag), where version 1 had a sorted index per status,
# channel and tag too. 3: the same indexes with packed members and ids (readmodels.campaigns.
# packed_id: 16 bytes for a UUID's 36, the time sorts' value in 6 bytes for 13), ~240 B less a
# campaign. 4: the same, each campaign's document stored compressed (readmodels.stored_documents),
# ~300 B less a campaign. Stats 2: each aggregate's state a field of its bucket's hash of states
# (`keyspace.StatsKeys.campaign_states`) instead of a hash key of its own, ~100 B less a campaign.
# A generation with no layout marker is of version 1.
LAYOUT_VERSIONS: dict[str, int] = {"campaigns": 4, "users": 1, "stats": 2}


def initial_generation(projection: str) -> str:
    return f"{projection}.1"


async def live_generations(redis: Redis, prefix: str) -> dict[str, str]:
    """The live generation of every projection (the initial one where none was ever set)."""
    # GETs in a pipeline, not one MGET: on a cluster the pointers sit in different slots.
    pipe = redis.pipeline(transaction=False)
    for projection in PROJECTIONS:
        pipe.get(pointer_key(prefix, projection))
    values = await pipe.execute()
    return {
        projection: _text(value) if value is not None else initial_generation(projection)
        for projection, value in zip(PROJECTIONS, values, strict=True)
    }


async def claim_live_generation(redis: Redis, prefix: str, projection: str) -> str:
    """The live generation, set to the initial one if none is (what a projector writes to)."""
    key = pointer_key(prefix, projection)
    pipe = redis.pipeline(transaction=False)
    pipe.set(key, initial_generation(projection), nx=True)
    pipe.get(key)
    _, value = await pipe.execute()
    return _text(value)


async def swap_generation(redis: Redis, prefix: str, projection: str, generation: str) -> str | None:
    """Make `generation` live; returns the one it replaced. Readers are told on the channel.

    The generation is marked with this code's layout first (whoever swaps a generation in built
    it with this code): a stop in between leaves a marker on a generation that is not live."""
    await mark_layout(redis, prefix, projection, generation)
    old = await redis.getset(pointer_key(prefix, projection), generation)
    await redis.publish(generations_channel(prefix), projection)
    return _text(old) if old is not None else None


class ReadModelsLost(Exception):
    """The sentinel is gone: Redis lost the read models (flushed, emptied, a new server). Writers
    wait (the batch is retried) and readers answer 503 until the projections are rebuilt."""


async def mark_whole(redis: Redis, prefix: str, *, only_if_absent: bool = False) -> bool:
    """Write the sentinel (after the pointers: a fresh start, or the rebuild after a loss).

    Then the rebuilding mark goes, as a second command (the two keys may sit in different cluster
    slots): in between, both are there, which readers take as whole (the sentinel decides)."""
    written = await redis.set(sentinel_key(prefix), "1", nx=only_if_absent)
    if not only_if_absent:
        await redis.delete(rebuilding_key(prefix))
    return bool(written)


async def mark_rebuilding(redis: Redis, prefix: str) -> None:
    """Say a rebuild after a loss is under way (readers that never saw the sentinel answer 503 too)."""
    await redis.set(rebuilding_key(prefix), "1")


async def read_models_whole(redis: Redis, prefix: str) -> tuple[bool, bool]:
    """(the sentinel is present, a rebuild after a loss is under way)."""
    pipe = redis.pipeline(transaction=False)
    pipe.exists(sentinel_key(prefix))
    pipe.exists(rebuilding_key(prefix))
    sentinel, rebuilding = await pipe.execute()
    return bool(sentinel), bool(rebuilding)


async def claim_while_whole(redis: Redis, prefix: str, projection: str) -> str:
    """The live generation, as `claim_live_generation`; `ReadModelsLost` (and no pointer created
    on an empty Redis) if the sentinel is gone.

    Every consumed batch asks this, so it goes through the packed pipeline (`pipelined`: on a
    cluster one hiredis-packed write per node, both nodes at once) rather than redis-py's
    cluster pipeline, whose per-command routing in Python cost more than the two commands."""
    commands = claim_commands(prefix, projection)
    value = _whole_then_pointer(prefix, await pipelined(redis, commands))
    if value is None:
        return await claim_live_generation(redis, prefix, projection)
    return _text(value)


def claim_commands(prefix: str, projection: str) -> list[tuple[str, str]]:
    """`claim_while_whole`'s two reads, to be sent with other commands (`GenerationClaim`)."""
    return [("EXISTS", sentinel_key(prefix)), ("GET", pointer_key(prefix, projection))]


def _whole_then_pointer(prefix: str, replies: list[object]) -> bytes | str | None:
    for reply in replies:
        if isinstance(reply, BaseException):
            raise reply
    sentinel, value = replies
    if not sentinel:
        raise ReadModelsLost(f"the read models under {prefix!r} are gone (sentinel missing)")
    assert value is None or isinstance(value, bytes | str), value
    return value


class GenerationMoved(Exception):
    """The live generation is no longer the one a `GenerationClaim` expected (a swap, or no
    pointer yet): nothing was written; claim it again (`claim_while_whole`)."""


@dataclass(frozen=True)
class GenerationClaim:
    """The claim of a generation already known, sent with the reads a projection needs anyway
    (one round trip fewer per batch than `claim_while_whole` first, then the reads). `confirm`
    its replies before the reads are used: `ReadModelsLost` if the sentinel is gone,
    `GenerationMoved` if the pointer names another generation (the reads were of a generation
    no longer live, and are dropped)."""

    prefix: str
    projection: str
    generation: str

    @property
    def commands(self) -> list[tuple[str, str]]:
        return claim_commands(self.prefix, self.projection)

    def confirm(self, replies: list[object]) -> None:
        value = _whole_then_pointer(self.prefix, replies)
        if value is None or _text(value) != self.generation:
            raise GenerationMoved(f"{self.projection}: {self.generation} is no longer live")

    async def check(self, redis: Redis) -> None:
        """`confirm` in a round trip of its own (a projection with nothing to read first)."""
        self.confirm(await pipelined(redis, self.commands))


async def layout_marker(redis: Redis, prefix: str, generation: str) -> int | None:
    """The layout version `generation` is marked with, if any."""
    value = await redis.get(layout_key(prefix, generation))
    return int(value) if value is not None else None


class GenerationLayouts:
    """Generations' layout markers as a writer or reader of the read models keeps them: a
    generation keeps its layout for life, so a marker once read is not read again."""

    def __init__(self) -> None:
        self._known: dict[str, int] = {}

    @overload
    async def of(self, redis: Redis, prefix: str, generation: str, unmarked: int) -> int: ...
    @overload
    async def of(self, redis: Redis, prefix: str, generation: str, unmarked: None = None) -> int | None: ...
    async def of(self, redis: Redis, prefix: str, generation: str, unmarked: int | None = None) -> int | None:
        """`generation`'s layout marker, or `unmarked` if it has none. A writer passes the layout
        it writes an unmarked generation in (one a rebuild is filling, marked with that layout
        when it is swapped in), and that is kept too; with `unmarked` None, a generation without
        a marker is read again next time."""
        layout = self._known.get(generation)
        if layout is None:
            marker = await layout_marker(redis, prefix, generation)
            layout = unmarked if marker is None else marker
            if layout is not None:
                self._known[generation] = layout
        return layout


async def layout_version(redis: Redis, prefix: str, generation: str) -> int:
    """The layout version of `generation`: 1 if it has no marker (written before markers were)."""
    marker = await layout_marker(redis, prefix, generation)
    return 1 if marker is None else marker


async def mark_layout(
    redis: Redis, prefix: str, projection: str, generation: str, *, only_if_absent: bool = False
) -> None:
    """Mark `generation` as holding this code's key layout of `projection`."""
    await redis.set(layout_key(prefix, generation), LAYOUT_VERSIONS.get(projection, 1), nx=only_if_absent)


async def drop_layout(redis: Redis, prefix: str, generation: str) -> None:
    """Forget a generation's layout marker (the generation is being deleted)."""
    await redis.delete(layout_key(prefix, generation))


async def outdated_layouts(
    redis: Redis, prefix: str, projections: Iterable[str]
) -> dict[str, tuple[str, int]]:
    """The projections whose live generation holds an older key layout than this code reads:
    (live generation, its layout version)."""
    live = await live_generations(redis, prefix)
    outdated = {}
    for projection in projections:
        version = await layout_version(redis, prefix, live[projection])
        if version < LAYOUT_VERSIONS.get(projection, 1):
            outdated[projection] = (live[projection], version)
    return outdated
