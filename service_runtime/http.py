"""What both HTTP APIs share: problem+json, correlation ids, body limits, metrics, liveness."""

from __future__ import annotations

import asyncio
import bisect
import math
import os
import time
import weakref
from typing import Any, Protocol, cast, runtime_checkable

from fastapi import FastAPI
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service_runtime.logs import correlation_id
from service_runtime.problems import install_problem_handlers, problem_response
from service_runtime.settings import Settings

CORRELATION_HEADER = "x-correlation-id"
# Set in the scope of a request a fast path already wrapped in the HTTP basics and then handed
# on to FastAPI's stack, whose own HttpBasicsMiddleware then lets it through untouched.
BASICS_APPLIED = "campaigns.http_basics_applied"

REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests by service, route and status",
    ["service", "method", "route", "status"],
)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by service and route",
    ["service", "method", "route"],
    buckets=LATENCY_BUCKETS,
)
# A tally reaches the Prometheus series within this long (and at once when /metrics is served).
METRICS_FLUSH_SECONDS = 0.5
_UPPER_BOUNDS = (*LATENCY_BUCKETS, math.inf)


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """True if `body` nests arrays/objects deeper than `limit` (strings are skipped)."""
    # Nesting deeper than `limit` needs more than `limit` opening brackets: counted in C, this
    # answers almost every body without the byte-by-byte walk (10 µs -> 0.5 µs for a create).
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    in_string = False
    escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


# Correlation ids made at once: one getrandom call and one hex conversion for this many.
CORRELATION_IDS_AT_ONCE = 256
_correlation_ids: list[str] = []


def new_correlation_id() -> str:
    """What `uuid.uuid4().hex` gives (random, version 4, RFC 4122 variant) without building a
    UUID object or calling getrandom per request (2 µs of a hot read): made in batches."""
    if not _correlation_ids:
        _correlation_ids.extend(_correlation_id_batch(CORRELATION_IDS_AT_ONCE))
    return _correlation_ids.pop()


def _correlation_id_batch(count: int) -> list[str]:
    raw = bytearray(os.urandom(16 * count))
    # Each id's 7th and 9th bytes, all at once (in C): version 4, RFC 4122 variant.
    raw[6::16] = raw[6::16].translate(_VERSION_4)
    raw[8::16] = raw[8::16].translate(_VARIANT)
    text = raw.hex()
    return [text[start : start + 32] for start in range(0, 32 * count, 32)]


_VERSION_4 = bytes(byte & 0x0F | 0x40 for byte in range(256))
_VARIANT = bytes(byte & 0x3F | 0x80 for byte in range(256))


# A forked child must not hand out the ids its parent made (uvicorn spawns its workers, but a
# fork elsewhere would otherwise repeat them).
os.register_at_fork(after_in_child=_correlation_ids.clear)


class RequestMetrics:
    """Request counts and latencies tallied in plain numbers, added to the Prometheus series in batches.

    In multiprocess mode every increment of a series is a locked write to a memory-mapped file,
    and a request made three (count, latency sum, latency bucket): about 8% of a hot read. The
    tally is added within METRICS_FLUSH_SECONDS, and at once before this process reads
    its metrics or shuts down; another worker's last half second may be missing from a scrape.
    """

    _all: weakref.WeakSet[RequestMetrics] = weakref.WeakSet()

    def __init__(self, service: str) -> None:
        self.service = service
        # (method, route, status) -> [count, latency sum, count per latency bucket]
        self._pending: dict[tuple[str, str, str], list[Any]] = {}
        # The loop a flush is scheduled on (None: none is); a loop that closed took its timer along.
        self._flush_loop: asyncio.AbstractEventLoop | None = None
        RequestMetrics._all.add(self)

    def record(self, method: str, route: str, status: str, seconds: float) -> None:
        key = (method, route, status)
        tally = self._pending.get(key)
        if tally is None:
            tally = self._pending[key] = [0, 0.0, [0] * len(_UPPER_BOUNDS)]
        tally[0] += 1
        tally[1] += seconds
        tally[2][bisect.bisect_left(_UPPER_BOUNDS, seconds)] += 1  # Prometheus: value <= bound
        # Not `get_running_loop()` per request (0.46 µs on this Python, a tenth of the fast
        # read's own work): a process runs one loop, and a loop that closed took its timer along.
        loop = self._flush_loop
        if loop is None or loop.is_closed():
            loop = self._flush_loop = asyncio.get_running_loop()
            loop.call_later(METRICS_FLUSH_SECONDS, self._flush_when_due)

    def _flush_when_due(self) -> None:
        self._flush_loop = None
        self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for (method, route, status), (count, total, buckets) in pending.items():
            REQUESTS.labels(self.service, method, route, status).inc(count)
            _add_observations(LATENCY.labels(self.service, method, route), total, buckets)

    @classmethod
    def flush_all(cls) -> None:
        for metrics in list(cls._all):
            metrics.flush()


def _add_observations(child: Any, total: float, buckets: list[int]) -> None:
    """What `observe` would have done for each tallied value: prometheus-client keeps a sum and
    one (non-cumulative) counter per bucket; it has no public call to add many at once."""
    child._sum.inc(total)
    for index, count in enumerate(buckets):
        if count:
            child._buckets[index].inc(count)


# A plain answer: status, headers (a list the middleware may extend), body.
PlainAnswer = tuple[int, list[tuple[bytes, bytes]], bytes]


@runtime_checkable
class PlainAnswers(Protocol):
    """An app whose usual answer is plain bytes (`answer`), sent by HttpBasicsMiddleware itself
    with its own headers, without wrapping `send`; anything else (a problem response) is an ASGI
    app, run as any app is. `answer_now` gives the answer without a coroutine when it can (what
    the app holds in memory answers it; `authorization`: the request's first Authorization
    header, found by the middleware's own pass over them), else None, and then `answer` is
    awaited. A plain answer's headers never name Cache-Control: the middleware adds `no-store`
    to every answer to a caller with credentials without looking (an answer that may be cached
    is an ASGI app's)."""

    def answer_now(self, scope: Scope, authorization: bytes | None) -> PlainAnswer | None: ...

    async def answer(self, scope: Scope) -> PlainAnswer | ASGIApp: ...


class HttpBasicsMiddleware:
    """One pure-ASGI layer: correlation id, body size and depth limits, request metrics, and the
    `X-Content-Type-Options: nosniff` / `Cache-Control: no-store` (authenticated) headers.

    Pure ASGI rather than BaseHTTPMiddleware: it adds no task or stream per request, which
    keeps the read path close to the bare app's speed. In front of `PlainAnswers` (the query
    API's fast reads) it sends their bytes itself, the same headers added in the same order.
    """

    def __init__(self, app: ASGIApp | PlainAnswers, *, settings: Settings, service: str) -> None:
        self.app = cast(ASGIApp, app)
        self._plain = app if isinstance(app, PlainAnswers) else None
        self.service = service
        self.max_body = settings.max_body_bytes
        self.max_depth = settings.max_json_depth
        self.metrics = RequestMetrics(service)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or BASICS_APPLIED in scope:
            if scope["type"] == "lifespan":
                send = _flushing_at_shutdown(send)
            await self.app(scope, receive, send)
            return
        # One pass over the request's headers (the first of each name counts, as before).
        raw_cid = raw_length = authorization = None
        for name, value in scope.get("headers", ()):
            if name == b"x-correlation-id":
                if raw_cid is None:
                    raw_cid = value
            elif name == b"authorization":
                if authorization is None:
                    authorization = value
            elif name == b"content-length":
                if raw_length is None:
                    raw_length = value
        if raw_cid and len(raw_cid) <= 200:
            cid = raw_cid.decode("latin-1")
            # Sent back as the str encodes (UTF-8), as it always was.
            cid_header = raw_cid if raw_cid.isascii() else cid.encode()
        else:
            cid = new_correlation_id()
            cid_header = cid.encode()
        authenticated = authorization is not None
        started = time.perf_counter()
        if raw_length is None and self._plain is not None and scope["method"] == "GET":
            # The plain app's usual request (no body to check). What memory answers logs
            # nothing: sent as it is, `send` not wrapped and no correlation id put in the logs'
            # context (setting and resetting it cost a few per cent of a hot read under wrk).
            status = 500
            try:
                answer = self._plain.answer_now(scope, authorization)
                if answer is not None:
                    status = answer[0]
                    await send(_plain_start(answer, cid_header, authenticated))
                    await send({"type": "http.response.body", "body": answer[2]})
                    return
                status = 0  # not from memory: answered (and recorded) below
            finally:
                if status:
                    self._record(scope, status, started)
        token = correlation_id.set(cid)
        status_holder = [500]
        try:
            send_with_id = _sending_with_id(send, cid_header, authenticated, status_holder)
            if raw_length is not None:
                declared = raw_length.decode("latin-1")
                if declared.isdigit() and int(declared) > self.max_body:
                    await self._refuse(scope, send_with_id, 413, f"request body over {self.max_body} bytes")
                    return
            if scope["method"] in _WITH_BODY:
                body, too_big = await _read_body(receive, self.max_body)
                if too_big:
                    await self._refuse(scope, send_with_id, 413, f"request body over {self.max_body} bytes")
                    return
                if json_depth_exceeds(body, self.max_depth):
                    await self._refuse(
                        scope, send_with_id, 422, f"JSON nested deeper than {self.max_depth} levels"
                    )
                    return
                receive = replay_body(body)
            if self._plain is None:
                await self.app(scope, receive, send_with_id)
                return
            later = await self._plain.answer(scope)
            if not isinstance(later, tuple):
                await later(scope, receive, send_with_id)
                return
            status_holder[0] = later[0]
            await send(_plain_start(later, cid_header, authenticated))
            await send({"type": "http.response.body", "body": later[2]})
        finally:
            self._record(scope, status_holder[0], started)
            correlation_id.reset(token)

    def _record(self, scope: Scope, status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        self.metrics.record(scope["method"], _route_template(scope), _status_label(status), elapsed)

    async def _refuse(self, scope: Scope, send: Send, status: int, detail: str) -> None:
        errors = [{"field": "body", "reason": detail}]
        response = problem_response(status, detail, errors=errors, instance=scope.get("path"))
        await response(scope, _no_receive, send)


def _sending_with_id(send: Send, cid_header: bytes, authenticated: bool, status_holder: list[int]) -> Send:
    """`send`, adding the basics' headers to the response's start and noting its status."""

    async def send_with_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            status_holder[0] = message["status"]
            given = message.get("headers", ())
            headers = [*given, (b"x-correlation-id", cid_header), _NOSNIFF]
            # An answer to a caller with credentials may carry private data: never cached.
            if authenticated and not _names_cache_control(given):
                headers.append(_NO_STORE)
            message = {**message, "headers": headers}
        await send(message)

    return send_with_id


def _plain_start(answer: PlainAnswer, cid_header: bytes, authenticated: bool) -> Message:
    """A plain answer's start, with the headers `_sending_with_id` adds, in the same order (a
    plain answer names no Cache-Control: see `PlainAnswers`)."""
    status, headers, _ = answer
    headers.append((b"x-correlation-id", cid_header))
    headers.append(_NOSNIFF)
    if authenticated:
        headers.append(_NO_STORE)
    return {"type": "http.response.start", "status": status, "headers": headers}


_NOSNIFF = (b"x-content-type-options", b"nosniff")
_NO_STORE = (b"cache-control", b"no-store")
_WITH_BODY = frozenset(("POST", "PUT", "PATCH", "DELETE"))
_STATUS_LABELS: dict[int, str] = {}


def _names_cache_control(headers: Any) -> bool:
    for name, _ in headers:
        if name.lower() == b"cache-control":
            return True
    return False


def _status_label(status: int) -> str:
    label = _STATUS_LABELS.get(status)
    if label is None:
        label = _STATUS_LABELS[status] = str(status)
    return label


def _flushing_at_shutdown(send: Send) -> Send:
    async def send_flushed(message: Message) -> None:
        if message["type"].startswith("lifespan.shutdown"):
            RequestMetrics.flush_all()
        await send(message)

    return send_flushed


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks), False


def replay_body(body: bytes) -> Receive:
    """A `receive` that hands the app `body` (already read) as one message."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _route_template(scope: Scope) -> str:
    """The matched route's path template (bounded label cardinality), or 'unmatched'.

    The router records the route it matched in the scope, so this costs no second match.
    """
    route: Any = scope.get("route")
    return str(getattr(route, "path", None) or "unmatched")


def metrics_text() -> bytes:
    """This process's Prometheus text (all workers' in multiprocess mode), its tallies flushed
    first. The services serve metrics on an internal listener (launcher/cli.py); this is
    for in-process use (tests)."""
    RequestMetrics.flush_all()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY)


def install_http_basics(app: FastAPI, settings: Settings, service: str) -> None:
    """problem+json handlers, X-Correlation-ID, 413 and depth limits, metrics, /health/live."""
    install_problem_handlers(app)
    app.add_middleware(HttpBasicsMiddleware, settings=settings, service=service)

    @app.get("/health/live", tags=["ops"], summary="The process answers")
    async def live() -> dict[str, str]:
        return {"status": "ok"}
