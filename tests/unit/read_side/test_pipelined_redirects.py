"""Which replies of a pipelined write mean "the slot moved or is moving" (sent again through the
cluster client) rather than the command's own failure."""

from __future__ import annotations

from redis.exceptions import AskError, ClusterDownError, MovedError, ResponseError, TryAgainError

from readmodels.scripts import _redirected


def test_redis_pys_parsed_redirections_count_as_redirected() -> None:
    # redis-py parses "MOVED 0 host:port" into MovedError("0 host:port"): no "MOVED" in its text.
    assert _redirected(MovedError("0 127.0.0.1:7001"))
    assert _redirected(AskError("3999 127.0.0.1:7002"))
    assert _redirected(TryAgainError("Multiple keys request during rehashing of slot"))
    assert _redirected(ClusterDownError("The cluster is down"))


def test_unparsed_redirection_texts_count_too_and_a_scripts_own_error_does_not() -> None:
    assert _redirected(ResponseError("MOVED 0 127.0.0.1:7001"))
    assert not _redirected(ResponseError("campaigns: unknown event type"))
    assert not _redirected([b"applied", 0])
