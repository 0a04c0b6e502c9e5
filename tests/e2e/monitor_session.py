"""What the monitor's end-to-end tests share: an admin signed in through the command API, campaigns."""

from __future__ import annotations

import uuid

from command_api.entrypoints.admin import grant_admin
from tests.support import loopback
from tests.support.factories import campaign_body
from tests.support.services import RunningServices

PASSWORD = "correct horse battery 9"


def campaign(name: str) -> dict[str, object]:
    return campaign_body(
        name=name,
        description="watched on the monitor",
        budget={"amount": "1200.00", "currency": "EUR"},
        tags=["monitor"],
    )


async def register(services: RunningServices, admin: bool = True) -> str:
    """Register a user (made an admin through the CLI's own function); its e-mail."""
    email = f"{'ops' if admin else 'user'}-{uuid.uuid4().hex[:8]}@example.com"
    async with loopback.client(base_url=services.command_url, timeout=10) as commands:
        registered = await commands.post(
            "/auth/register", json={"email": email, "password": PASSWORD, "name": "Ops"}
        )
        assert registered.status_code == 201, registered.text
    if admin:
        await grant_admin(services.settings, email)
    return email


async def log_in(services: RunningServices, email: str) -> str:
    """A fresh access token for this user."""
    async with loopback.client(base_url=services.command_url, timeout=10) as commands:
        login = await commands.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        return str(login.json()["access_token"])


async def sign_in(services: RunningServices, admin: bool = True) -> str:
    """Register a user (an admin through the CLI's own function), log in, return the access token."""
    return await log_in(services, await register(services, admin))


async def create_campaigns(
    services: RunningServices, token: str, names: list[str], correlation_id: str | None = None
) -> list[str]:
    headers = {"Authorization": f"Bearer {token}"}
    if correlation_id:
        headers["X-Correlation-ID"] = correlation_id
    ids = []
    async with loopback.client(base_url=services.command_url, timeout=10) as commands:
        for name in names:
            created = await commands.post("/campaigns", json=campaign(name), headers=headers)
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
    return ids


async def change(services: RunningServices, token: str, campaign_id: str, action: str) -> None:
    """A lifecycle command: activate, pause or complete."""
    async with loopback.client(base_url=services.command_url, timeout=10) as commands:
        done = await commands.post(
            f"/campaigns/{campaign_id}/{action}", headers={"Authorization": f"Bearer {token}"}
        )
        assert done.status_code == 200, done.text
