"""Which projections a replay touches, what its generations are called, and when catching up stops."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

K = TypeVar("K", bound=Hashable)

ALL = "all"


class SourceName(StrEnum):
    """Where a replay reads the events."""

    MONGO = "mongo"  # the events log: authoritative
    KAFKA = "kafka"  # the topics from their earliest offsets: as complete as their retention


class UnknownProjection(ValueError):
    """The name is neither a projection nor `all`."""


def select_projections(name: str, known: Sequence[str]) -> list[str]:
    """`all` -> every projection; a projection's name -> that one."""
    if name == ALL:
        return list(known)
    if name in known:
        return [name]
    raise UnknownProjection(f"unknown projection {name!r}; one of: {', '.join([*known, ALL])}")


def next_generation(projection: str, live: str) -> str:
    """The generation after `live`: `campaigns.4` -> `campaigns.5`.

    Numbers only grow, so a rebuilt generation never reuses the name of one a reader may still
    hold in its cache.
    """
    stem, _, number = live.rpartition(".")
    current = int(number) if stem == projection and number.isdigit() else 0
    return f"{projection}.{current + 1}"


def scratch_generation(projection: str, token: str) -> str:
    """A generation `verify` builds and throws away; never a name `next_generation` gives."""
    return f"{projection}.verify-{token}"


@dataclass(frozen=True)
class CatchUpPolicy:
    """Catch-up passes before the swap: until one finds at most `quiet_events`, or `max_passes` ran.

    The passes only shorten the stretch during which the new generation trails the old one
    right after the swap; correctness comes from the pass after the swap, so stopping early
    under a steady stream of writes is safe.
    """

    quiet_events: int = 200
    max_passes: int = 5

    def another_pass(self, passes_done: int, events_in_last_pass: int) -> bool:
        return passes_done < self.max_passes and events_in_last_pass > self.quiet_events


def cut_into_shares(ranges: Mapping[K, tuple[int, int]], ways: int) -> list[dict[K, tuple[int, int]]]:
    """Whole ranges (a partition's offsets to read, first to end) dealt into at most `ways` shares
    of about equal size: the largest range first, each to the share holding the fewest so far;
    empty ranges left out, and no share empty. The largest share comes first."""
    sized = sorted(
        ((key, span) for key, span in ranges.items() if span[1] > span[0]),
        key=lambda item: item[1][0] - item[1][1],
    )
    shares: list[dict[K, tuple[int, int]]] = [{} for _ in range(max(1, min(ways, len(sized))))]
    sizes = [0] * len(shares)
    for key, (first, end) in sized:
        smallest = sizes.index(min(sizes))
        shares[smallest][key] = (first, end)
        sizes[smallest] += end - first
    order = sorted(range(len(shares)), key=lambda n: -sizes[n])
    return [shares[n] for n in order if shares[n]]
