"""The one way a process connects to Redis: a Redis Cluster client when cluster nodes are set,
the plain client on `redis_url` otherwise.

Both are typed as `redis.asyncio.Redis`: redis-py's `RedisCluster` offers the same commands,
routes each by its key's slot, follows MOVED/ASK and refreshes its slot table after a failover,
so callers never branch on the topology. What differs is kept in the read-model contract
(`readmodels.keyspace` hash tags, `readmodels.scripts.pipelined`), not at call sites.

On a cluster, credentials and TLS come from `redis_url` (`rediss://user:password@any-host`):
its host is ignored, the seed nodes are `redis_cluster_nodes`.
"""

from __future__ import annotations

import functools
from contextvars import ContextVar
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.connection import parse_url
from redis.driver_info import DriverInfo
from redis.exceptions import AskError, ClusterError, RedisClusterException, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service_runtime.settings import Settings

# What redis-py raises when Redis cannot answer now, not because a command is wrong (an API
# answers it 503 with Retry-After, never 500): no connection or no answer in time, or a Redis
# Cluster with no reachable node, a slot not covered, the cluster down (ClusterDownError), or a
# slot still being moved after the client's redirections ran out (MOVED/ASK, TRYAGAIN, "TTL
# exhausted").
REDIS_UNREACHABLE: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    RedisClusterException,
    ClusterError,
    AskError,
    TryAgainError,
)


def is_cluster(redis: object) -> bool:
    return isinstance(redis, RedisCluster)


def cluster_nodes(addresses: list[str]) -> list[ClusterNode]:
    nodes = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        nodes.append(ClusterNode(host.strip("[]") or "127.0.0.1", int(port)))
    return nodes


def connect_redis(settings: Settings, **options: Any) -> Redis:
    """A client of the Redis the settings name (nothing is connected until first used)."""
    options.setdefault("driver_info", _driver_info())
    addresses = settings.redis_cluster_addresses
    if not addresses:
        client = Redis.from_url(settings.redis_url, **options)
        pool = client.connection_pool
        pool.connection_class = _losing_writes_raise_connection_errors(pool.connection_class)
        return client
    url = parse_url(settings.redis_url)  # type: ignore[no-untyped-call]
    for name in ("username", "password"):
        if url.get(name) and name not in options:
            options[name] = url[name]
    if settings.redis_url.startswith("rediss://"):
        options.setdefault("ssl", True)
    _send_asking_with_the_command()
    cluster = RedisCluster(startup_nodes=cluster_nodes(addresses), **options)
    # The nodes it discovers are made from these arguments, the seed nodes already were.
    kind = _losing_writes_raise_connection_errors(cluster.connection_kwargs["connection_class"])
    cluster.connection_kwargs["connection_class"] = kind
    for node in cluster.nodes_manager.startup_nodes.values():
        node.connection_class = kind
    # Same commands as Redis (see the module's docstring).
    return cast(Redis, cluster)


# The stream writer's methods a write calls: met on `None`, the connection was closed under it.
_WRITER_METHODS = frozenset({"write", "writelines", "drain"})


class _WritesOnLostTransports(AbstractConnection):
    """A write on a connection that was lost under it raises the `ConnectionError` it is.
    redis-py retries, and its cluster client refreshes the slot map, only on its own
    `ConnectionError`; during a Redis Cluster failover under traffic
    (tests/chaos/test_redis_failover_under_traffic.py) reads and commands met each of these two
    as it was, a 500 where the contract says 503:

    - the event loop already closed the transport (the server went away between the connect and
      the HELLO, or between the pool's check and the command): uvloop raises `RuntimeError` ("the
      handler is closed", MagicStack/uvloop#506) where the standard library's loop only drops
      the bytes;
    - another task disconnected the connection while this one's write was on its way (the
      cluster client disconnects every connection of a node it finds gone, in use or not, and
      redis-py 8.1's `disconnect` clears the stream writer the write then calls):
      `AttributeError` on `None` (redis-py 8.2 raises `ConnectionError` itself, redis/redis-py#4288).
    """

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        try:
            await super().send_packed_command(command, check_health)
        except RuntimeError as exc:  # redis-py has already dropped the connection
            if "handler is closed" not in str(exc):
                raise
            raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc
        except AttributeError as exc:
            if exc.obj is not None or exc.name not in _WRITER_METHODS:
                raise
            raise RedisConnectionError("Error while writing to socket: closed under the write") from exc


# Each connection class `connect_redis` was given, with `_WritesOnLostTransports`.
_WITH_LOST_WRITES: dict[type[Any], type[Any]] = {}


def _losing_writes_raise_connection_errors(kind: type[Any]) -> type[Any]:
    """`kind` (plain, TLS or Unix socket, as the URL chose) with `_WritesOnLostTransports`."""
    if issubclass(kind, _WritesOnLostTransports):
        return kind
    made = _WITH_LOST_WRITES.get(kind)
    if made is None:
        made = _WITH_LOST_WRITES[kind] = type(kind.__name__, (_WritesOnLostTransports, kind), {})
    return made


@functools.cache
def _driver_info() -> DriverInfo:
    """What each connection tells the server (CLIENT SETINFO: redis-py and its version), made once
    per process: left to redis-py, every new connection reads the package's metadata to learn
    the version (`redis.utils.get_lib_version`, 3 ms here: a new connection took 4.2 ms, 44 µs
    with this), and a burst of concurrent requests on the pooled client opens several."""
    return DriverInfo()


# The node on which this task's next command must follow an ASKING (see below).
_asking_on: ContextVar[ClusterNode | None] = ContextVar("asking_on", default=None)


def _send_asking_with_the_command() -> None:
    """Make redis-py's cluster client follow an ASK redirection on one connection.

    On ASK (a key of a slot being moved has left for the importing node), redis-py 8 sends
    ASKING and then the command to the importing node, each on a connection taken from the
    node's pool and given back: with two idle connections or more (any busy process) they are
    two different connections, the command arrives without ASKING, is MOVED back to the old
    node, which answers ASK again, until the client gives up ("TTL exhausted"); every read and
    write of that slot failed while it moved (`tests/chaos_cluster/test_redis_reshard.py`).
    Here ASKING is held back and written together with the task's next command to that node,
    on one connection, which is what the cluster specification asks. Installed once, for every
    cluster client of the process; the packed pipelines (`readmodels.scripts`) do the same on
    their own.
    """
    if getattr(ClusterNode.execute_command, "_sends_asking_with_the_command", False):
        return
    original = ClusterNode.execute_command

    async def execute_command(self: ClusterNode, *args: Any, **kwargs: Any) -> Any:
        if args == ("ASKING",):
            _asking_on.set(self)  # redis-py's next call, in this task, is the command itself
            return True
        asking = _asking_on.get()
        if asking is None:
            return await original(self, *args, **kwargs)
        _asking_on.set(None)
        if asking is not self:
            return await original(self, *args, **kwargs)
        kwargs.pop("asking", None)
        connection = self.acquire_connection()
        try:
            await self.disconnect_if_needed(connection)
            await connection.send_packed_command(connection.pack_commands([("ASKING",), args]))
            await self.parse_response(connection, "ASKING")
            return await self.parse_response(connection, args[0], **kwargs)
        finally:
            try:
                await self.disconnect_if_needed(connection)
            finally:
                self.release(connection)

    execute_command._sends_asking_with_the_command = True  # type: ignore[attr-defined]
    ClusterNode.execute_command = execute_command  # type: ignore[method-assign]


async def open_pubsub(redis: Redis) -> PubSub:
    """A pub/sub connection. On a cluster the client learns the slot map first (its pub/sub picks
    a node by the channel's slot, and fails on a client that has sent nothing yet); classic
    channels reach a subscriber on any node, the cluster relays every message."""
    if isinstance(redis, RedisCluster):
        await redis.initialize()
    return redis.pubsub()
