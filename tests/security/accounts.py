"""Users for the security tests: registered and logged in through the running command API."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service_runtime.keys import signing_key
from service_runtime.settings import Settings
from tests.support.factories import campaign_body
from tests.support.keys import hs256_token
from tests.support.services import settings_env
from tests.support.stack import REPO

CAMPAIGN = campaign_body(
    name="Private plans",
    description="nobody else's business",
    budget={"amount": "1200.00", "currency": "EUR"},
    tags=["secret"],
)


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


async def sign_up(
    commands: httpx.AsyncClient, password: str | None = None, headers: dict[str, str] | None = None
) -> User:
    email = f"user-{uuid.uuid4().hex[:10]}@example.com"
    password = password or f"pass phrase {uuid.uuid4().hex[:12]}"
    registered = await commands.post(
        "/auth/register", json={"email": email, "password": password, "name": "U"}, headers=headers
    )
    assert registered.status_code == 201, registered.text
    return await log_in(commands, registered.json()["id"], email, password, headers)


async def log_in(
    commands: httpx.AsyncClient,
    user_id: str,
    email: str,
    password: str,
    headers: dict[str, str] | None = None,
) -> User:
    login = await commands.post("/auth/login", json={"email": email, "password": password}, headers=headers)
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


# The HS256 secret the repository shipped until issue 15: public, so it must open nothing.
FORMER_DEV_SECRET = "dev-only-jwt-secret-change-me-0123456789abcdef"
_PEM_PRIVATE = re.compile(
    rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----.+?-----END (?:[A-Z]+ )?PRIVATE KEY-----", re.S
)
_QUOTED_SECRET = re.compile(rb"""(?i)(?:secret|key|password)[A-Za-z_]*\s*[:=]\s*["']([^"'\s]{16,})["']""")


def repository_key_material() -> tuple[list[bytes], list[bytes]]:
    """(PEM private keys, quoted secret-like strings) found in any file git tracks."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(
        b"\0"
    )
    pems: list[bytes] = []
    secrets: list[bytes] = [FORMER_DEV_SECRET.encode()]
    for name in filter(None, names):
        path = REPO / name.decode()
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        data = path.read_bytes()
        pems += _PEM_PRIVATE.findall(data)
        secrets += _QUOTED_SECRET.findall(data)
    return pems, sorted(set(secrets))


def forged_tokens(settings: Settings, user_id: str) -> dict[str, str]:
    """Access tokens an attacker could present, each of which must be refused: every secret and
    private key found in the repository, HS256 under any key (the public one included), tokens
    without `typ: at+jwt`, and this run's real key with wrong claims."""
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
    real = signing_key(settings)
    typed = {"kid": real.kid, "typ": "at+jwt"}
    public_pem = Path(settings.jwt_public_keys_file).read_bytes()

    def eddsa(body: dict[str, Any], key: Any = real.private, headers: dict[str, Any] | None = None) -> str:
        return jwt.encode(body, key, algorithm="EdDSA", headers=typed if headers is None else headers)

    plain = {**claims, "iat": int(now.timestamp()), "exp": int((now + timedelta(minutes=10)).timestamp())}
    no_expiry = {k: v for k, v in claims.items() if k != "exp"}
    tokens = {
        "alg none": f"{_b64({'alg': 'none', 'typ': 'at+jwt', 'kid': real.kid})}.{_b64(plain)}.",
        "alg none, signature kept": f"{_b64({'alg': 'none', 'typ': 'at+jwt'})}.{_b64(plain)}."
        + eddsa(claims).split(".")[2],
        "HS256 with the public key as secret": hs256_token(claims, public_pem, typed),
        "EdDSA by an attacker's key under the real kid": eddsa(claims, Ed25519PrivateKey.generate()),
        "real key, no typ": eddsa(claims, headers={"kid": real.kid}),
        "real key, typ JWT": eddsa(claims, headers={"kid": real.kid, "typ": "JWT"}),
        "real key, no kid": eddsa(claims, headers={"typ": "at+jwt"}),
        "wrong audience": eddsa({**claims, "aud": "another-api"}),
        "wrong issuer": eddsa({**claims, "iss": "someone-else"}),
        "expired": eddsa({**claims, "iat": now - timedelta(hours=2), "exp": now - timedelta(hours=1)}),
        "no expiry": eddsa(no_expiry),
        "typed as a refresh token": eddsa({**claims, "type": "refresh"}),
        "not a JWT": "definitely.not.a-jwt",
    }
    pems, secrets = repository_key_material()
    for secret in secrets:
        for headers in (typed, {"typ": "JWT"}):
            tokens[f"HS256 with {secret[:12]!r}... {headers}"] = hs256_token(claims, secret, headers)
    for number, pem in enumerate(pems):
        key = serialization.load_pem_private_key(pem, password=None)
        algorithm = "EdDSA" if isinstance(key, Ed25519PrivateKey) else "RS256"
        tokens[f"repository private key {number}"] = jwt.encode(
            claims, key, algorithm=algorithm, headers=typed
        )  # type: ignore[arg-type]
    return tokens
