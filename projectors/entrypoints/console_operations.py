"""Console operations run by a projectors process: a verify or a rebuild the operator console
asked for.

The query API cannot import the projectors, so the console pushes a request on a Redis list
(`console_operations_queue`); each projectors process waits on it (BRPOP: one process claims a
request), runs the replay's use case through its composition root (`replay(settings)`: the same
`verify` and `rebuild` as `campaigns replay`), keeps the operation's state (progress, then the
result) under `console_operation_key` and publishes each change on the monitor channel as
`{"type": "operation", ...}`, which the query API relays to every console over its socket. At the
end it completes the request's `console_audit` line with the result (`ConsoleAudit.finish`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from projectors.replay.application.ports import BusyError
from projectors.replay.application.rebuild import RebuildReport
from projectors.replay.application.verify import VerifyReport
from projectors.replay.bootstrap import UNREACHABLE, Replay, replay
from projectors.replay.domain.plan import SourceName, UnknownProjection
from readmodels.keyspace import console_operation_key, console_operations_queue, monitor_channel
from service_runtime.console_audit import ConsoleAudit
from service_runtime.settings import Settings

log = logging.getLogger(__name__)

CLAIM_WAIT_SECONDS = 1
PROGRESS_EVERY_SECONDS = 0.5
KINDS = ("verify", "rebuild")
# The audit line's action for each kind (query_api/entrypoints/http/console.py writes it).
ACTIONS = {"verify": "projections.verify", "rebuild": "projections.rebuild"}
AUDIT_MONGO_TIMEOUT_MS = 5000


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class OperationState:
    """One operation's document: saved under its key and published on the monitor channel."""

    def __init__(self, redis: Redis, settings: Settings, request: dict[str, Any]) -> None:
        self.redis = redis
        self.settings = settings
        self.doc: dict[str, Any] = {**request, "state": "running", "started_at": _now(), "progress": {}}

    async def save(self) -> None:
        prefix = self.settings.redis_prefix
        body = orjson.dumps({"type": "operation", **self.doc})
        await self.redis.set(
            console_operation_key(prefix, self.doc["id"]),
            body,
            ex=self.settings.console_operation_ttl_seconds,
        )
        await self.redis.publish(monitor_channel(prefix), body)


class PublishedProgress:
    """The replay's `Progress` port as operation messages, at most one every half second."""

    def __init__(self, state: OperationState, clock: Callable[[], float] = time.monotonic) -> None:
        self.state = state
        self.clock = clock
        self.pending: set[asyncio.Task[None]] = set()
        self._last = 0.0

    def _publish(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._last < PROGRESS_EVERY_SECONDS:
            return
        self._last = now
        task = asyncio.get_running_loop().create_task(self.state.save())
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    def start_pass(self, label: str, expected: int | None) -> None:
        self.state.doc["progress"] = {"pass": label, "done": 0, "expected": expected}
        self._publish(force=True)

    def advance(self, events: int) -> None:
        progress = self.state.doc["progress"]
        progress["done"] = progress.get("done", 0) + events
        self._publish()

    def say(self, message: str) -> None:
        self.state.doc["progress"]["message"] = message
        self._publish(force=True)

    async def settle(self) -> None:
        if self.pending:
            await asyncio.gather(*self.pending, return_exceptions=True)


def verify_result(report: VerifyReport) -> tuple[str, dict[str, Any]]:
    return "drift" if report.drift else "ok", {
        "drift": report.drift,
        "events": report.events,
        "invalid": report.invalid,
        "projections": [
            {"projection": p.projection, "matches": p.matches, "generation": p.live_generation}
            for p in report.projections
        ],
    }


def rebuild_result(report: RebuildReport) -> tuple[str, dict[str, Any]]:
    return "ok", {
        "events": report.events,
        "passes": report.passes,
        "seconds": round(report.seconds, 3),
        "invalid": report.invalid,
        "projections": [
            {
                "projection": p.projection,
                "old_generation": p.old_generation,
                "generation": p.new_generation,
                "applied": p.tally.applied,
                "duplicates": p.tally.duplicates,
                "parked": p.tally.parked,
                "refused": p.tally.refused,
                "old_keys_removed": p.old_keys_removed,
            }
            for p in report.projections
        ],
    }


async def _carry_out(
    tools: Replay, settings: Settings, request: dict[str, Any], progress: PublishedProgress
) -> tuple[str, dict[str, Any]]:
    projection = str(request.get("projection", "all"))
    source = SourceName(request.get("source", "mongo"))
    if request["kind"] == "rebuild":
        report = await tools.rebuild(projection, source, progress, settings.console_rebuild_grace_seconds)
        return rebuild_result(report)
    return verify_result(await tools.verify(projection, source, progress))


async def run_operation(redis: Redis, settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    """Run one requested operation to its end; its final document (also saved and published, and
    written into the request's audit line)."""
    state = OperationState(redis, settings, request)
    await state.save()
    progress = PublishedProgress(state)
    try:
        if request.get("kind") not in KINDS:
            raise UnknownProjection(f"unknown operation {request.get('kind')!r}")
        async with replay(settings) as tools:
            state.doc["state"], state.doc["result"] = await _carry_out(tools, settings, request, progress)
    except Exception as exc:  # reported to the console, not lost in a background task
        if not isinstance(exc, (UnknownProjection, BusyError, ValueError, *UNREACHABLE)):
            log.exception("console operation failed", extra={"operation": request.get("id")})
        state.doc["state"] = "failed"
        state.doc["error"] = f"{type(exc).__name__}: {exc}"
    await progress.settle()
    state.doc["finished_at"] = _now()
    # The audit line first: a console that sees the final state finds its audit line complete.
    await _audit(settings, state.doc)
    await state.save()
    return state.doc


async def _audit(settings: Settings, doc: dict[str, Any]) -> None:
    """Complete the request's audit line; a MongoDB that is down loses only this completion (the
    operation's own state keeps the result), and says so in the log."""
    audit_id, action = doc.get("audit_id"), ACTIONS.get(str(doc.get("kind")))
    if not isinstance(audit_id, str) or action is None:
        return
    result = doc["state"] if doc["state"] != "failed" else f"failed: {doc.get('error', '')}"[:300]
    detail: dict[str, Any] = {"result": doc["result"]} if "result" in doc else {}
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.mongo_url, serverSelectionTimeoutMS=AUDIT_MONGO_TIMEOUT_MS
    )
    try:
        await ConsoleAudit(client[settings.mongo_db]).finish(audit_id, action, result, detail)
    except UNREACHABLE:
        log.warning("console audit line not completed", exc_info=True, extra={"operation": doc["id"]})
    finally:
        await client.close()


async def serve_operations(redis: Redis, settings: Settings) -> None:
    """Claim and run requests until cancelled (one at a time per process)."""
    queue = console_operations_queue(settings.redis_prefix)
    while True:
        try:
            claimed = await redis.brpop([queue], timeout=CLAIM_WAIT_SECONDS)
        except UNREACHABLE:
            log.warning("console operations queue unreachable", exc_info=True)
            await asyncio.sleep(CLAIM_WAIT_SECONDS)
            continue
        if claimed is None:
            continue
        try:
            request = orjson.loads(claimed[1])
        except orjson.JSONDecodeError:
            log.warning("unreadable console operation request ignored")
            continue
        if isinstance(request, dict) and isinstance(request.get("id"), str):
            await run_operation(redis, settings, request)


@contextlib.asynccontextmanager
async def console_operations(settings: Settings, redis: Redis) -> AsyncIterator[None]:
    """Serve the console's operation requests in the background for the duration of the block."""
    task = asyncio.create_task(serve_operations(redis, settings), name="console-operations")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
