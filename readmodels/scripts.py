"""The Lua scripts of the read models, composed from `lua/` and run by SHA (EVALSHA).

Scripts rather than a FUNCTION LOAD library: a script is addressed by the hash of its source,
so services of different versions (and tests) sharing one Redis never replace each other's
code, and a restarted Redis that lost its script cache is handled by reloading on NOSCRIPT.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from importlib.resources import files
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from readmodels.users import USER_FIELDS

ScriptArg = bytes | str | int


def _lua_list(names: Sequence[str]) -> str:
    return "{" + ", ".join(f"'{name}'" for name in names) + "}"


# Field orders come from the Python domain, so a document is assembled the same way in Lua and
# in Python.
_TEMPLATE_VALUES = {
    "{{USER_FIELDS}}": _lua_list(USER_FIELDS),
}


def lua_source(name: str) -> str:
    text = files("readmodels").joinpath("lua", f"{name}.lua").read_text()
    for placeholder, value in _TEMPLATE_VALUES.items():
        text = text.replace(placeholder, value)
    return text


@dataclass(frozen=True)
class LuaScript:
    name: str
    source: bytes

    @cached_property
    def sha(self) -> str:
        # Once per script, not per call: hashing the source was 6% of a projector's batch.
        return hashlib.sha1(self.source, usedforsecurity=False).hexdigest()

    async def load(self, redis: Redis) -> None:
        await redis.script_load(self.source)

    async def run_pipelined(
        self,
        redis: Redis,
        calls: Sequence[tuple[int, Sequence[ScriptArg]]],
        before: Sequence[tuple[ScriptArg, ...]] = (),
    ) -> list[Any]:
        """The script once per call (number of keys; keys then arguments), in one write; the
        replies in order, an error reply as its exception (returned, not raised). If Redis lost
        its script cache (restart), it is loaded and every call runs again: callers make a call
        that ran twice harmless (version guards). `before`: other commands sent first in the
        same write (reads: they may run twice too), their replies first."""
        commands = [*before, *(("EVALSHA", self.sha, keys, *args) for keys, args in calls)]
        replies = await pipelined(redis, commands)
        if any(isinstance(reply, NoScriptError) for reply in replies):
            await self.load(redis)
            replies = await pipelined(redis, commands)
        return replies

    async def run(self, redis: Redis, keys: Sequence[ScriptArg], args: Sequence[ScriptArg]) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.load(redis)
            return await redis.evalsha(self.sha, len(keys), *keys, *args)


async def pipelined(redis: Redis, commands: Sequence[tuple[ScriptArg, ...]]) -> list[Any]:
    """Send `commands` in one write and read their replies (an error reply is returned, not raised).

    Packed by hiredis (C) rather than redis-py's asyncio packer (Python, 0.8 us an argument;
    a batch of 500 campaign events is ~40,000 arguments): the packing was a third of the
    projector's time.

    On a Redis Cluster the same packing is done per primary (`_pipelined_by_node`): each command
    goes to the primary of its first key's slot (EVALSHA: its first KEYS entry; every command
    names its keys, all in one slot).
    """
    if isinstance(redis, RedisCluster):
        return await _pipelined_by_node(redis, commands)
    # (hiredis types its argument as a 1-tuple; it takes any number of arguments.)
    packed = b"".join(hiredis.pack_command(command) for command in commands)  # type: ignore[arg-type]
    pool = redis.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await connection.send_packed_command(packed)
        return await _replies(connection, len(commands))
    except BaseException:
        # A reply may be left unread on it: never hand this connection to anyone else.
        await connection.disconnect()
        raise
    finally:
        await pool.release(connection)


# Replies read under one timer: redis-py arms one per reply (its socket timeout, 5 s by default),
# and arming and cancelling a timer per reply was a fifth of a 500-call stats batch's CPU.
REPLIES_PER_TIMER = 64


async def _replies(connection: Any, count: int) -> list[Any]:
    """`count` replies from `connection` (error replies returned), each run of `REPLIES_PER_TIMER`
    of them bounded by the connection's socket timeout, as redis-py bounds each one."""
    limit: float | None = connection.socket_timeout
    loop = asyncio.get_running_loop()
    replies: list[Any] = []
    try:
        async with asyncio.timeout(None) as bound:
            for n in range(count):
                if limit is not None and n % REPLIES_PER_TIMER == 0:
                    bound.reschedule(loop.time() + limit)
                try:
                    # math.inf: no timer of redis-py's own (the bound above is the timer).
                    replies.append(await connection.read_response(timeout=math.inf))
                except ResponseError as error:
                    replies.append(error)
    except TimeoutError as error:
        # As redis-py raises it, so callers see a Redis timeout (a server's fault, retried).
        raise RedisTimeoutError(f"Timeout reading from {connection.host}:{connection.port}") from error
    return replies


# A slot being moved (`redis-cli --cluster reshard`) answers ASK (the key has left: ask the
# importing node, after ASKING on the same connection), TRYAGAIN (a script's keys are on both
# sides: wait for the move) or MOVED (the slot has gone: learn its new node). Each round sends
# every command still redirected; what is still redirected after the last round is returned as
# its error, which callers treat as the infrastructure's (the projector's batch waits and runs
# again, the query API answers 503).
REDIRECT_ROUNDS = 16
TRYAGAIN_PAUSES = (0.02, 0.05, 0.1, 0.2)  # then 0.2 s per round: about 2.5 s in all

# What a command whose slot moved or is moving gets. redis-py parses these replies into their own
# classes (MovedError's text is "<slot> <host:port>", without the word MOVED); a reply it did
# not parse keeps its text.
_REDIRECTED_ERRORS = (AskError, TryAgainError, ClusterDownError)  # AskError: MovedError too
_REDIRECTED = ("MOVED ", "ASK ", "TRYAGAIN", "CLUSTERDOWN")


def _redirected(reply: object) -> bool:
    return isinstance(reply, _REDIRECTED_ERRORS) or (
        isinstance(reply, ResponseError) and str(reply).startswith(_REDIRECTED)
    )


def _first_key(command: tuple[ScriptArg, ...]) -> ScriptArg:
    if command[0] in ("EVALSHA", "EVAL"):
        return command[3]  # EVALSHA sha numkeys key...
    return command[1]


def _primary_of(redis: RedisCluster, command: tuple[ScriptArg, ...]) -> ClusterNode | None:
    """The primary of the command's slot in the client's map; None for a slot it does not cover.

    The slot straight from the key's bytes (C CRC16) and the map, not `get_node_from_key`:
    called for each command of every batch (stats: one per event), its layers of Python were
    a visible share of the projector's time, and it raises on an uncovered slot where this
    path wants redis-py's cluster pipeline to find it."""
    key = _first_key(command)
    raw = key if isinstance(key, bytes) else str(key).encode()
    nodes = redis.nodes_manager.slots_cache.get(key_slot(raw))
    return nodes[0] if nodes else None


async def _pipelined_by_node(redis: RedisCluster, commands: Sequence[tuple[ScriptArg, ...]]) -> list[Any]:
    """`pipelined` on a cluster: one hiredis-packed write per primary, all primaries at once.

    Redirections are followed here, per node and still packed (see `REDIRECT_ROUNDS`): MOVED
    updates the client's slot map, ASK sends ASKING and the command in one write on one
    connection of the importing node, TRYAGAIN waits a little. What is still redirected after
    that (CLUSTERDOWN too), and everything left if a node cannot be reached, goes through
    redis-py's cluster pipeline: it refreshes the slot map after a failover (or raises, and the
    batch is retried). Commands that had run on other nodes may
    then run twice, which callers make harmless (version guards, see `LuaScript.run_pipelined`).
    """
    if not commands:
        return []
    await redis.initialize()  # a no-op once the slot map is known
    replies: list[Any] = [None] * len(commands)
    pending = list(range(len(commands)))
    asking: dict[int, ClusterNode] = {}  # position -> the importing node an ASK named

    async def send(node: ClusterNode, positions: list[int]) -> None:
        # (hiredis types its argument as a 1-tuple; it takes any number of arguments.)
        packed = b"".join(
            (_ASKING if p in asking else b"") + hiredis.pack_command(commands[p])  # type: ignore[arg-type]
            for p in positions
        )
        connection = node.acquire_connection()
        try:
            await connection.send_packed_command(packed)
            for position in positions:
                try:
                    if position in asking:
                        await connection.read_response()  # ASKING's OK
                    replies[position] = await connection.read_response()
                except ResponseError as error:
                    replies[position] = error
        except BaseException:
            await connection.disconnect()  # a reply may be left unread on it
            raise
        finally:
            node.release(connection)

    for round_ in range(REDIRECT_ROUNDS):
        by_node: dict[str, tuple[ClusterNode, list[int]]] = {}
        for position in pending:
            node = asking.get(position) or _primary_of(redis, commands[position])
            if node is None:  # a slot the map does not cover: let redis-py find it
                return await _rest_through_cluster_pipeline(redis, commands, replies, pending)
            by_node.setdefault(node.name, (node, []))[1].append(position)
        try:
            await asyncio.gather(*(send(node, positions) for node, positions in by_node.values()))
        except (RedisConnectionError, RedisTimeoutError, OSError):
            return await _rest_through_cluster_pipeline(redis, commands, replies, pending)
        asking = {}
        redirected, wait = [], False
        for position in pending:
            reply = replies[position]
            if isinstance(reply, MovedError):
                await redis.nodes_manager.move_slot(reply)
            elif isinstance(reply, AskError):
                importing = redis.get_node(host=reply.host, port=reply.port)
                if importing is None:
                    continue  # a node the map does not know yet: left as the error it is
                asking[position] = importing
            elif isinstance(reply, TryAgainError):
                wait = True
            else:
                continue
            redirected.append(position)
        pending = redirected
        if not pending:
            break
        if wait:
            await asyncio.sleep(TRYAGAIN_PAUSES[min(round_, len(TRYAGAIN_PAUSES) - 1)])
    # Still redirected (the cluster down, a reply redis-py did not parse, an ASK to a node the
    # map does not know): once through redis-py's cluster pipeline, which refreshes the slot map.
    left = [position for position, reply in enumerate(replies) if _redirected(reply)]
    if left:
        return await _rest_through_cluster_pipeline(redis, commands, replies, left)
    return replies


_ASKING = hiredis.pack_command(("ASKING",))


async def _rest_through_cluster_pipeline(
    redis: RedisCluster, commands: Sequence[tuple[ScriptArg, ...]], replies: list[Any], pending: list[int]
) -> list[Any]:
    again = await _through_cluster_pipeline(redis, [commands[p] for p in pending])
    for position, reply in zip(pending, again, strict=True):
        replies[position] = reply
    return replies


async def _through_cluster_pipeline(
    redis: RedisCluster, commands: Sequence[tuple[ScriptArg, ...]]
) -> list[Any]:
    pipe = redis.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return list(await pipe.execute(raise_on_error=False))


# The parts of each guarded projection script before the guard: its `applied_version` and
# `apply_change` (the stats projection's in each key layout it writes).
_APPLY_PARTS: dict[str, tuple[str, ...]] = {
    "users": ("users",),
    "stats": ("stats_state", "stats_counters", "stats"),
    "stats_layout1": ("stats_state", "stats_counters", "stats_layout1"),
}


@cache
def apply_script(projection: str) -> LuaScript:
    """The apply of one projection: shared helpers, its `apply_change`, then the version guard."""
    parts = ("common", *_APPLY_PARTS[projection], "guard")
    source = "\n".join(lua_source(part) for part in parts)
    return LuaScript(f"apply_{projection}", source.encode())


@cache
def stats_batch_script() -> LuaScript:
    """The stats projection's apply of a run of one bucket's events (lua/stats_batch.lua)."""
    source = "\n".join(lua_source(part) for part in ("stats_state", "stats_batch"))
    return LuaScript("stats_batch", source.encode())


@cache
def list_campaigns_script() -> LuaScript:
    return LuaScript("list_campaigns", lua_source("list_campaigns").encode())


@cache
def cas_script() -> LuaScript:
    """The campaigns projection's guarded write of a planned batch (lua/cas.lua)."""
    return LuaScript("cas", lua_source("cas").encode())


@cache
def read_states_script() -> LuaScript:
    """What the campaign planner needs of several aggregates, in one reply (lua/read_states.lua)."""
    return LuaScript("read_states", lua_source("read_states").encode())


@cache
def save_report_script() -> LuaScript:
    """A campaign report's version-guarded write (lua/save_report.lua)."""
    return LuaScript("save_report", lua_source("save_report").encode())
