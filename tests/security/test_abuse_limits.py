"""Abuse limits, tried over HTTP and WebSocket against the running services: the per-user command
rate and live-campaign cap, min_version waiters per user and per worker, the monitor socket's
first frame, auth deadline and pre-auth cap, and the paginated history."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import orjson
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.security.accounts import CAMPAIGN, User, create_campaign, sign_up
from tests.security.conftest import System
from tests.support import loopback

pytestmark = pytest.mark.security

PROBLEM_JSON = "application/problem+json"
BURST = 6
LIVE = 3
SETTINGS = {
    "command_rate_per_second": 0.2,
    "command_burst": BURST,
    "max_live_campaigns": LIVE,
    "min_version_waiters_per_user": 2,
    "min_version_waiters_per_worker": 3,
    "read_wait_seconds": 4.0,
    "monitor_preauth_sockets": 3,
}


def assert_429(response: httpx.Response) -> None:
    assert response.status_code == 429, (response.status_code, response.text)
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert int(response.headers["Retry-After"]) >= 1


async def test_a_user_over_the_command_rate_gets_429_with_retry_after(system: System) -> None:
    async with loopback.client(base_url=system.command_url, timeout=10) as commands:
        user = await sign_up(commands)
        missing = f"/campaigns/{uuid.uuid4()}/activate"
        answers = [(await commands.post(missing, headers=user.auth)).status_code for _ in range(BURST)]
        assert answers == [404] * BURST
        assert_429(await commands.post(missing, headers=user.auth))
        # Another user has a bucket of their own.
        other = await sign_up(commands)
        assert (await commands.post(missing, headers=other.auth)).status_code == 404


async def test_a_user_over_the_live_campaign_cap_gets_429_until_one_is_deleted(system: System) -> None:
    async with loopback.client(base_url=system.command_url, timeout=10) as commands:
        user = await sign_up(commands)
        ids = [await create_campaign(commands, user) for _ in range(LIVE)]
        refused = await commands.post("/campaigns", json=CAMPAIGN, headers=user.auth)
        assert_429(refused)
        assert "live" in refused.json()["detail"]
        deleted = await commands.delete(f"/campaigns/{ids[0]}", headers=user.auth)
        assert deleted.status_code in (200, 204), deleted.text
        assert (await commands.post("/campaigns", json=CAMPAIGN, headers=user.auth)).status_code == 201


async def test_min_version_waiters_are_capped_per_user_and_per_worker(system: System) -> None:
    async with (
        loopback.client(base_url=system.command_url, timeout=10) as commands,
        loopback.client(base_url=system.query_url, timeout=20) as queries,
    ):
        alice, bob = await sign_up(commands), await sign_up(commands)

        async def timed(user: User) -> tuple[int, float]:
            started = time.monotonic()
            response = await queries.get(f"/campaigns/{uuid.uuid4()}?min_version=5", headers=user.auth)
            if response.status_code == 429:
                assert_429(response)
            return response.status_code, time.monotonic() - started

        per_user = await asyncio.gather(*[timed(alice) for _ in range(3)])
        assert sorted(status for status, _ in per_user) == [429, 503, 503]
        # Refused at once: sooner than the wait the others were held for.
        wait = system.settings.read_wait_seconds
        assert all(seconds < wait for status, seconds in per_user if status == 429)

        per_worker = await asyncio.gather(*[timed(user) for user in (alice, alice, bob, bob)])
        assert sorted(status for status, _ in per_worker) == [429, 503, 503, 503]


async def test_profile_min_version_waits_count_against_the_same_per_user_cap(system: System) -> None:
    async with (
        loopback.client(base_url=system.command_url, timeout=10) as commands,
        loopback.client(base_url=system.query_url, timeout=20) as queries,
    ):
        carol = await sign_up(commands)

        async def status(path: str) -> int:
            response = await queries.get(path, params={"min_version": 99}, headers=carol.auth)
            if response.status_code == 429:
                assert_429(response)
            return response.status_code

        paths = ["/users/me", "/users/me", f"/campaigns/{uuid.uuid4()}"]
        answers = await asyncio.gather(*[status(path) for path in paths])
        assert sorted(answers) == [429, 503, 503]


def monitor_url(system: System) -> str:
    return system.query_url.replace("http://", "ws://") + "/monitor/ws"


async def test_a_monitor_first_frame_over_64_kib_is_refused_unparsed(system: System) -> None:
    big = orjson.dumps({"type": "auth", "token": "x" * (64 * 1024 + 1)}).decode()
    async with websockets.connect(monitor_url(system), max_size=None) as ws:
        await ws.send(big)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_a_monitor_socket_that_does_not_authenticate_within_5_s_is_closed(system: System) -> None:
    async with websockets.connect(monitor_url(system)) as ws:
        started = time.monotonic()
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 15)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    assert time.monotonic() - started < 10


async def test_pre_auth_monitor_sockets_are_capped_per_worker(system: System) -> None:
    cap = system.settings.monitor_preauth_sockets
    held = [await websockets.connect(monitor_url(system)) for _ in range(cap)]
    try:
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(monitor_url(system))
        assert refused.value.response.status_code == 403
    finally:
        for ws in held:
            await ws.close()
    # Once they are gone, a socket is accepted again.
    await asyncio.sleep(0.5)
    async with websockets.connect(monitor_url(system)) as ws:
        await ws.send(orjson.dumps({"type": "auth", "token": "nope"}).decode())
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_history_is_paginated_with_an_opaque_cursor(system: System) -> None:
    async with (
        loopback.client(base_url=system.command_url, timeout=10) as commands,
        loopback.client(base_url=system.query_url, timeout=10) as queries,
    ):
        owner = await sign_up(commands)
        campaign_id = await create_campaign(commands, owner)
        for version in (1, 2, 3):
            edited = await commands.patch(
                f"/campaigns/{campaign_id}",
                json={"name": f"edit {version}"},
                headers={**owner.auth, "If-Match": f'"{version}"'},
            )
            assert edited.status_code == 200, edited.text
        history = f"/campaigns/{campaign_id}/history"
        first = (await queries.get(history, params={"limit": 2}, headers=owner.auth)).json()
        assert [e["aggregate_version"] for e in first["items"]] == [1, 2]
        assert isinstance(first["next_cursor"], str)
        second = await queries.get(
            history, params={"limit": 2, "cursor": first["next_cursor"]}, headers=owner.auth
        )
        assert [e["aggregate_version"] for e in second.json()["items"]] == [3, 4]
        assert second.json()["next_cursor"] is None
        whole = (await queries.get(history, headers=owner.auth)).json()
        assert len(whole["items"]) == 4 and whole["next_cursor"] is None
        for params, field in (({"limit": 101}, "limit"), ({"cursor": "bm90LWEtY3Vyc29y"}, "cursor")):
            refused = await queries.get(history, params=params, headers=owner.auth)
            assert refused.status_code == 422, refused.text
            assert field in refused.text
