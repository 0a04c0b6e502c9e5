"""Users for the security tests: registered and logged in through the running command API."""

from __future__ import annotations

import base64
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import orjson

from service_runtime.settings import Settings
from tests.support.services import settings_env
from tests.support.stack import REPO

CAMPAIGN = {
    "name": "Private plans",
    "description": "nobody else's business",
    "channel": "email",
    "budget": {"amount": "1200.00", "currency": "EUR"},
    "starts_at": "2027-03-01T00:00:00Z",
    "ends_at": "2027-03-31T00:00:00Z",
    "tags": ["secret"],
}


@dataclass
class User:
    id: str
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


async def sign_up(commands: httpx.AsyncClient, password: str | None = None) -> User:
    email = f"user-{uuid.uuid4().hex[:10]}@example.com"
    password = password or f"pass phrase {uuid.uuid4().hex[:12]}"
    registered = await commands.post(
        "/auth/register", json={"email": email, "password": password, "name": "U"}
    )
    assert registered.status_code == 201, registered.text
    return await log_in(commands, registered.json()["id"], email, password)


async def log_in(commands: httpx.AsyncClient, user_id: str, email: str, password: str) -> User:
    login = await commands.post("/auth/login", json={"email": email, "password": password})
    assert login.status_code == 200, login.text
    body = login.json()
    return User(user_id, email, password, body["access_token"], body["refresh_token"])


def grant_admin(settings: Settings, email: str) -> None:
    """`campaigns users grant-admin` as an operator runs it (roles are never an API field)."""
    result = subprocess.run(
        [sys.executable, "-m", "launcher", "users", "grant-admin", email],
        cwd=REPO,
        env=settings_env(settings),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def sign_up_admin(commands: httpx.AsyncClient, settings: Settings) -> User:
    user = await sign_up(commands)
    grant_admin(settings, user.email)
    return await log_in(commands, user.id, user.email, user.password)


async def create_campaign(commands: httpx.AsyncClient, owner: User) -> str:
    created = await commands.post("/campaigns", json=CAMPAIGN, headers=owner.auth)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()


def forged_tokens(settings: Settings, user_id: str) -> dict[str, str]:
    """Access tokens an attacker could present, each of which must be refused."""
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": user_id,
        "roles": ["user", "admin"],
        "type": "access",
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + timedelta(minutes=10),
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
    }
    secret = settings.jwt_secret
    plain = {**claims, "iat": int(now.timestamp()), "exp": int((now + timedelta(minutes=10)).timestamp())}
    no_expiry = {k: v for k, v in claims.items() if k != "exp"}
    return {
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(plain)}.",
        "alg none, signature kept": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(plain)}."
        + jwt.encode(claims, secret, algorithm="HS256").split(".")[2],
        "wrong key": jwt.encode(claims, "an-attacker-secret-of-enough-length-0123456789", algorithm="HS256"),
        "wrong audience": jwt.encode({**claims, "aud": "another-api"}, secret, algorithm="HS256"),
        "wrong issuer": jwt.encode({**claims, "iss": "someone-else"}, secret, algorithm="HS256"),
        "expired": jwt.encode(
            {**claims, "iat": now - timedelta(hours=2), "exp": now - timedelta(hours=1)},
            secret,
            algorithm="HS256",
        ),
        "no expiry": jwt.encode(no_expiry, secret, algorithm="HS256"),
        "HS512 with the right key": jwt.encode(claims, secret, algorithm="HS512"),
        "typed as a refresh token": jwt.encode({**claims, "type": "refresh"}, secret, algorithm="HS256"),
        "not a JWT": "definitely.not.a-jwt",
    }
