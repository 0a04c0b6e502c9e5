"""The campaigns the scheduler reads with its due timers, kept for the firing to take once."""

from __future__ import annotations

from command_api.adapters.mongo_unit_of_work import ReadAhead


def test_each_document_is_taken_once_and_the_rest_are_reported_missing() -> None:
    kept = ReadAhead(limit=10)
    kept.keep([{"_id": "a", "version": 2}, {"_id": "b", "version": 2}])
    found, missing = kept.take(["a", "c"])
    assert found == [{"_id": "a", "version": 2}]
    assert missing == ["c"]
    assert kept.take(["a", "b"]) == ([{"_id": "b", "version": 2}], ["a"])


def test_a_document_read_again_replaces_the_older_and_the_oldest_go_past_the_limit() -> None:
    kept = ReadAhead(limit=2)
    kept.keep([{"_id": "a", "version": 2}, {"_id": "b", "version": 2}])
    kept.keep([{"_id": "a", "version": 3}, {"_id": "c", "version": 2}])
    found, missing = kept.take(["a", "b", "c"])
    assert found == [{"_id": "a", "version": 3}, {"_id": "c", "version": 2}]
    assert missing == ["b"]
