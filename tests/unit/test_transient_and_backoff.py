"""Which errors hold a batch for a retry rather than dead-letter it, and the pauses between retries."""

from __future__ import annotations

import pytest
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterCrossSlotError,
    ClusterDownError,
    MasterDownError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from projectors.adapters.transient import is_transient
from projectors.domain.backoff import Backoff
from readmodels.stored_documents import UnreadableDocument


@pytest.mark.parametrize(
    "error",
    [
        RedisConnectionError("Connection refused"),
        RedisTimeoutError("Timeout reading"),
        BusyLoadingError("LOADING Redis is loading the dataset in memory"),
        ClusterDownError("CLUSTERDOWN The cluster is down"),
        MovedError("3999 127.0.0.1:6381"),
        AskError("3999 127.0.0.1:6381"),
        TryAgainError("TRYAGAIN Multiple keys request during rehashing of slot"),
        NoScriptError("NOSCRIPT No matching script"),
        ResponseError("BUSY Redis is busy running a script"),
        ResponseError("READONLY You can't write against a read only replica."),
        TimeoutError(),
        # A Redis Cluster: a failover, a slot moving or not covered, no node reachable, and
        # this code's own bug (keys across slots), which must hold the partition, not lose events.
        MasterDownError("MASTERDOWN Link with MASTER is down"),
        ResponseError("CLUSTERDOWN The cluster is down"),
        ResponseError("MOVED 3999 127.0.0.1:7001"),
        ResponseError("ASK 3999 127.0.0.1:7001"),
        ResponseError("TRYAGAIN Multiple keys request during rehashing of slot"),
        SlotNotCoveredError("Slot 3999 is not covered by the cluster"),
        RedisClusterException("Redis Cluster cannot be connected"),
        ClusterCrossSlotError("CROSSSLOT Keys in request don't hash to the same slot"),
        ResponseError("CROSSSLOT Keys in request don't hash to the same slot"),
        ResponseError("ERR Script attempted to access a non local key in a cluster node script: x"),
        # A campaign document stored by a later version, in a format this one cannot read.
        UnreadableDocument("a campaign document of unknown format b'\\x02'"),
    ],
)
def test_server_trouble_is_transient(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        ResponseError("campaigns: no creation event before CampaignUpdated"),
        ValueError("bad payload"),
        KeyError("name"),
    ],
)
def test_the_events_own_errors_are_permanent(error: BaseException) -> None:
    assert not is_transient(error)


def test_pauses_double_up_to_the_cap_and_start_again_after_a_success() -> None:
    backoff = Backoff(initial=0.2, cap=1.0)
    assert [backoff.next_pause() for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    backoff.reset()
    assert backoff.next_pause() == 0.2


def test_an_initial_pause_above_the_cap_is_capped() -> None:
    assert Backoff(initial=5.0, cap=1.0).next_pause() == 1.0
