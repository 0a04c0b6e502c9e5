"""Remembered token checks never outlive the token: an expired token is refused, cached or not."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from query_api.entrypoints.http.authentication import TokenVerifier
from service_runtime.keys import PRIVATE_FILE, generate_key_pair
from service_runtime.problems import Problem
from service_runtime.settings import Settings
from service_runtime.tokens import InvalidToken, issue_access_token
from tests.support.keys import key_settings

SETTINGS = Settings(app_env="test", access_token_ttl_seconds=1, **key_settings())  # type: ignore[arg-type]


def test_a_remembered_token_is_refused_once_it_expires() -> None:
    verifier = TokenVerifier(SETTINGS)
    token = issue_access_token(SETTINGS, "alice", ["user"])
    assert verifier.principal(token).user_id == "alice"
    assert verifier.principal(token).user_id == "alice"  # remembered
    expiry = jwt.decode(token, options={"verify_signature": False})["exp"]
    time.sleep(max(0.0, expiry - time.time()) + 0.05)
    with pytest.raises(InvalidToken):
        verifier.principal(token)


def test_a_forged_token_is_refused_every_time(tmp_path: Path) -> None:
    verifier = TokenVerifier(SETTINGS)
    generate_key_pair(tmp_path)
    attacker = Settings(app_env="test", jwt_private_key_file=str(tmp_path / PRIVATE_FILE))
    forged = issue_access_token(attacker, "alice", ["admin"])
    for _ in range(2):
        with pytest.raises(InvalidToken):
            verifier.principal(forged)


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic abc", "Token abc"])
def test_anything_but_a_bearer_token_is_a_401(header: str | None) -> None:
    with pytest.raises(Problem) as raised:
        TokenVerifier(SETTINGS).authenticate(header)
    assert raised.value.status == 401
    assert raised.value.headers["WWW-Authenticate"].startswith("Bearer")
