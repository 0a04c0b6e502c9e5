"""CORS on the command API: only the configured console origins may call it from a browser."""

from __future__ import annotations

from service_runtime.settings import Settings
from tests.integration.command_api.conftest import running_api

CONSOLE = "http://127.0.0.1:8002"
PREFLIGHT = {
    "Origin": CONSOLE,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type",
}


async def test_a_configured_console_origin_may_log_in_from_a_browser(settings: Settings) -> None:
    configured = settings.model_copy(update={"console_origins": f"{CONSOLE},http://localhost:8002"})
    async with running_api(configured) as api:
        preflight = await api.options("/auth/login", headers=PREFLIGHT)
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == CONSOLE
        assert "POST" in preflight.headers["access-control-allow-methods"]
        # A failed login is a problem response the page can read (the CORS headers are on it).
        login = await api.post(
            "/auth/login",
            json={"email": "nobody@example.com", "password": "wrong password 1"},
            headers={"Origin": CONSOLE},
        )
        assert login.status_code == 401
        assert login.headers["access-control-allow-origin"] == CONSOLE
        assert "access-control-allow-credentials" not in login.headers  # tokens travel in bodies, not cookies

        other = await api.options("/auth/login", headers={**PREFLIGHT, "Origin": "http://evil.example"})
        assert other.status_code == 400
        assert "access-control-allow-origin" not in other.headers


async def test_no_origin_is_allowed_by_default(settings: Settings) -> None:
    async with running_api(settings.model_copy(update={"console_origins": ""})) as api:
        preflight = await api.options("/auth/login", headers=PREFLIGHT)
        assert "access-control-allow-origin" not in preflight.headers
        login = await api.post(
            "/auth/login", json={"email": "a@example.com", "password": "x" * 12}, headers={"Origin": CONSOLE}
        )
        assert "access-control-allow-origin" not in login.headers
