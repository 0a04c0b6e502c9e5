"""A refresh family has an absolute lifetime: rotating it does not make it live forever."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.security.accounts import sign_up
from tests.security.conftest import System
from tests.support import loopback

pytestmark = pytest.mark.security

FAMILY_SECONDS = 3
SETTINGS = {"refresh_family_max_seconds": FAMILY_SECONDS}  # refresh tokens themselves live 14 days
SERVICES = ["command-api"]


async def test_a_refresh_family_ends_at_its_absolute_lifetime_however_often_rotated(system: System) -> None:
    async with loopback.client(base_url=system.command_url, timeout=10) as commands:
        started = time.monotonic()
        user = await sign_up(commands)
        token = user.refresh_token
        for _ in range(2):
            rotated = await commands.post("/auth/refresh", json={"refresh_token": token})
            assert rotated.status_code == 200, rotated.text
            token = rotated.json()["refresh_token"]
        await asyncio.sleep(max(0.0, FAMILY_SECONDS + 0.5 - (time.monotonic() - started)))
        ended = await commands.post("/auth/refresh", json={"refresh_token": token})
        assert ended.status_code == 401
        assert "expired" in ended.json()["detail"]
