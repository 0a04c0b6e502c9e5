"""The request-body depth limit: the quick count and the walk agree on what is too deep."""

from __future__ import annotations

from service_runtime.http import json_depth_exceeds


def test_a_body_nested_past_the_limit_is_refused() -> None:
    assert json_depth_exceeds(b'{"a":' * 5 + b"1" + b"}" * 5, 4)


def test_many_brackets_side_by_side_are_not_depth() -> None:
    # More opening brackets than the limit, but never more than two open at once: the walk
    # must run and find the body shallow.
    body = b"[" + b",".join([b'{"a":[1]}'] * 20) + b"]"
    assert not json_depth_exceeds(body, 4)


def test_brackets_inside_strings_do_not_count() -> None:
    assert not json_depth_exceeds(b'{"name": "' + b"[{" * 50 + b'"}', 4)


def test_a_body_at_the_limit_passes() -> None:
    assert not json_depth_exceeds(b"[" * 4 + b"]" * 4, 4)
