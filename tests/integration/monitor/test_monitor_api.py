"""The monitor on a served query API: the page, GET /monitor/state and the WebSocket protocol."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import websockets
from redis.asyncio import Redis
from websockets.exceptions import ConnectionClosed

from readmodels.keyspace import announcement_channel_of, monitor_channel
from service_runtime.tokens import issue_access_token
from tests.integration.monitor.conftest import ServedQueryApi
from tests.support import loopback
from tests.support.waiting import eventually


async def next_of(ws: Any, kind: str, within: float = 10) -> dict[str, Any]:
    """The next message of this type (others are skipped)."""

    async def read() -> dict[str, Any]:
        while True:
            message = orjson.loads(await ws.recv())
            if message["type"] == kind:
                return message

    return await asyncio.wait_for(read(), within)


async def closed_with(ws: Any, within: float = 10) -> int:
    """The close code the server sends (messages before it are skipped)."""

    async def drain() -> None:
        while True:
            await ws.recv()

    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(drain(), within)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


async def test_the_page_and_its_assets_are_served_without_a_token(query_api: ServedQueryApi) -> None:
    async with loopback.client(base_url=query_api.url) as client:
        page = await client.get("/monitor")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "script-src 'self';" in policy
        # The page talks to its own origin and signs in on the command API's, nothing else.
        assert "connect-src 'self' http://127.0.0.1:8001;" in policy
        assert '<script type="module" src="/monitor/assets/monitor.js?v=' in page.text
        assert 'data-command-api="http://127.0.0.1:8001"' in page.text
        assert 'type="email"' in page.text and 'type="password"' in page.text
        assert 'value="CampaignCreated"' in page.text
        entry = await client.get("/monitor/assets/monitor.js")
        assert entry.status_code == 200
        assert entry.headers["content-type"].startswith("text/javascript")
        assert 'from "./socket.js"' in entry.text
        # The modules the entry imports are revalidated on each load (their URLs carry no version).
        module = await client.get("/monitor/assets/socket.js")
        assert module.status_code == 200
        assert "/monitor/ws" in module.text
        assert module.headers["cache-control"] == "no-cache"
        again = await client.get(
            "/monitor/assets/socket.js", headers={"if-none-match": module.headers["etag"]}
        )
        assert again.status_code == 304
        assert (await client.get("/monitor/assets/monitor.css")).status_code == 200
        assert (await client.get("/monitor/assets/..%2Fapp.py")).status_code == 404
        assert (await client.get("/monitor/assets/missing.js")).status_code == 404


async def test_the_state_is_for_admins_only(query_api: ServedQueryApi) -> None:
    async with loopback.client(base_url=query_api.url) as client:
        assert (await client.get("/monitor/state")).status_code == 401
        user = query_api.bearer(query_api.token("bob", ("user",)))
        forbidden = await client.get("/monitor/state", headers=user)
        assert forbidden.status_code == 403
        assert forbidden.headers["content-type"] == "application/problem+json"
        state = await client.get("/monitor/state", headers=query_api.bearer(query_api.token()))
    assert state.status_code == 200
    body = state.json()
    assert set(body) >= {
        "relay",
        "scheduler",
        "projectors",
        "workers",
        "lag",
        "dead_letters",
        "throughput",
        "events_per_minute",
    }
    assert set(body["projectors"]) == {"campaigns", "users", "stats"}
    assert body["projectors"]["campaigns"]["state"] == "down"  # no projector runs in this test
    assert set(body["workers"]) == {"notifications", "reports"}
    assert body["relay"]["state"] == "down"
    assert body["scheduler"]["state"] == "down"  # nor a scheduler
    assert len(body["events_per_minute"]) == 60


@pytest.mark.parametrize(
    "first_message",
    [
        {"type": "auth", "token": "not-a-jwt"},
        {"type": "auth"},
        {"type": "hello", "token": "x"},
        "not json at all",
    ],
)
async def test_a_missing_or_invalid_token_is_closed_with_4401(
    query_api: ServedQueryApi, first_message: Any
) -> None:
    async with websockets.connect(query_api.ws_url) as ws:
        await ws.send(
            first_message if isinstance(first_message, str) else orjson.dumps(first_message).decode()
        )
        assert await closed_with(ws) == 4401


async def test_an_expired_token_is_closed_with_4401(query_api: ServedQueryApi) -> None:
    settings = query_api.settings
    expired = issue_access_token(
        settings,
        "the-admin",
        ["user", "admin"],
        now=datetime.now(UTC) - timedelta(seconds=settings.access_token_ttl_seconds + 5),
    )
    async with websockets.connect(query_api.ws_url) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": expired}).decode())
        assert await closed_with(ws) == 4401


async def test_a_non_admin_is_closed_with_4403(query_api: ServedQueryApi) -> None:
    async with websockets.connect(query_api.ws_url) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": query_api.token("bob", ("user",))}).decode())
        assert await closed_with(ws) == 4403


async def test_the_feed_closes_with_4401_when_the_token_expires(query_api: ServedQueryApi) -> None:
    settings = query_api.settings
    almost_expired = issue_access_token(
        settings,
        "the-admin",
        ["user", "admin"],
        now=datetime.now(UTC) - timedelta(seconds=settings.access_token_ttl_seconds - 2),
    )
    async with websockets.connect(query_api.ws_url) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": almost_expired}).decode())
        assert (await next_of(ws, "ready"))["expires_at"] > 0
        assert await closed_with(ws, within=6) == 4401


async def test_an_admin_gets_ready_a_snapshot_and_then_the_live_feed(
    query_api: ServedQueryApi, redis: Redis
) -> None:
    prefix = query_api.settings.redis_prefix
    async with websockets.connect(query_api.ws_url) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": query_api.token()}).decode())
        ready = orjson.loads(await ws.recv())
        assert ready["type"] == "ready"
        assert ":" in ready["worker"]
        snapshot = orjson.loads(await ws.recv())
        assert snapshot["type"] == "snapshot"
        assert set(snapshot["projectors"]) == {"campaigns", "users", "stats"}

        # What a projector announces, from inside its atomic apply.
        notice = (
            b'{"event_type":"CampaignCreated","aggregate_type":"campaign","aggregate_id":"c-1",'
            b'"aggregate_version":1,"occurred_at":"2027-03-01T12:00:00.000Z","actor_id":"u-1",'
            b'"event_id":"e-1","correlation_id":"req-1","projection":"campaigns",'
            b'"projected_at":"2027-03-01T12:00:00.042Z"}'
        )
        # On the shard channel of the aggregate's bucket.
        buckets = query_api.settings.read_model_buckets
        await redis.spublish(announcement_channel_of(prefix, "c-1", buckets), notice)
        event = await next_of(ws, "event")
        assert event["aggregate_id"] == "c-1"
        assert event["aggregate_version"] == 1
        assert event["actor_id"] == "u-1"
        assert event["delay_ms"] == 42

        # What the lag sampler publishes is passed on as it is.
        lag = {"type": "lag", "sampled_at": "2027-03-01T12:00:01.000Z", "groups": [], "dead_letters": {}}
        await redis.publish(monitor_channel(prefix), orjson.dumps(lag))
        assert await next_of(ws, "lag") == lag

        status = await next_of(ws, "status", within=5)
        assert status["relay"]["state"] == "down"
        assert set(status["workers"]) == {"notifications", "reports"}


def stuck_client(port: int, first_message: str) -> socket.socket:
    """A WebSocket client by hand: handshake, one masked text frame, then it never reads again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /monitor/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    payload = first_message.encode()
    mask = os.urandom(4)
    header = bytes([0x81, 0x80 | 126]) + struct.pack("!H", len(payload)) if len(payload) < 65536 else b""
    sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    return sock


async def test_a_client_that_stops_reading_is_dropped_without_slowing_the_others(
    query_api: ServedQueryApi, redis: Redis
) -> None:
    auth = orjson.dumps({"type": "auth", "token": query_api.token()}).decode()
    async with websockets.connect(query_api.ws_url, max_size=None) as fast:
        await fast.send(auth)
        await next_of(fast, "ready")
        feed = query_api.app.state.monitor.feed
        feed.capacity, feed.patience = 5, 0.5

        # A client that reads nothing after its handshake, with a small receive buffer: the
        # server's sends to it soon block.
        slow = await asyncio.to_thread(stuck_client, query_api.port, auth)  # the server runs in this loop

        def joined() -> bool:
            return any(s.queue.maxsize == 5 for s in feed.subscribers)

        await eventually(joined, what="the stuck client to join the feed")
        slow_subscriber = next(s for s in feed.subscribers if s.queue.maxsize == 5)

        bulky = {"type": "lag", "groups": [], "dead_letters": {}, "padding": "x" * 65_536}
        count = 150
        for n in range(count):
            await redis.publish(
                monitor_channel(query_api.settings.redis_prefix), orjson.dumps({**bulky, "n": n})
            )

        async def everything() -> list[int]:
            seen: list[int] = []
            while len(seen) < count:
                message = orjson.loads(await fast.recv())
                if message["type"] == "lag":
                    seen.append(message["n"])
            return seen

        assert await asyncio.wait_for(everything(), 20) == list(range(count))

        async def dropped() -> bool:
            return slow_subscriber not in feed.subscribers

        for _ in range(100):
            if await dropped():
                break
            await asyncio.sleep(0.1)
        assert slow_subscriber.too_slow.is_set()
        assert slow_subscriber.dropped_total > 0
        assert slow_subscriber not in feed.subscribers
        slow.close()
