"""What `verify` reports when digests differ: which keys, and how."""

from __future__ import annotations

from projectors.replay.domain.key_diff import diff_keys


def test_keys_are_reported_as_changed_only_live_or_missing_from_live() -> None:
    live = {b"campaign:1": "a", b"campaign:2": "b", b"ghost": "x"}
    rebuilt = {b"campaign:1": "a", b"campaign:2": "c", b"counts": "n"}

    diff = diff_keys(live, rebuilt)

    assert diff.changed == ["campaign:2"]
    assert diff.only_live == ["ghost"]
    assert diff.only_rebuilt == ["counts"]
    assert diff.lines() == [
        "changed: campaign:2",
        "only in the live generation: ghost",
        "missing from the live generation: counts",
    ]


def test_identical_generations_have_an_empty_diff() -> None:
    assert diff_keys({b"k": "1"}, {b"k": "1"}).empty


def test_long_lists_are_cut_with_a_count_of_the_rest() -> None:
    diff = diff_keys({f"k{i:02d}".encode(): "1" for i in range(25)}, {})
    lines = diff.lines(limit=20)
    assert len(lines) == 21
    assert lines[-1] == "only in the live generation: ... and 5 more"
