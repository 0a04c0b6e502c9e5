"""Signing users up and in through the API, as a client would."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.factories import campaign_body

PASSWORD = "correct horse battery 9"

CAMPAIGN: dict[str, Any] = campaign_body()


@dataclass
class Account:
    user_id: str
    email: str
    access_token: str
    refresh_token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def new_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@example.com"


async def register(api: httpx.AsyncClient, email: str | None = None, name: str = "Ana") -> tuple[str, str]:
    email = email or new_email()
    response = await api.post("/auth/register", json={"email": email, "password": PASSWORD, "name": name})
    assert response.status_code == 201, response.text
    return response.json()["id"], email


async def log_in(api: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    response = await api.post("/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


async def signed_up(api: httpx.AsyncClient, email: str | None = None) -> Account:
    user_id, email = await register(api, email)
    tokens = await log_in(api, email)
    return Account(user_id, email, tokens["access_token"], tokens["refresh_token"])


async def create_campaign(api: httpx.AsyncClient, account: Account, **overrides: Any) -> str:
    response = await api.post("/campaigns", json={**CAMPAIGN, **overrides}, headers=account.auth)
    assert response.status_code == 201, response.text
    campaign_id: str = response.json()["id"]
    return campaign_id


def if_match(version: int) -> dict[str, str]:
    return {"If-Match": f'"{version}"'}
