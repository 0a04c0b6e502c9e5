"""Attacks on the running APIs: forged tokens, stolen refresh tokens, other users' campaigns,
privileged fields in bodies, secrets in logs and responses, weak or missing keys in production."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service_runtime.keys import generate_key_pair
from tests.security.accounts import CAMPAIGN, create_campaign, forged_tokens, sign_up
from tests.security.conftest import System
from tests.support import loopback
from tests.support.services import settings_env
from tests.support.stack import REPO

pytestmark = [pytest.mark.security, pytest.mark.filterwarnings("ignore:The HMAC key")]

PROBLEM_JSON = "application/problem+json"
# A second refresh of one token within the grace window gets the same successor
# (tests/security/test_sessions.py); reuse after it is theft.
SETTINGS = {"refresh_grace_seconds": 1.0}


def protected_requests(campaign_id: str) -> list[tuple[str, str, str, dict[str, object]]]:
    """(api, method, path, extra request arguments) of every route that needs a token."""
    return [
        ("command", "POST", "/campaigns", {"json": CAMPAIGN}),
        (
            "command",
            "PATCH",
            f"/campaigns/{campaign_id}",
            {"json": {"name": "x"}, "headers": {"If-Match": '"1"'}},
        ),
        ("command", "POST", f"/campaigns/{campaign_id}/activate", {}),
        ("command", "POST", f"/campaigns/{campaign_id}/complete", {}),
        ("command", "DELETE", f"/campaigns/{campaign_id}", {}),
        ("query", "GET", f"/campaigns/{campaign_id}", {}),
        ("query", "GET", f"/campaigns/{campaign_id}?min_version=1", {}),
        ("query", "GET", f"/campaigns/{campaign_id}?as_of_version=1", {}),
        ("query", "GET", f"/campaigns/{campaign_id}/history", {}),
        ("query", "GET", f"/campaigns/{campaign_id}/report", {}),
        ("query", "GET", "/campaigns", {}),
        ("query", "GET", "/users/me", {}),
        ("query", "GET", "/stats", {}),
        ("query", "GET", "/monitor/state", {}),
    ]


async def send(
    system: System, api: str, method: str, path: str, token: str | None, **extra: object
) -> httpx.Response:
    base = system.command_url if api == "command" else system.query_url
    headers = dict(extra.pop("headers", {}))  # type: ignore[call-overload]
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with loopback.client(base_url=base, timeout=10) as client:
        return await client.request(method, path, headers=headers, **extra)  # type: ignore[arg-type]


async def test_forged_expired_and_wrong_kind_tokens_get_401_on_both_apis(system: System) -> None:
    async with loopback.client(base_url=system.command_url, timeout=10) as commands:
        owner = await sign_up(commands)
        campaign_id = await create_campaign(commands, owner)
    tokens = forged_tokens(system.settings, owner.id)
    tokens["a refresh token used as an access token"] = owner.refresh_token
    tokens["no token at all"] = ""
    refused: list[str] = []
    for name, token in tokens.items():
        for api, method, path, extra in protected_requests(campaign_id):
            response = await send(system, api, method, path, token or None, **dict(extra))
            if response.status_code != 401 or not response.headers["content-type"].startswith(PROBLEM_JSON):
                refused.append(f"{name}: {method} {path} -> {response.status_code} {response.text[:120]}")
            elif "bearer" not in response.headers.get("www-authenticate", "").lower():
                refused.append(f"{name}: {method} {path} -> 401 without WWW-Authenticate")
    assert refused == []
    # Nothing an attacker sent changed the campaign.
    read = await send(system, "query", "GET", f"/campaigns/{campaign_id}?min_version=1", owner.access_token)
    assert read.status_code == 200
    assert (read.json()["version"], read.json()["status"], read.json()["name"]) == (
        1,
        "draft",
        CAMPAIGN["name"],
    )


async def test_monitor_feed_refuses_forged_tokens_and_non_admins(system: System) -> None:
    async with loopback.client(base_url=system.command_url, timeout=10) as commands:
        user = await sign_up(commands)
    url = system.query_url.replace("http://", "ws://") + "/monitor/ws"
    forged = forged_tokens(system.settings, user.id)
    for token, code in (
        *[(token, 4401) for name, token in forged.items() if "HS256" in name or "attacker" in name],
        (user.access_token, 4403),
    ):
        async with websockets.connect(url) as ws:
            await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == code


async def test_reused_refresh_token_revokes_its_whole_family(system: System) -> None:
    async with loopback.client(base_url=system.command_url, timeout=10) as commands:
        user = await sign_up(commands)
        other_session = await commands.post(
            "/auth/login", json={"email": user.email, "password": user.password}
        )
        first = user.refresh_token
        rotated = await commands.post("/auth/refresh", json={"refresh_token": first})
        assert rotated.status_code == 200, rotated.text
        second = rotated.json()["refresh_token"]
        assert second != first

        await asyncio.sleep(1.2)  # past the grace window
        reused = await commands.post("/auth/refresh", json={"refresh_token": first})
        assert reused.status_code == 401
        assert reused.headers["content-type"].startswith(PROBLEM_JSON)
        # The thief's or the client's copy: either way the whole family is gone.
        assert (await commands.post("/auth/refresh", json={"refresh_token": second})).status_code == 401
        # Another login is another family, untouched.
        untouched = await commands.post(
            "/auth/refresh", json={"refresh_token": other_session.json()["refresh_token"]}
        )
        assert untouched.status_code == 200

        logged_out = untouched.json()["refresh_token"]
        assert (await commands.post("/auth/logout", json={"refresh_token": logged_out})).status_code == 204
        assert (await commands.post("/auth/refresh", json={"refresh_token": logged_out})).status_code == 401


async def test_one_user_can_neither_read_change_nor_delete_anothers_campaign(system: System) -> None:
    async with loopback.client(base_url=system.command_url, timeout=10) as commands:
        owner = await sign_up(commands)
        intruder = await sign_up(commands)
        campaign_id = await create_campaign(commands, owner)
    unknown = await send(system, "query", "GET", "/campaigns/no-such-campaign", intruder.access_token)
    assert unknown.status_code == 404

    answers = []
    for api, method, path, extra in protected_requests(campaign_id):
        if path in ("/campaigns", "/users/me", "/stats", "/monitor/state"):
            continue
        response = await send(system, api, method, path, intruder.access_token, **dict(extra))
        answers.append((method, path, response.status_code, response.headers["content-type"]))
    not_404 = [a for a in answers if a[0] != "POST" or a[1] != "/campaigns"]
    assert all(status == 404 and ctype.startswith(PROBLEM_JSON) for _, _, status, ctype in not_404), not_404

    listed = await send(system, "query", "GET", f"/campaigns?owner_id={owner.id}", intruder.access_token)
    assert listed.status_code == 200 and listed.json()["items"] == []
    for path in ("/stats", "/monitor/state"):
        forbidden = await send(system, "query", "GET", path, intruder.access_token)
        assert forbidden.status_code == 403, (path, forbidden.text)
        assert forbidden.headers["content-type"].startswith(PROBLEM_JSON)

    read = await send(system, "query", "GET", f"/campaigns/{campaign_id}?min_version=1", owner.access_token)
    assert read.status_code == 200
    assert (read.json()["version"], read.json()["status"]) == (1, "draft")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("owner_id", "someone-else"),
        ("status", "active"),
        ("version", 99),
        ("roles", ["admin"]),
        ("id", "mine"),
    ],
)
async def test_privileged_fields_in_bodies_are_refused(system: System, field: str, value: object) -> None:
    async with loopback.client(base_url=system.command_url, timeout=10) as commands:
        user = await sign_up(commands)
        campaign_id = await create_campaign(commands, user)
        attempts = [
            await commands.post("/campaigns", json={**CAMPAIGN, field: value}, headers=user.auth),
            await commands.patch(
                f"/campaigns/{campaign_id}", json={field: value}, headers={**user.auth, "If-Match": '"1"'}
            ),
            await commands.post(
                "/auth/register",
                json={"email": f"x{user.email}", "password": user.password, "name": "X", field: value},
            ),
        ]
    for response in attempts:
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith(PROBLEM_JSON)
        assert field in [e["field"] for e in response.json()["errors"]], response.json()
    me = await send(system, "query", "GET", "/users/me?min_version=2", user.access_token)
    assert me.status_code == 200 and me.json()["roles"] == ["user"]
    mine = await send(system, "query", "GET", f"/campaigns/{campaign_id}?min_version=1", user.access_token)
    assert (mine.json()["version"], mine.json()["status"], mine.json()["owner_id"]) == (1, "draft", user.id)
    listed = await send(system, "query", "GET", "/campaigns", user.access_token)
    assert [c["id"] for c in listed.json()["items"]] == [campaign_id]


async def test_passwords_and_tokens_never_appear_in_logs_or_in_other_responses(system: System) -> None:
    password = "Zebra-Quartz-Secret-7319"
    wrong = "Wrong-Guess-Secret-8842"
    weak = "Weak-Secret-Unique-5531 Weak-Secret-Unique-5531" * 4  # over the domain's maximum
    async with loopback.client(base_url=system.command_url, timeout=10) as commands:
        responses: list[httpx.Response] = []
        user = await sign_up(commands, password=password)
        responses.append(
            await commands.post(
                "/auth/register", json={"email": "weak@example.com", "password": weak, "name": "W"}
            )
        )
        responses.append(await commands.post("/auth/login", json={"email": user.email, "password": wrong}))
        login = await commands.post("/auth/login", json={"email": user.email, "password": password})
        refreshed = await commands.post(
            "/auth/refresh", json={"refresh_token": login.json()["refresh_token"]}
        )
        await asyncio.sleep(1.2)  # past the grace window: a reuse, answered 401
        responses.append(
            await commands.post("/auth/refresh", json={"refresh_token": login.json()["refresh_token"]})
        )
        responses.append(await commands.post("/campaigns", json={**CAMPAIGN, "name": ""}, headers=user.auth))
        responses.append(
            await commands.post("/auth/logout", json={"refresh_token": refreshed.json()["refresh_token"]})
        )
    access_tokens = [user.access_token, login.json()["access_token"], refreshed.json()["access_token"]]
    refresh_tokens = [user.refresh_token, login.json()["refresh_token"], refreshed.json()["refresh_token"]]
    secrets = [password, wrong, weak[:40], *access_tokens, *refresh_tokens]
    # Signatures alone would do an attacker no good, but they have no business in a log either.
    secrets += [token.split(".")[2] for token in access_tokens]

    for response in responses:
        leaked = [s[:12] for s in secrets if s in response.text]
        assert leaked == [], f"{response.request.url.path} answered with a secret: {leaked}"
    await asyncio.sleep(1)  # let the processes flush their last lines
    logs = {p.name: p.read_text(errors="replace") for p in system.services.log_dir.glob("*.log")}
    assert {"command-api.log", "query-api.log"} <= set(logs)
    found = [(name, s[:12]) for name, text in logs.items() for s in secrets if s in text]
    assert found == [], f"secrets in the service logs: {found}"


@pytest.mark.parametrize("service", ["command-api", "query-api", "relay", "projectors", "workers"])
def test_production_mode_refuses_missing_exposed_and_weak_keys(
    system: System, service: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in settings_env(system.settings).items() if not k.startswith("CAMPAIGNS_JWT_")}
    env.update({"APP_ENV": "production", "CAMPAIGNS_LOCAL_DIR": str(tmp_path)})
    exposed = tmp_path / "exposed.key"
    exposed.write_bytes(Path(system.settings.jwt_private_key_file).read_bytes())
    exposed.chmod(0o644)
    weak = Ed25519PrivateKey.from_private_bytes(bytes(32)).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Production never uses the per-install keys of .local/, even when they are there.
    missing = {"command-api": "CAMPAIGNS_JWT_PRIVATE_KEY", "query-api": "CAMPAIGNS_JWT_PUBLIC_KEYS"}
    cases: list[tuple[dict[str, str], str]] = [
        ({"CAMPAIGNS_JWT_PRIVATE_KEY_FILE": str(exposed)}, "chmod 600"),
        ({"CAMPAIGNS_JWT_PRIVATE_KEY": weak.decode()}, "low-entropy"),
    ]
    if service in missing:
        generate_key_pair(tmp_path / "keys")
        cases.append(({}, missing[service]))
    for extra, says in cases:
        started = subprocess.run(
            [sys.executable, "-m", "launcher", "serve", service],
            cwd=REPO,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert started.returncode != 0
        assert says in started.stderr, started.stderr[-500:]
    assert os.environ.get("APP_ENV") != "production"
