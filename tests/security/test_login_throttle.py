"""Login throttling on the running command API: 429 with Retry-After, for the right password too."""

from __future__ import annotations

import httpx
import pytest

from tests.security.accounts import sign_up
from tests.security.conftest import System

pytestmark = pytest.mark.security

# Throttling is per e-mail and per client address, and every test here comes from 127.0.0.1:
# this module has a command API of its own, so its failed logins throttle no one else.
SETTINGS = {"login_max_attempts": 5, "login_window_seconds": 60}
SERVICES = ["command-api"]


async def test_repeated_failed_logins_get_429_with_retry_after(system: System) -> None:
    async with httpx.AsyncClient(base_url=system.command_url, timeout=10) as commands:
        user = await sign_up(commands)
        wrong = {"email": user.email, "password": "not the password at all"}
        failures = [await commands.post("/auth/login", json=wrong) for _ in range(5)]
        assert [r.status_code for r in failures] == [401] * 5

        throttled = await commands.post("/auth/login", json=wrong)
        assert throttled.status_code == 429, throttled.text
        assert throttled.headers["content-type"].startswith("application/problem+json")
        retry_after = int(throttled.headers["retry-after"])
        assert 1 <= retry_after <= 60

        # While throttled, even the right password is refused: guessing gains nothing.
        right = await commands.post("/auth/login", json={"email": user.email, "password": user.password})
        assert right.status_code == 429
        assert "access_token" not in right.text
