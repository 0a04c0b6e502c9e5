"""Access tokens: Ed25519 (EdDSA) with `kid` and `typ: at+jwt`, verified with public keys only."""

from __future__ import annotations

import stat
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service_runtime.keys import PRIVATE_FILE, PUBLIC_FILE, ensure_local_keys, generate_key_pair, signing_key
from service_runtime.settings import Settings
from service_runtime.tokens import InvalidToken, VerifiedAccessTokens, issue_access_token, verify_access_token
from tests.support.clock import Clock
from tests.support.keys import hs256_token, key_settings

SIGNER = Settings(app_env="test", **key_settings())  # type: ignore[arg-type]
VERIFIER = Settings(app_env="test", jwt_public_keys_file=key_settings()["jwt_public_keys_file"])  # type: ignore[arg-type]


def _claims(**extra: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "sub": "alice",
        "roles": ["user", "admin"],
        "type": "access",
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + timedelta(minutes=5),
        "iss": SIGNER.jwt_issuer,
        "aud": SIGNER.jwt_audience,
        **extra,
    }


def test_tokens_are_eddsa_with_kid_and_at_jwt_type_and_a_public_key_verifies_them() -> None:
    token = issue_access_token(SIGNER, "alice", ["user"])
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "EdDSA", "typ": "at+jwt", "kid": signing_key(SIGNER).kid}
    assert verify_access_token(VERIFIER, token).user_id == "alice"


def test_hs256_tokens_are_refused_whatever_their_secret() -> None:
    kid = signing_key(SIGNER).kid
    public_pem = Path(str(key_settings()["jwt_public_keys_file"])).read_text()
    for secret in ("dev-only-jwt-secret-change-me-0123456789abcdef", public_pem, "x" * 64):
        token = hs256_token(_claims(), secret.encode(), {"kid": kid, "typ": "at+jwt"})
        with pytest.raises(InvalidToken):
            verify_access_token(VERIFIER, token)


def test_a_token_without_the_at_jwt_type_is_refused() -> None:
    key = signing_key(SIGNER)
    for headers in ({"kid": key.kid}, {"kid": key.kid, "typ": "JWT"}):
        token = jwt.encode(_claims(), key.private, algorithm="EdDSA", headers=headers)
        with pytest.raises(InvalidToken):
            verify_access_token(VERIFIER, token)


def test_a_token_signed_by_another_key_is_refused_even_under_the_right_kid() -> None:
    other = Ed25519PrivateKey.generate()
    for kid in (signing_key(SIGNER).kid, "someone-else", None):
        headers = {"typ": "at+jwt", **({"kid": kid} if kid else {})}
        token = jwt.encode(_claims(), other, algorithm="EdDSA", headers=headers)
        with pytest.raises(InvalidToken):
            verify_access_token(VERIFIER, token)


def test_during_a_rotation_both_public_keys_verify_each_by_its_kid(tmp_path: Path) -> None:
    old_kid = generate_key_pair(tmp_path / "old")
    new_kid = generate_key_pair(tmp_path / "new")
    assert old_kid != new_kid
    both = (tmp_path / "old" / PUBLIC_FILE).read_text() + (tmp_path / "new" / PUBLIC_FILE).read_text()
    verifier = Settings(app_env="test", jwt_public_keys=both)
    for name in ("old", "new"):
        signer = Settings(app_env="test", jwt_private_key_file=str(tmp_path / name / PRIVATE_FILE))
        assert verify_access_token(verifier, issue_access_token(signer, name, ["user"])).user_id == name
    only_new = Settings(app_env="test", jwt_public_keys=(tmp_path / "new" / PUBLIC_FILE).read_text())
    old_signer = Settings(app_env="test", jwt_private_key_file=str(tmp_path / "old" / PRIVATE_FILE))
    with pytest.raises(InvalidToken):
        verify_access_token(only_new, issue_access_token(old_signer, "old", ["user"]))


def test_local_keys_are_generated_once_with_a_private_file_only_the_owner_reads(tmp_path: Path) -> None:
    settings = Settings(app_env="test", local_dir=str(tmp_path))
    written = ensure_local_keys(settings)
    assert written == tmp_path / "keys"
    mode = stat.S_IMODE((written / PRIVATE_FILE).stat().st_mode)
    assert mode == 0o600
    before = (written / PRIVATE_FILE).read_bytes()
    assert ensure_local_keys(settings) is None
    assert (written / PRIVATE_FILE).read_bytes() == before
    # Configured keys: nothing is generated.
    assert (
        ensure_local_keys(Settings(app_env="test", local_dir=str(tmp_path / "x"), **key_settings())) is None
    )  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()


def test_a_remembered_token_is_verified_once_and_refused_from_its_exp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import service_runtime.tokens as tokens

    issued = datetime.now(UTC)
    token = issue_access_token(SIGNER, "alice", ["user", "admin"], now=issued)
    checks: list[str] = []
    real = tokens.verify_access_token

    def counted(settings: Settings, presented: str) -> tokens.Principal:
        checks.append(presented)
        return real(settings, presented)

    monkeypatch.setattr(tokens, "verify_access_token", counted)
    clock = Clock(issued.timestamp())
    verified = tokens.VerifiedAccessTokens(VERIFIER, size=10, clock=clock)
    first = verified.principal(token)
    assert (first.user_id, first.is_admin) == ("alice", True)
    assert first.expires_at == int((issued + timedelta(seconds=SIGNER.access_token_ttl_seconds)).timestamp())
    assert verified.principal(token) == first
    assert len(checks) == 1
    clock.now = first.expires_at - 0.001
    assert verified.principal(token) == first
    clock.now = first.expires_at  # PyJWT's rule: expired at `exp`
    with pytest.raises(InvalidToken):
        verified.principal(token)
    assert len(verified) == 0


def test_only_tokens_that_verified_are_remembered_and_the_oldest_goes_first() -> None:
    verified = VerifiedAccessTokens(VERIFIER, size=2)
    forged = jwt.encode(_claims(), Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"typ": "at+jwt"})
    for _ in range(2):
        with pytest.raises(InvalidToken):
            verified.principal(forged)
    assert len(verified) == 0
    a, b, c = (issue_access_token(SIGNER, name, ["user"]) for name in "abc")
    for token in (a, b, c):
        verified.principal(token)
    assert len(verified) == 2
    assert set(verified._verified) == {b, c}
    # A token that differs in its signature only is not the remembered one.
    tampered = a[:-2] + ("AA" if a[-2:] != "AA" else "BB")
    with pytest.raises(InvalidToken):
        verified.principal(tampered)
    nothing = VerifiedAccessTokens(VERIFIER, size=0)
    assert nothing.principal(a).user_id == "a"
    assert len(nothing) == 0


def test_remembered_answers_only_a_verified_unexpired_token_and_verifies_nothing() -> None:
    clock = Clock(time.time())
    verified = VerifiedAccessTokens(VERIFIER, size=10, clock=clock)
    token = issue_access_token(SIGNER, "u1", ["user"])
    assert verified.remembered(token) is None  # never verified: the caller must ask `principal`
    first = verified.principal(token)
    assert verified.remembered(token) == first
    assert verified.remembered(token[:-2] + ("AA" if token[-2:] != "AA" else "BB")) is None
    clock.now = first.expires_at
    assert verified.remembered(token) is None
