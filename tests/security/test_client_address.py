"""A client that reaches an API directly cannot choose its address (issue 15.2).

This module's command API runs with the default settings: no trusted proxy, so X-Forwarded-For
is never believed, loopback included (uvicorn on its own trusts 127.0.0.1).
"""

from __future__ import annotations

import uuid

import pytest

from tests.security.conftest import System
from tests.support import loopback

pytestmark = pytest.mark.security

SERVICES = ["command-api"]


async def test_x_forwarded_for_from_a_direct_client_is_ignored(system: System) -> None:
    assert system.settings.trusted_proxies == ""
    async with loopback.client(base_url=system.command_url, timeout=20) as commands:
        for i in range(system.settings.login_address_max_failures):
            failed = await commands.post(
                "/auth/login",
                json={"email": f"n-{uuid.uuid4().hex[:8]}@example.com", "password": "wrong password"},
                headers={"X-Forwarded-For": f"198.51.100.{i + 1}"},
            )
            assert failed.status_code == 401
        # A new forged address, or a whole chain of them, does not reset the budget.
        for forged in ("198.51.100.201", "203.0.113.9, 198.51.100.202", "::1"):
            refused = await commands.post(
                "/auth/login",
                json={"email": "someone@example.com", "password": "wrong password"},
                headers={"X-Forwarded-For": forged, "X-Real-IP": forged, "Forwarded": f"for={forged}"},
            )
            assert refused.status_code == 429, (forged, refused.text)


async def test_every_answer_is_nosniff_and_authenticated_ones_are_not_stored(system: System) -> None:
    async with loopback.client(base_url=system.command_url, timeout=20) as commands:
        anonymous = await commands.get("/health/live")
        assert anonymous.headers["x-content-type-options"] == "nosniff"
        refused = await commands.post("/campaigns", json={}, headers={"Authorization": "Bearer x"})
        assert refused.status_code == 401
        assert refused.headers["x-content-type-options"] == "nosniff"
        assert refused.headers["cache-control"] == "no-store"
