"""What both HTTP APIs share: problem+json, correlation ids, body limits, metrics, liveness."""

from __future__ import annotations

import os
import time
from typing import Any

from fastapi import FastAPI
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service_runtime.logs import correlation_id
from service_runtime.problems import install_problem_handlers, problem_response
from service_runtime.settings import Settings

CORRELATION_HEADER = "x-correlation-id"

REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests by service, route and status",
    ["service", "method", "route", "status"],
)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by service and route",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """True if `body` nests arrays/objects deeper than `limit` (strings are skipped)."""
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


def new_correlation_id() -> str:
    """`uuid.uuid4().hex` without building a UUID object (a visible share of a hot read)."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    return raw.hex()


class HttpBasicsMiddleware:
    """One pure-ASGI layer: correlation id, body size and depth limits, request metrics.

    Pure ASGI rather than BaseHTTPMiddleware: it adds no task or stream per request, which
    keeps the read path close to the bare app's speed.
    """

    def __init__(self, app: ASGIApp, *, settings: Settings, service: str) -> None:
        self.app = app
        self.service = service
        self.max_body = settings.max_body_bytes
        self.max_depth = settings.max_json_depth
        # The labelled children, looked up once: `labels()` is a visible share of a hot read.
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cid = _header(scope, CORRELATION_HEADER)
        if not cid or len(cid) > 200:
            cid = new_correlation_id()
        token = correlation_id.set(cid)
        started = time.perf_counter()
        status_holder = [500]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-correlation-id", cid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            declared = _header(scope, "content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body:
                await self._refuse(scope, send_with_id, 413, f"request body over {self.max_body} bytes")
                return
            if scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
                body, too_big = await _read_body(receive, self.max_body)
                if too_big:
                    await self._refuse(scope, send_with_id, 413, f"request body over {self.max_body} bytes")
                    return
                if json_depth_exceeds(body, self.max_depth):
                    await self._refuse(
                        scope, send_with_id, 422, f"JSON nested deeper than {self.max_depth} levels"
                    )
                    return
                receive = _replay(body)
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            key = (scope["method"], _route_template(scope), str(status_holder[0]))
            children = self._children.get(key)
            if children is None:
                children = self._children[key] = (
                    REQUESTS.labels(self.service, *key),
                    LATENCY.labels(self.service, key[0], key[1]),
                )
            children[0].inc()
            children[1].observe(elapsed)
            correlation_id.reset(token)

    async def _refuse(self, scope: Scope, send: Send, status: int, detail: str) -> None:
        errors = [{"field": "body", "reason": detail}]
        response = problem_response(status, detail, errors=errors, instance=scope.get("path"))
        await response(scope, _no_receive, send)


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


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _header(scope: Scope, name: str) -> str | None:
    raw = name.encode()
    for key, value in scope.get("headers", []):
        if key == raw:
            return str(value.decode("latin-1"))
    return None


def _route_template(scope: Scope) -> str:
    """The matched route's path template (bounded label cardinality), or 'unmatched'.

    The router records the route it matched in the scope, so this costs no second match.
    """
    route: Any = scope.get("route")
    return str(getattr(route, "path", None) or "unmatched")


def metrics_response() -> Response:
    """Prometheus text; aggregated over all uvicorn workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        data = generate_latest(registry)
    else:
        from prometheus_client import REGISTRY

        data = generate_latest(REGISTRY)
    return Response(data, media_type=CONTENT_TYPE_LATEST)


def install_http_basics(app: FastAPI, settings: Settings, service: str) -> None:
    """problem+json handlers, X-Correlation-ID, 413 and depth limits, metrics, /health/live."""
    install_problem_handlers(app)
    app.add_middleware(HttpBasicsMiddleware, settings=settings, service=service)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        return metrics_response()

    @app.get("/health/live", tags=["ops"], summary="The process answers")
    async def live() -> dict[str, str]:
        return {"status": "ok"}
