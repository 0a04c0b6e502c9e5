"""The anti-entropy walk's slices of the id space (events/state_versions.py), as pure functions."""

from __future__ import annotations

import itertools
import uuid

from events.state_versions import (
    FIRST_WIDTH,
    ID_SPACE,
    MAX_WIDTH,
    MAX_WIDTH_CHANGE,
    next_width,
    slice_filter,
    walk_width,
)


def in_slice(aggregate_id: str, start: int, end: int) -> bool:
    bounds = slice_filter(start, end)["_id"]
    return ("$gte" not in bounds or aggregate_id >= bounds["$gte"]) and (
        "$lt" not in bounds or aggregate_id < bounds["$lt"]
    )


def test_the_first_slice_has_no_lower_bound_and_the_last_no_upper_one() -> None:
    assert slice_filter(0, 0x1000) == {"_id": {"$lt": "00001000"}}
    assert slice_filter(0x1000, 0x2000) == {"_id": {"$gte": "00001000", "$lt": "00002000"}}
    assert slice_filter(ID_SPACE - 16, ID_SPACE) == {"_id": {"$gte": "fffffff0"}}
    assert slice_filter(0, ID_SPACE) == {}  # the whole collection (one smaller than a page)


def test_every_string_id_falls_in_exactly_one_slice_of_a_walk() -> None:
    ids = [str(uuid.UUID(int=n)) for n in (0, 1, 2**127, 2**128 - 1)]
    ids += [str(uuid.uuid4()) for _ in range(200)]
    ids += ["", "-a", "0", "Ab", "ZZZ", "user-1", "~", "ffffffff", "fffffffg", "00000000", "9fffffff-x"]
    cuts = [0, 1, 0x0FFFFFFF, 0x9FFFFFFF, 0xA0000000, 0xFFFFFFFF, ID_SPACE]
    for aggregate_id in ids:
        holding = [start for start, end in itertools.pairwise(cuts) if in_slice(aggregate_id, start, end)]
        assert len(holding) == 1, (aggregate_id, holding)


def test_the_width_follows_the_density_within_its_bounds() -> None:
    width = FIRST_WIDTH
    assert next_width(width, 200, 100) == 2 * width
    assert next_width(width, 200, 400) == width // 2
    # A slice found nothing, or far more than a page: at most MAX_WIDTH_CHANGE times either way.
    assert next_width(width, 200, 0) == MAX_WIDTH_CHANGE * width
    assert next_width(width, 200, 1) == MAX_WIDTH_CHANGE * width
    assert next_width(width, 200, 200_000) == width // MAX_WIDTH_CHANGE
    # Never wider than MAX_WIDTH (a walk reads at least 16 slices), never narrower than 1.
    assert next_width(MAX_WIDTH, 200, 0) == MAX_WIDTH
    assert next_width(1, 200, 10_000) == 1


def test_the_next_walk_starts_at_the_density_the_last_one_found() -> None:
    assert walk_width(200, 0) == ID_SPACE  # nothing, or less than a page: one read of it all
    assert walk_width(200, 199) == ID_SPACE
    assert walk_width(200, 1_000_000) == ID_SPACE * 200 // 1_000_000
    assert walk_width(200, 400) == MAX_WIDTH  # at least 16 slices once past a page
