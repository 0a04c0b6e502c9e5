"""Which replies of a pipelined write mean "the slot moved or is moving" (sent again through the
cluster client) rather than the command's own failure, and which primary a command goes to."""

from __future__ import annotations

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import AskError, ClusterDownError, MovedError, ResponseError, TryAgainError

from readmodels.scripts import _primary_of, _redirected


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


def test_a_command_goes_to_the_primary_redis_py_names_and_an_uncovered_slot_to_none() -> None:
    first, second = ClusterNode("127.0.0.1", 7000), ClusterNode("127.0.0.1", 7001)
    cluster = RedisCluster(startup_nodes=[first])
    cluster.nodes_manager.slots_cache = {slot: [first if slot < 8192 else second] for slot in range(16384)}
    keys = ["rm:stats.1:{b7.40}:campaign:1", "rm:stats.1:{b20.3}:campaign:2", b"rm:sentinel", "plain"]
    for key in keys:
        expected = cluster.get_node_from_key(key)
        assert _primary_of(cluster, ("EVALSHA", "sha", 1, key, "arg")) is expected
        assert _primary_of(cluster, ("GET", key)) is expected
    del cluster.nodes_manager.slots_cache[key_slot(b"plain")]
    assert _primary_of(cluster, ("GET", "plain")) is None
