"""Revocable sessions, tried over HTTP against the running services: logout, logout-all, a password
change and a role change end access tokens within seconds on both APIs and close the user's
monitor sockets; two refreshes of one token within the grace window share a successor."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import orjson
import pytest
import websockets
from pymongo import AsyncMongoClient

from tests.security.accounts import User, grant_admin, log_in, sign_up, sign_up_admin
from tests.security.conftest import System
from tests.support import loopback
from tests.support.services import settings_env
from tests.support.stack import REPO
from tests.support.waiting import eventually

pytestmark = pytest.mark.security

# The bound the tests hold revocation to: session_check_seconds (1 s) plus slack for a busy machine.
ENDS_WITHIN_SECONDS = 8.0


async def refused_everywhere(system: System, user: User) -> None:
    """Wait (bounded) until the user's access token is refused by both APIs."""
    async with (
        loopback.client(base_url=system.command_url, timeout=10) as commands,
        loopback.client(base_url=system.query_url, timeout=10) as queries,
    ):
        deadline = time.monotonic() + ENDS_WITHIN_SECONDS
        while True:
            read = await queries.get("/users/me", headers=user.auth)
            listed = await queries.get("/campaigns", headers=user.auth)
            command = await commands.post("/auth/logout-all", headers=user.auth)
            statuses = (read.status_code, listed.status_code, command.status_code)
            if statuses == (401, 401, 401):
                return
            assert time.monotonic() < deadline, f"still accepted after {ENDS_WITHIN_SECONDS} s: {statuses}"
            await asyncio.sleep(0.2)


async def test_logout_ends_the_users_access_tokens_on_both_apis(system: System) -> None:
    async with loopback.client(base_url=system.command_url, timeout=10) as commands:
        user = await sign_up(commands)
        other = await log_in(commands, user.id, user.email, user.password)
        async with loopback.client(base_url=system.query_url, timeout=10) as queries:

            async def profile_served() -> bool:
                # The users projection answers once it has the registration (read-your-writes).
                return (await queries.get("/users/me", headers=user.auth)).status_code == 200

            await eventually(profile_served, what="the new user's profile on the query API")
        logged_out = await commands.post("/auth/logout", json={"refresh_token": user.refresh_token})
        assert logged_out.status_code == 204
        await refused_everywhere(system, user)
        await refused_everywhere(system, other)
        # The other session carries on with a new access token from its refresh token.
        refreshed = await commands.post("/auth/refresh", json={"refresh_token": other.refresh_token})
        assert refreshed.status_code == 200, refreshed.text
        other.access_token = refreshed.json()["access_token"]
        async with loopback.client(base_url=system.query_url, timeout=10) as queries:
            assert (await queries.get("/users/me", headers=other.auth)).status_code == 200


async def test_logout_all_ends_every_session_of_the_user(system: System) -> None:
    async with loopback.client(base_url=system.command_url, timeout=10) as commands:
        user = await sign_up(commands)
        other = await log_in(commands, user.id, user.email, user.password)
        bystander = await sign_up(commands)
        assert (await commands.post("/auth/logout-all")).status_code == 401
        assert (await commands.post("/auth/logout-all", headers=user.auth)).status_code == 204
        await refused_everywhere(system, user)
        await refused_everywhere(system, other)
        for session in (user, other):
            refused = await commands.post("/auth/refresh", json={"refresh_token": session.refresh_token})
            assert refused.status_code == 401
        # Another user is untouched; the user can log in again.
        again = await log_in(commands, user.id, user.email, user.password)
        async with loopback.client(base_url=system.query_url, timeout=10) as queries:
            assert (await queries.get("/users/me", headers=bystander.auth)).status_code == 200
            assert (await queries.get("/users/me", headers=again.auth)).status_code == 200


def revoke_admin(system: System, email: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "launcher", "users", "revoke-admin", email],
        cwd=REPO,
        env=settings_env(system.settings),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


async def test_revoke_admin_is_recorded_and_ends_the_admins_tokens_within_seconds(system: System) -> None:
    async with loopback.client(base_url=system.command_url, timeout=10) as commands:
        admin = await sign_up_admin(commands, system.settings)
        async with loopback.client(base_url=system.query_url, timeout=10) as queries:
            assert (await queries.get("/stats", headers=admin.auth)).status_code == 200
            assert "no longer an admin" in revoke_admin(system, admin.email)
            deadline = time.monotonic() + ENDS_WITHIN_SECONDS
            while (status := (await queries.get("/stats", headers=admin.auth)).status_code) != 401:
                assert status == 200 and time.monotonic() < deadline, status
                await asyncio.sleep(0.2)
            # The next refresh carries the roles the user has now.
            refreshed = await commands.post("/auth/refresh", json={"refresh_token": admin.refresh_token})
            assert refreshed.status_code == 200, refreshed.text
            demoted = {"Authorization": f"Bearer {refreshed.json()['access_token']}"}
            assert (await queries.get("/stats", headers=demoted)).status_code == 403
    mongo: AsyncMongoClient = AsyncMongoClient(system.settings.mongo_url)
    try:
        changes = (
            await mongo[system.settings.mongo_db]["events"]
            .find({"aggregate_id": admin.id, "event_type": "UserRolesChanged"})
            .sort("aggregate_version", 1)
            .to_list()
        )
    finally:
        await mongo.close()
    assert [change["payload"]["roles"] for change in changes] == [["user", "admin"], ["user"]]


async def test_ending_the_sessions_closes_the_users_open_monitor_sockets(system: System) -> None:
    async with loopback.client(base_url=system.command_url, timeout=10) as commands:
        admin = await sign_up_admin(commands, system.settings)
        url = system.query_url.replace("http://", "ws://") + "/monitor/ws"
        async with websockets.connect(url) as ws:
            await ws.send(orjson.dumps({"type": "auth", "token": admin.access_token}).decode())
            assert orjson.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "ready"
            assert (await commands.post("/auth/logout-all", headers=admin.auth)).status_code == 204
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), ENDS_WITHIN_SECONDS)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


async def test_two_refreshes_of_one_token_within_the_grace_window_share_a_successor(system: System) -> None:
    async with loopback.client(base_url=system.command_url, timeout=10) as commands:
        user = await sign_up(commands)
        # Two tabs refreshing at once, then a third a moment later.
        answers = await asyncio.gather(
            *[commands.post("/auth/refresh", json={"refresh_token": user.refresh_token}) for _ in range(2)]
        )
        late = await commands.post("/auth/refresh", json={"refresh_token": user.refresh_token})
        assert [a.status_code for a in [*answers, late]] == [200, 200, 200], [a.text for a in answers]
        successors = {a.json()["refresh_token"] for a in [*answers, late]}
        assert len(successors) == 1
        # The family lives on: the shared successor rotates normally.
        onward = await commands.post("/auth/refresh", json={"refresh_token": successors.pop()})
        assert onward.status_code == 200, onward.text


async def test_granting_admin_also_ends_the_users_tokens(system: System) -> None:
    async with loopback.client(base_url=system.command_url, timeout=10) as commands:
        user = await sign_up(commands)
        grant_admin(system.settings, user.email)
        await refused_everywhere(system, user)


async def test_a_password_change_ends_every_other_session_and_closes_the_monitor_sockets(
    system: System,
) -> None:
    async with loopback.client(base_url=system.command_url, timeout=10) as commands:
        admin = await sign_up_admin(commands, system.settings)
        other = await log_in(commands, admin.id, admin.email, admin.password)
        url = system.query_url.replace("http://", "ws://") + "/monitor/ws"
        async with websockets.connect(url) as ws:
            await ws.send(orjson.dumps({"type": "auth", "token": other.access_token}).decode())
            assert orjson.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "ready"
            new_password = f"a brand new phrase {time.time_ns()}"
            wrong = await commands.post(
                "/auth/password",
                headers=admin.auth,
                json={"current_password": "not the password", "new_password": new_password},
            )
            assert wrong.status_code == 403
            assert [e["field"] for e in wrong.json()["errors"]] == ["current_password"]
            changed = await commands.post(
                "/auth/password",
                headers=admin.auth,
                json={"current_password": admin.password, "new_password": new_password},
            )
            assert changed.status_code == 200, changed.text
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), ENDS_WITHIN_SECONDS)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        await refused_everywhere(system, admin)
        await refused_everywhere(system, other)
        for session in (admin, other):
            refused = await commands.post("/auth/refresh", json={"refresh_token": session.refresh_token})
            assert refused.status_code == 401
        old = await commands.post("/auth/login", json={"email": admin.email, "password": admin.password})
        assert old.status_code == 401
        # The client that changed it goes on with the pair it got back.
        admin.access_token = changed.json()["access_token"]
        async with loopback.client(base_url=system.query_url, timeout=10) as queries:
            assert (await queries.get("/stats", headers=admin.auth)).status_code == 200
        onward = await commands.post("/auth/refresh", json={"refresh_token": changed.json()["refresh_token"]})
        assert onward.status_code == 200, onward.text
        await log_in(commands, admin.id, admin.email, new_password)
