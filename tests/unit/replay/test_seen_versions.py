"""What a replay pass keeps of the events it read: the newest version per aggregate, in memory
(tests) or spilled to a temporary SQLite file (the MongoDB source), with the same answers."""

from __future__ import annotations

import random

import pytest

from projectors.replay.adapters.seen_spill import LOOKUP_CHUNK, SpilledSeenVersions
from projectors.replay.domain.seen_versions import SeenVersions, SeenVersionStore, newer_in_order


def test_a_batch_is_judged_in_order_against_what_was_read_before_it() -> None:
    verdicts, raised = newer_in_order([("a", 1), ("a", 2), ("a", 2), ("b", 3), ("c", 1)], {"b": 5, "c": 0})
    assert verdicts == [True, True, False, False, True]
    assert raised == {"a": 2, "c": 1}  # b stays at 5: not raised, not rewritten


@pytest.mark.parametrize("store", [SeenVersions, SpilledSeenVersions])
def test_a_version_is_new_once_and_an_older_one_never_lowers_the_mark(store: type[SeenVersionStore]) -> None:
    seen = store()
    try:
        assert seen.keep_newer([("a", 1), ("a", 2), ("b", 1)]) == [True, True, True]
        assert seen.keep_newer([("a", 2), ("a", 1), ("a", 3), ("b", 1), ("c", 4)]) == [
            False,
            False,
            True,
            False,
            True,
        ]
        assert seen.keep_newer([]) == []
        assert seen.keep_newer([("a", 3), ("c", 5)]) == [False, True]
    finally:
        seen.close()


def test_the_spill_answers_as_the_dict_does_over_many_batches_wider_than_a_lookup() -> None:
    rng = random.Random(21)
    ids = [f"agg-{n}" for n in range(3 * LOOKUP_CHUNK)]
    memory, spill = SeenVersions(), SpilledSeenVersions(cache_kib=64)
    try:
        for _ in range(20):
            batch = [(rng.choice(ids), rng.randint(1, 8)) for _ in range(2 * LOOKUP_CHUNK)]
            assert spill.keep_newer(batch) == memory.keep_newer(batch)
        assert len(spill) == len(memory)
        assert all(spill.last(i) == memory.last(i) for i in ids)
    finally:
        spill.close()
