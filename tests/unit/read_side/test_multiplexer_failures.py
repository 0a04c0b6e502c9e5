"""What the query API's Redis transport makes of a server that cannot answer: unavailable (503,
and on a cluster the read goes through redis-py instead), never an error of the command (500)."""

from __future__ import annotations

import hiredis
import pytest

from query_api.adapters.redis_multiplexer import RedisCommandError, RedisUnavailable, _Protocol, _reply_error


@pytest.mark.parametrize(
    "reply",
    [
        "LOADING Redis is loading the dataset in memory",
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
        "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
    ],
)
def test_a_server_not_serving_yet_is_unavailable(reply: str) -> None:
    assert type(_reply_error(hiredis.ReplyError(reply))) is RedisUnavailable


@pytest.mark.parametrize(
    "reply",
    [
        "WRONGTYPE Operation against a key holding the wrong kind of value",
        "NOSCRIPT No matching script. Please use EVAL.",
        "MOVED 3999 127.0.0.1:7001",
        "ERR unknown command 'BUSYX'",
    ],
)
def test_any_other_error_reply_is_the_commands(reply: str) -> None:
    error = _reply_error(hiredis.ReplyError(reply))
    assert type(error) is RedisCommandError and str(error) == reply


async def test_a_command_on_a_connection_lost_since_the_connect_is_unavailable() -> None:
    # The connection was made, then lost before the command went out (a primary killed right
    # after accepting it): the read is unavailable, as one sent and never answered.
    protocol = _Protocol(timeout=1.0)
    protocol.connection_lost(ConnectionResetError())
    with pytest.raises(RedisUnavailable):
        protocol.send(("HMGET", "campaign", "doc"))
    with pytest.raises(RedisUnavailable):
        protocol.send_many([("HMGET", "campaign", "doc")])
    assert not protocol.pending
