"""The live monitor: the page (GET /monitor), its feed (WebSocket /monitor/ws) and GET /monitor/state.

The page holds no data, so anyone may load it. It signs in with an e-mail and password on the
command API (CORS, for the origins in CAMPAIGNS_CONSOLE_ORIGINS), keeps the tokens in memory and
sends the admin access token as the WebSocket's first message (never in a URL). The protocol:

- client first: `{"type": "auth", "token": "<access JWT>"}`, within `monitor_auth_seconds` (5 s)
  and at most `monitor_first_frame_bytes` (64 KiB; a bigger one is closed with 1009 unparsed);
  a worker holds at most `monitor_preauth_sockets` sockets that have not authenticated yet, and
  refuses more before the handshake completes (HTTP 403);
- server: `{"type": "ready", "worker": "<host:pid>", ...}`, or closes with 4401 (missing,
  invalid or expired token) or 4403 (not an admin);
- then `{"type": "snapshot", ...}` (the body of GET /monitor/state), and as they happen
  `{"type": "event", ...}`, `{"type": "lag", ...}`, `{"type": "throughput", ...}`,
  `{"type": "status", ...}` and, for a client that fell behind, `{"type": "dropped", "count": n}`;
- the server closes with 4401 when the token expires or its user's sessions end (logout,
  logout-all, a role change: checked every `session_check_seconds`), and 1013 when the client is
  too slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import orjson
from fastapi import APIRouter, Depends, FastAPI, Request, WebSocket
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from starlette.responses import Response
from starlette.websockets import WebSocketDisconnect

from events.types import EVENT_TYPES
from query_api.adapters.monitor_feed import MonitorFeed, Subscriber
from query_api.adapters.monitor_state import MonitorState
from query_api.domain.stats import window
from query_api.entrypoints.http.dependencies import ReadSide, admin, read_side
from query_api.entrypoints.http.schemas import problems
from readmodels.groups import PROJECTIONS, monitored_groups, projection_names, worker_names
from service_runtime.openapi import ok
from service_runtime.problems import Problem
from service_runtime.tokens import InvalidToken, Principal

PACKAGE = Path(__file__).resolve().parents[2]
TEMPLATES = Jinja2Templates(directory=str(PACKAGE / "templates"))
STATIC = PACKAGE / "static"
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
# The page's style and its ES modules (monitor.js imports the others by relative URL).
ASSETS = {p.name: MEDIA_TYPES[p.suffix] for p in sorted(STATIC.iterdir()) if p.suffix in MEDIA_TYPES}
ENTRY_POINTS = ("monitor.js", "monitor.css")  # named with ?v=<digest> by the page, so cached long

CLOSE_TIMEOUT_SECONDS = 2.0
# Application close codes (4000-4999), as HTTP's 401 and 403; 1013 is "try again later".
UNAUTHENTICATED, FORBIDDEN, TRY_AGAIN_LATER, MESSAGE_TOO_BIG = 4401, 4403, 1013, 1009


def page_headers(command_api_url: str) -> dict[str, str]:
    """The page loads nothing but its own modules and style, and talks to its own origin and to
    the command API's (to sign in)."""
    parts = urlsplit(command_api_url)
    command_origin = f"{parts.scheme}://{parts.netloc}"
    return {
        "Content-Security-Policy": (
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src 'self' {command_origin}; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'"
        ),
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-cache",
    }


@dataclass(frozen=True)
class Monitor:
    """One per worker process, made on first use from the read side's Redis client."""

    state: MonitorState
    feed: MonitorFeed


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    monitor: Monitor | None = getattr(app.state, "monitor", None)
    if monitor is not None:
        await monitor.feed.stop()


router = APIRouter(tags=["monitor"], lifespan=_lifespan)


def monitor_of(app: Any, side: ReadSide) -> Monitor:
    monitor: Monitor | None = getattr(app.state, "monitor", None)
    if monitor is None:
        groups = monitored_groups(side.settings)
        prefix = side.settings.redis_prefix
        state = MonitorState(side.redis, prefix, projection_names(groups), worker_names(groups))
        feed = MonitorFeed(
            side.redis,
            prefix,
            state.services,
            buckets=side.settings.read_model_buckets,
            stop_seconds=side.settings.background_stop_seconds,
        )
        monitor = Monitor(state, feed)
        app.state.monitor = monitor
    return monitor


def worker_id() -> str:
    """Which API worker process answers (the page shows it; tests check both are reached)."""
    return f"{socket.gethostname()}:{os.getpid()}"


async def state_document(side: ReadSide, monitor: Monitor) -> dict[str, Any]:
    services = await monitor.state.services()
    samples = await monitor.state.samples()
    minutes = window()
    _, _, per_minute = await side.read_models.stats(minutes)
    return {
        **services,
        **samples,
        "events_per_minute": [
            {"minute": m.strftime("%Y-%m-%dT%H:%M:00Z"), "count": n}
            for m, n in zip(minutes, per_minute, strict=True)
        ],
    }


@cache
def _asset(name: str) -> tuple[bytes, str]:
    body = (STATIC / name).read_bytes()
    return body, hashlib.sha256(body).hexdigest()[:12]


@router.get(
    "/monitor",
    response_class=HTMLResponse,
    summary="The live monitor page (it signs in on the command API; its data comes over /monitor/ws)",
)
async def monitor_page(request: Request, side: ReadSide = Depends(read_side)) -> Response:
    command_api_url = side.settings.command_api_public_url
    return TEMPLATES.TemplateResponse(
        request,
        "monitor.html",
        {
            "event_types": sorted(EVENT_TYPES),
            "projections": list(PROJECTIONS),
            "command_api_url": command_api_url,
            "asset_version": {name: _asset(name)[1] for name in ENTRY_POINTS},
        },
        headers=page_headers(command_api_url),
    )


@router.get("/monitor/assets/{name}", include_in_schema=False)
async def monitor_asset(name: str, request: Request) -> Response:
    if name not in ASSETS:
        raise Problem(404, "no such asset")
    body, digest = _asset(name)
    # The entry points are versioned in the page's URLs; the modules they import are not, so
    # those are revalidated on every load (a 304 when unchanged).
    cache = "public, max-age=3600" if name in ENTRY_POINTS else "no-cache"
    headers = {"ETag": f'"{digest}"', "Cache-Control": cache, "X-Content-Type-Options": "nosniff"}
    if request.headers.get("if-none-match") == f'"{digest}"':
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=ASSETS[name], headers=headers)


@router.get(
    "/monitor/state",
    summary="What the monitor shows, as JSON (admin only)",
    description=(
        "The state of the relay, the scheduler (timers pending, next due time, lateness), each "
        "projector and each worker; consumer lag per group and "
        "partition and dead letters per topic (sampled from Kafka by the projectors); the "
        "throughput history; events per minute."
    ),
    response_model=None,
    responses={
        **ok(200, "The monitor's state", content={"application/json": {"schema": {"type": "object"}}}),
        **problems(401, 403, 503),
    },
)
async def monitor_state(
    request: Request, principal: Principal = Depends(admin), side: ReadSide = Depends(read_side)
) -> Response:
    document = await state_document(side, monitor_of(request.app, side))
    return Response(orjson.dumps(document), media_type="application/json")


class _PreAuth:
    """Sockets of this worker that have not authenticated yet."""

    count = 0


@router.websocket("/monitor/ws")
async def monitor_feed(websocket: WebSocket) -> None:
    side: ReadSide = websocket.state.read_side
    if _PreAuth.count >= side.settings.monitor_preauth_sockets:
        # Refused before the handshake completes: the client gets HTTP 403 and holds nothing.
        await websocket.close(TRY_AGAIN_LATER)
        return
    _PreAuth.count += 1
    try:
        await websocket.accept()
        authenticated = await _authenticate(websocket, side)
    finally:
        _PreAuth.count -= 1
    if authenticated is None:
        return
    principal, expires_at = authenticated
    monitor = monitor_of(websocket.app, side)
    subscriber = await monitor.feed.join()
    try:
        await websocket.send_text(
            orjson.dumps({"type": "ready", "worker": worker_id(), "expires_at": expires_at}).decode()
        )
        snapshot = await state_document(side, monitor)
        await websocket.send_text(orjson.dumps({"type": "snapshot", **snapshot}).decode())
        await _stream(websocket, subscriber, expires_at, _session_ended(side, principal))
    except WebSocketDisconnect:
        pass
    finally:
        monitor.feed.leave(subscriber)


async def _authenticate(websocket: WebSocket, side: ReadSide) -> tuple[Principal, float] | None:
    """The admin and its token's expiry (epoch seconds) if the first message authenticates an
    admin; else closes."""
    try:
        message = await asyncio.wait_for(websocket.receive(), side.settings.monitor_auth_seconds)
    except TimeoutError:
        await _close(websocket, UNAUTHENTICATED, "no auth message")
        return None
    if message["type"] == "websocket.disconnect":
        return None
    frame = message.get("text") or message.get("bytes") or b""
    if len(frame) > side.settings.monitor_first_frame_bytes:
        await _close(websocket, MESSAGE_TOO_BIG, "the auth message is too big")
        return None
    try:
        first = orjson.loads(message.get("text") or message.get("bytes") or b"")
        token = first["token"] if first.get("type") == "auth" else None
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        token = None
    if not isinstance(token, str) or not token:
        await _close(websocket, UNAUTHENTICATED, 'the first message must be {"type": "auth", "token": ...}')
        return None
    try:
        principal = await side.tokens.principal(token)
    except InvalidToken:
        await _close(websocket, UNAUTHENTICATED, "the access token is invalid or expired")
        return None
    if not principal.is_admin:
        await _close(websocket, FORBIDDEN, "the monitor needs the admin role")
        return None
    claims = jwt.decode(token, options={"verify_signature": False})  # verified just above
    return principal, float(claims["exp"])


async def _session_ended(side: ReadSide, principal: Principal) -> None:
    """Returns once the user's sessions were ended after this token was issued."""
    while True:
        if not await side.tokens.cutoffs.allows(principal):
            return
        await asyncio.sleep(side.settings.session_check_seconds)


async def _stream(
    websocket: WebSocket, subscriber: Subscriber, expires_at: float, session_ended: Coroutine[Any, Any, None]
) -> None:
    """Send the feed until the client leaves, falls too far behind, its token expires or its
    user's sessions end."""

    async def send() -> None:
        while True:
            await websocket.send_text(await subscriber.next())

    async def receive() -> None:
        # Nothing is expected after the auth message; reading notices the client leaving.
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass

    tasks = {
        asyncio.create_task(send()),
        asyncio.create_task(receive()),
        asyncio.create_task(subscriber.too_slow.wait()),
        ended := asyncio.create_task(session_ended),
    }
    try:
        done, _ = await asyncio.wait(
            tasks, timeout=max(0.0, expires_at - time.time()), return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if not done:
        await _close(websocket, UNAUTHENTICATED, "the access token expired")
    elif ended in done and ended.exception() is None:
        await _close(websocket, UNAUTHENTICATED, "the session was ended")
    elif subscriber.too_slow.is_set():
        await _close(websocket, TRY_AGAIN_LATER, "too slow to keep up with the feed; reconnect")


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    # Bounded: a client that stopped reading may never take the close frame.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(websocket.close(code, reason), CLOSE_TIMEOUT_SECONDS)
