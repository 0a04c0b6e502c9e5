"""One subscription to classic and shard pub/sub channels, on standalone Redis or a Redis Cluster.

Classic channels (SUBSCRIBE) carry the rare messages every reader wants (generation swaps, the
monitor's samples): on a cluster any node relays them. Shard channels (SSUBSCRIBE; Redis 7.0)
carry the per-bucket announcements: a shard channel's messages stay within the shard owning its
slot, so a reader holds one connection per primary owning some of its channels and subscribes
each channel there. Standalone Redis takes the same commands on its one connection.

The subscription is all or nothing: it is confirmed before `open` returns (from then on no
published message can be missed), and `run` raises `SubscriptionLost` as soon as any part of it
may have missed a message: a connection lost, a channel unsubscribed by the server (its slot
moved away: Redis sends SUNSUBSCRIBE), or the cluster client's slot map (refreshed by every
MOVED the process meets) naming another owner for a channel's slot (a failover whose old
primary never closed our connection). The caller then closes it, tells its readers that messages
may be lost, and opens a new one, which learns the slot map afresh.

Not redis-py's `ClusterPubSub`: it reads the nodes' connections in turn with a timeout each
(polling), and reconnects a lost connection silently, hiding the gap.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException

Message = dict[str, Any]

CONFIRM_SECONDS = 5.0
# How often a cluster subscription compares its owners with the client's slot map.
OWNER_CHECK_SECONDS = 1.0
_DATA = ("message", "smessage")
_CONFIRMATIONS = ("subscribe", "ssubscribe")


class SubscriptionLost(ConnectionError):
    """Part of the subscription is gone: messages may have been missed."""


class _Node:
    """One connection of the subscription: its channels and shard channels."""

    def __init__(self, name: str, pool: ConnectionPool) -> None:
        self.name = name
        self.pool = pool
        self.pubsub = PubSub(connection_pool=pool)
        self.channels: list[bytes] = []
        self.shard_channels: list[bytes] = []

    async def subscribe(self) -> None:
        if self.channels:
            await self.pubsub.subscribe(*self.channels)
        # One SSUBSCRIBE per channel: on a cluster, one command's channels must share a slot.
        for channel in self.shard_channels:
            await self.pubsub.ssubscribe(channel)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.pubsub.aclose()  # type: ignore[no-untyped-call]
        with contextlib.suppress(Exception):
            await self.pool.disconnect()


def _pool(connection_class: Any, connection_kwargs: dict[str, Any]) -> ConnectionPool:
    # No silent reconnect (redis-py's retry would resubscribe and hide the gap): an error ends
    # the subscription and the owner opens a new one.
    options = {**connection_kwargs, "retry": Retry(NoBackoff(), 0)}
    return ConnectionPool(connection_class=connection_class, max_connections=1, **options)


class Subscription:
    def __init__(
        self,
        redis: Redis,
        channels: Sequence[bytes | str] = (),
        shard_channels: Sequence[bytes | str] = (),
        confirm_seconds: float = CONFIRM_SECONDS,
        owner_check_seconds: float = OWNER_CHECK_SECONDS,
    ) -> None:
        self.redis = redis
        self.channels = [_raw(channel) for channel in channels]
        self.shard_channels = [_raw(channel) for channel in shard_channels]
        self.confirm_seconds = confirm_seconds
        self.owner_check_seconds = owner_check_seconds
        self._nodes: list[_Node] = []
        self._owners: dict[bytes, str] = {}
        self._early: list[Message] = []

    @property
    def connections(self) -> int:
        return len(self._nodes)

    async def open(self, *, refresh: bool = False) -> None:
        """Subscribe every channel and wait for every confirmation. `refresh`: learn the cluster's
        slot map first (after a lost subscription). Raises when any part is not confirmed."""
        try:
            self._nodes = await self._plan(refresh)
            for node in self._nodes:
                await node.subscribe()
            async with asyncio.timeout(self.confirm_seconds):  # not wait_for: see .background
                await self._confirmations()
        except BaseException:
            await self.aclose()
            raise

    async def _plan(self, refresh: bool) -> list[_Node]:
        redis = self.redis
        if not isinstance(redis, RedisCluster):
            pool = redis.connection_pool
            node = _Node("redis", _pool(pool.connection_class, pool.connection_kwargs))
            node.channels, node.shard_channels = list(self.channels), list(self.shard_channels)
            return [node]
        await redis.initialize()
        if refresh:
            await redis.nodes_manager.initialize()
        nodes: dict[str, _Node] = {}
        owners: dict[bytes, str] = {}
        for channel in self.shard_channels:
            owner = redis.get_node_from_key(channel.decode())  # raises if the slot is not covered
            if owner is None:
                raise SubscriptionLost(f"no node owns {channel!r}")
            if owner.name not in nodes:
                nodes[owner.name] = _Node(owner.name, _pool(owner.connection_class, owner.connection_kwargs))
            nodes[owner.name].shard_channels.append(channel)
            owners[channel] = owner.name
        if self.channels:
            # Classic channels on any node (the cluster relays their messages to all).
            if not nodes:
                some = redis.get_primaries()[0]
                nodes[some.name] = _Node(some.name, _pool(some.connection_class, some.connection_kwargs))
            next(iter(nodes.values())).channels = list(self.channels)
        self._owners = owners
        return list(nodes.values())

    async def _confirmations(self) -> None:
        async def confirm(node: _Node) -> None:
            left = len(node.channels) + len(node.shard_channels)
            while left:
                message = await node.pubsub.get_message(timeout=None)
                if message is None:
                    continue
                if message["type"] in _CONFIRMATIONS:
                    left -= 1
                elif message["type"] in _DATA:
                    self._early.append(message)  # published after an earlier confirmation

        await asyncio.gather(*(confirm(node) for node in self._nodes))

    async def run(self, on_message: Callable[[Message], None]) -> NoReturn:
        """Hand every message (redis-py's dict: `type` "message" or "smessage", `channel`,
        `data`) to `on_message`, until part of the subscription is lost: then raise
        `SubscriptionLost` (the subscription stays open; close it)."""
        early, self._early = self._early, []
        for message in early:
            on_message(message)
        tasks = [asyncio.create_task(self._read(node, on_message)) for node in self._nodes]
        if isinstance(self.redis, RedisCluster) and self._owners:
            tasks.append(asyncio.create_task(self._watch_owners(self.redis)))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        error = next(iter(done)).exception()
        if isinstance(error, SubscriptionLost):
            raise error
        raise SubscriptionLost(f"pub/sub subscription lost: {error!r}") from error

    async def _read(self, node: _Node, on_message: Callable[[Message], None]) -> NoReturn:
        while True:
            message = await node.pubsub.get_message(timeout=None)
            if message is None:
                continue
            kind = message["type"]
            if kind in _DATA:
                on_message(message)
            elif kind in ("unsubscribe", "sunsubscribe"):
                # We never unsubscribe while running: the server dropped the channel (its slot
                # moved to another node).
                raise SubscriptionLost(f"{message['channel']!r} was unsubscribed by {node.name}")

    async def _watch_owners(self, redis: RedisCluster) -> NoReturn:
        while True:
            await asyncio.sleep(self.owner_check_seconds)
            for channel, name in self._owners.items():
                try:
                    owner = redis.get_node_from_key(channel.decode())
                except RedisClusterException as exc:  # the slot is not covered now
                    raise SubscriptionLost(f"{channel!r}: {exc}") from exc
                if owner is None or owner.name != name:
                    raise SubscriptionLost(f"{channel!r} moved from {name}")

    async def aclose(self) -> None:
        nodes, self._nodes = self._nodes, []
        await asyncio.gather(*(node.close() for node in nodes))


def _raw(channel: bytes | str) -> bytes:
    return channel.encode() if isinstance(channel, str) else channel
