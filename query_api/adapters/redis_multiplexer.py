"""One Redis connection per worker carrying every in-flight hot read, replies matched in order.

The detail read is one HMGET. Through redis-py each call checks a connection out of the pool
and back, about 60 µs of Python per call at 64 concurrent requests on this machine; written
straight onto one shared connection (Redis answers in order, so a FIFO of futures pairs each
reply with its request) it is about 9 µs. Everything else (scripts, pipelines, pub/sub) stays
on redis-py; this is only the read path's transport, for `redis://` URLs. On a Redis Cluster,
`ClusterMultiplexer` keeps one per primary.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence
from typing import Any, cast
from urllib.parse import urlsplit

import hiredis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.connection import parse_url
from redis.exceptions import RedisClusterException

from readmodels.scripts import pipelined
from service_runtime.redis_client import REDIS_UNREACHABLE

log = logging.getLogger(__name__)

Arg = bytes | str | int


class RedisUnavailable(ConnectionError):
    pass


# What a read meets when Redis is away: 503 with Retry-After, never a 500.
REDIS_DOWN: tuple[type[Exception], ...] = (RedisUnavailable, *REDIS_UNREACHABLE)


class _Batch:
    """Stands in the FIFO for every command of one `send_many`: the batch's single future gets
    all their replies at once (a future per command and a gather cost more than the reads)."""

    __slots__ = ("future", "replies", "size")

    def __init__(self, future: asyncio.Future[list[Any]], size: int) -> None:
        self.future = future
        self.replies: list[Any] = []
        self.size = size

    def done(self) -> bool:
        return self.future.done()

    def set_result(self, reply: Any) -> None:
        self.replies.append(reply)
        if len(self.replies) == self.size:
            self.future.set_result(self.replies)

    def set_exception(self, error: BaseException) -> None:
        self.future.set_exception(error)


class _Protocol(asyncio.Protocol):
    def __init__(self, timeout: float) -> None:
        self.reader = hiredis.Reader()
        # (reply future, answer-by time), in the order the commands were sent.
        self.pending: collections.deque[tuple[asyncio.Future[Any] | _Batch, float]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.timeout = timeout
        self._watchdog: asyncio.TimerHandle | None = None
        # Commands of one event-loop pass go out in one write: a write is a system call, and
        # one per command was the largest single cost of a hot read under load.
        self.outgoing: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        self._watch()

    def _watch(self) -> None:
        # One timer per connection rather than one per command (asyncio.timeout costs about
        # 5 µs a command under uvloop, a sixth of a hot read). Redis answers in order, so when
        # the oldest command is overdue the connection is stuck: fail all and drop it.
        loop = asyncio.get_running_loop()
        if self.pending and self.pending[0][1] < loop.time():
            self._fail_all(RedisUnavailable(f"Redis did not answer within {self.timeout}s"))
            if self.transport is not None:
                self.transport.close()
                self.transport = None
            return
        if self.transport is not None:
            self._watchdog = loop.call_later(self.timeout / 4, self._watch)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                future, _ = self.pending.popleft()
                if not future.done():  # a caller that timed out or went away
                    future.set_result(reply)
        except hiredis.ProtocolError:
            log.warning("unreadable Redis reply; closing the connection", exc_info=True)
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._fail_all(RedisUnavailable("the Redis connection was lost"))

    def _fail_all(self, error: RedisUnavailable) -> None:
        while self.pending:
            future, _ = self.pending.popleft()
            if not future.done():
                future.set_exception(error)

    def _check_open(self) -> None:
        # Lost between the connect and this command (a server going away right after accepting
        # it, as in a Redis Cluster failover): unavailable, as a read sent and never answered.
        if self.transport is None:
            raise RedisUnavailable("the Redis connection was lost")

    def send(self, args: tuple[Arg, ...]) -> asyncio.Future[Any]:
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.pending.append((future, loop.time() + self.timeout))
        if not self.outgoing:
            loop.call_soon(self.flush)
        self.outgoing.append(pack(args))
        return future

    def send_many(self, commands: Sequence[tuple[Arg, ...]]) -> asyncio.Future[list[Any]]:
        """`commands` in one write; the future gets their replies in order (an error reply as a
        `hiredis.ReplyError` among them)."""
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        batch = _Batch(future, len(commands))
        deadline = loop.time() + self.timeout
        self.pending.extend((batch, deadline) for _ in commands)
        if not self.outgoing:
            loop.call_soon(self.flush)
        # (hiredis types its argument as a 1-tuple; it takes any number of arguments.)
        self.outgoing.append(b"".join(hiredis.pack_command(command) for command in commands))  # type: ignore[arg-type]
        return future

    def flush(self) -> None:
        data, self.outgoing = b"".join(self.outgoing), []
        # A connection lost meanwhile has already failed these commands' futures.
        if self.transport is not None:
            self.transport.write(data)


def pack(args: tuple[Arg, ...]) -> bytes:
    """A command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg.encode() if isinstance(arg, str) else str(arg).encode() if isinstance(arg, int) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


class RedisMultiplexer:
    """Connects lazily (and again after a loss); a command waits at most `timeout` seconds."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        options = parse_url(url)  # type: ignore[no-untyped-call]
        if "path" in options or options.get("connection_class") is not None:
            raise ValueError("the multiplexer speaks plain TCP redis:// only")
        self.host: str = options.get("host", "127.0.0.1")
        self.port: int = int(options.get("port", 6379))
        self.db: int = int(options.get("db", 0))
        self.username: str | None = options.get("username")
        self.password: str | None = options.get("password")
        self.timeout = timeout
        self._protocol: _Protocol | None = None
        self._connecting = asyncio.Lock()

    @staticmethod
    def supports(url: str) -> bool:
        return url.startswith("redis://")

    async def _connected(self) -> _Protocol:
        current = self._protocol
        if current is not None and current.transport is not None:
            return current
        async with self._connecting:
            if self._protocol is not None and self._protocol.transport is not None:
                return self._protocol
            try:
                _, protocol = await asyncio.wait_for(
                    asyncio.get_running_loop().create_connection(
                        lambda: _Protocol(self.timeout), self.host, self.port
                    ),
                    self.timeout,
                )
            except (OSError, TimeoutError) as exc:
                raise RedisUnavailable(f"cannot reach Redis at {self.host}:{self.port}: {exc}") from exc
            if self.password is not None:
                auth: tuple[Arg, ...] = ("AUTH", self.password)
                if self.username:
                    auth = ("AUTH", self.username, self.password)
                await self._checked(protocol.send(auth))
            if self.db:
                await self._checked(protocol.send(("SELECT", self.db)))
            self._protocol = protocol
            return protocol

    async def _checked(self, future: asyncio.Future[Any]) -> Any:
        async with asyncio.timeout(self.timeout):
            reply = await future
        if isinstance(reply, hiredis.ReplyError):
            raise RedisUnavailable(str(reply))
        return reply

    async def execute(self, *args: Arg) -> Any:
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            protocol = await self._connected()
        # An overdue reply fails with RedisUnavailable (the connection's watchdog).
        reply = await protocol.send(args)
        if isinstance(reply, hiredis.ReplyError):
            raise _reply_error(reply)
        return reply

    async def execute_many(self, commands: Sequence[tuple[Arg, ...]]) -> list[Any]:
        """`commands` pipelined on the shared connection: their replies in order, an error reply
        as a `RedisCommandError` in its place (returned, not raised)."""
        if not commands:
            return []
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            protocol = await self._connected()
        replies = await protocol.send_many(commands)
        return [_reply_error(r) if isinstance(r, hiredis.ReplyError) else r for r in replies]

    async def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None


class RedisCommandError(RuntimeError):
    """Redis answered the command with an error."""


# Error replies that say the server cannot answer now (still loading its data, a replica cut off
# from its primary, a script running too long), not that the command is wrong: unavailable.
_NOT_SERVING = ("LOADING ", "MASTERDOWN ", "BUSY ")


def _reply_error(reply: hiredis.ReplyError) -> RedisCommandError | RedisUnavailable:
    text = str(reply)
    return RedisUnavailable(text) if text.startswith(_NOT_SERVING) else RedisCommandError(text)


class ClusterMultiplexer:
    """The multiplexer on a Redis Cluster: one shared connection per primary, each hot read sent
    to the primary of its key's slot (redis-py's slot map). A read whose slot moved (MOVED, ASK,
    a failover) or whose node is unreachable is answered through redis-py's cluster client
    instead, which follows the redirection and refreshes the slot map for the next reads."""

    _MOVED = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")

    def __init__(self, cluster: RedisCluster, url: str, timeout: float = 5.0) -> None:
        self.cluster = cluster
        # Credentials (and the scheme) of `redis_url` apply to every node.
        parts = urlsplit(url)
        self._credentials = parts.netloc.rpartition("@")[0]
        self.timeout = timeout
        self._nodes: dict[str, RedisMultiplexer] = {}

    def _node(self, host: str, port: int) -> RedisMultiplexer:
        name = f"{host}:{port}"
        node = self._nodes.get(name)
        if node is None:
            credentials = f"{self._credentials}@" if self._credentials else ""
            node = self._nodes[name] = RedisMultiplexer(f"redis://{credentials}{name}/0", self.timeout)
        return node

    async def execute(self, *args: Arg) -> Any:
        key = args[1]
        try:
            target = self.cluster.get_node_from_key(key.decode() if isinstance(key, bytes) else str(key))
        except (KeyError, IndexError, RedisClusterException):
            target = None  # no slot map yet (nothing sent so far), or the slot is not covered
        if target is not None:
            try:
                return await self._node(target.host, int(target.port)).execute(*args)
            except RedisCommandError as error:
                if not str(error).startswith(self._MOVED):
                    raise
            except RedisUnavailable:
                pass
        return await self.cluster.execute_command(*args)

    async def execute_many(self, commands: Sequence[tuple[Arg, ...]]) -> list[Any]:
        """`RedisMultiplexer.execute_many` on every primary at once, each command to its first
        key's (EVALSHA: its first KEYS entry); what was redirected or met an unreachable node goes
        through `readmodels.scripts.pipelined`, which follows redirections (callers send only
        reads, so one sent twice is harmless)."""
        by_node: dict[str, list[int]] = {}
        for position, command in enumerate(commands):
            key = command[3] if command[0] in ("EVALSHA", "EVAL") else command[1]
            try:
                target = self.cluster.get_node_from_key(key.decode() if isinstance(key, bytes) else str(key))
            except (KeyError, IndexError, RedisClusterException):
                target = None
            if target is None:
                return await pipelined(cast(Redis, self.cluster), commands)
            by_node.setdefault(f"{target.host}:{target.port}", []).append(position)
        replies: list[Any] = [None] * len(commands)
        rest: list[int] = []

        async def send(name: str, positions: list[int]) -> None:
            host, _, port = name.rpartition(":")
            try:
                answers = await self._node(host, int(port)).execute_many([commands[p] for p in positions])
            except RedisUnavailable:
                rest.extend(positions)
                return
            for position, reply in zip(positions, answers, strict=True):
                if isinstance(reply, RedisCommandError) and str(reply).startswith(self._MOVED):
                    rest.append(position)
                replies[position] = reply

        await asyncio.gather(*(send(name, positions) for name, positions in by_node.items()))
        if rest:
            rest.sort()
            for position, reply in zip(
                rest, await pipelined(cast(Redis, self.cluster), [commands[p] for p in rest]), strict=True
            ):
                replies[position] = reply
        return replies

    async def close(self) -> None:
        for node in self._nodes.values():
            await node.close()
        self._nodes.clear()
