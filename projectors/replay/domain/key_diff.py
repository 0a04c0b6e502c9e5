"""Which keys of two generations differ, from a digest per key (what `verify` prints on drift)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class KeyDiff:
    """Keys relative to their generation's base, sorted."""

    only_live: list[str]
    only_rebuilt: list[str]
    changed: list[str]

    @property
    def empty(self) -> bool:
        return not (self.only_live or self.only_rebuilt or self.changed)

    def lines(self, limit: int = 20) -> list[str]:
        """Human-readable lines, at most `limit` per kind, with how many more there are."""
        out: list[str] = []
        for label, keys in (
            ("changed", self.changed),
            ("only in the live generation", self.only_live),
            ("missing from the live generation", self.only_rebuilt),
        ):
            out += [f"{label}: {key}" for key in keys[:limit]]
            if len(keys) > limit:
                out.append(f"{label}: ... and {len(keys) - limit} more")
        return out


def diff_keys(live: Mapping[bytes, str], rebuilt: Mapping[bytes, str]) -> KeyDiff:
    def text(keys: set[bytes]) -> list[str]:
        return sorted(key.decode("utf-8", "replace") for key in keys)

    return KeyDiff(
        only_live=text(set(live) - set(rebuilt)),
        only_rebuilt=text(set(rebuilt) - set(live)),
        changed=text({key for key in set(live) & set(rebuilt) if live[key] != rebuilt[key]}),
    )
