"""Which errors are the infrastructure's (wait and retry) rather than the event's (dead-letter).

A server down, a timeout, a failover or a cluster resharding says nothing about the event being
applied: the batch is retried after a pause, holding its partition, and nothing is committed.
Only errors of the event itself (malformed, unknown type or version, refused by the read model,
a gap the log cannot fill) may dead-letter it.
"""

from __future__ import annotations

import asyncio

from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, NodeNotReadyError
from pymongo.errors import AutoReconnect, ConnectionFailure, ExecutionTimeout, NetworkTimeout
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterCrossSlotError,
    ClusterDownError,
    ClusterError,
    MasterDownError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from readmodels.generations import ReadModelsLost
from readmodels.stored_documents import UnreadableDocument

_TRANSIENT = (
    # Redis: unreachable, loading its dataset, timed out
    RedisConnectionError,  # BusyLoadingError and MaxConnectionsError included
    RedisTimeoutError,
    BusyLoadingError,
    # Redis Cluster or a failover: the slot moved, is moving, or the cluster is (re)forming
    ClusterDownError,
    ClusterError,
    AskError,  # MovedError included
    TryAgainError,
    ReadOnlyError,
    MasterDownError,
    OutOfMemoryError,
    # The cluster client's own: no reachable node, a slot not covered (SlotNotCoveredError), a
    # command whose keys span slots. A CROSSSLOT is this code's bug, never the event's: the
    # partition waits (and the projector's retry alert fires) rather than dead-letter it.
    RedisClusterException,
    ClusterCrossSlotError,
    # A script cache lost again after its reload (a failover in between)
    NoScriptError,
    # Kafka (dead letters not acknowledged) and MongoDB (gap repair) unreachable
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
    ConnectionFailure,
    AutoReconnect,
    NetworkTimeout,
    ExecutionTimeout,
    asyncio.TimeoutError,
    ConnectionError,
    # The read models are being rebuilt after a Redis loss
    ReadModelsLost,
    # A stored document in a format this code does not know (a later version's, mid-upgrade):
    # nothing the event did; the partition waits for the upgrade instead of dead-lettering it.
    UnreadableDocument,
)
# Error replies that redis-py leaves as a plain ResponseError.
_TRANSIENT_REPLIES = (
    "BUSY ",
    "LOADING",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MOVED",
    "ASK ",
    "READONLY",
    "MASTERDOWN",
    "CROSSSLOT",
)
# Error replies a cluster node gives a script whose keys moved away while it was sent.
_TRANSIENT_REPLY_PARTS = ("non local key",)


def is_transient(error: BaseException) -> bool:
    if isinstance(error, _TRANSIENT):
        return True
    if not isinstance(error, ResponseError):
        return False
    text = str(error)
    return text.startswith(_TRANSIENT_REPLIES) or any(part in text for part in _TRANSIENT_REPLY_PARTS)
