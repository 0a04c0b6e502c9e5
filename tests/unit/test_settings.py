"""Settings: configurable by environment, and no missing, guessable or exposed key in production."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service_runtime.keys import KeyUnavailable, ensure_local_keys, signing_key, verification_keys
from service_runtime.settings import DefaultSecretInProduction, Settings
from tests.support.keys import key_settings


def test_every_address_is_configurable_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAMPAIGNS_KAFKA_BOOTSTRAP", "kafka:29092")
    monkeypatch.setenv("CAMPAIGNS_KAFKA_PARTITIONS", "12")
    monkeypatch.setenv("CAMPAIGNS_REDIS_URL", "redis://cache:6380/1")
    monkeypatch.setenv("CAMPAIGNS_COMMAND_API_PORT", "9001")
    settings = Settings()
    assert settings.kafka_bootstrap == "kafka:29092"
    assert settings.kafka_partitions == 12
    assert settings.redis_url == "redis://cache:6380/1"
    assert settings.command_api_port == 9001


def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("CAMPAIGNS_JWT"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("APP_ENV", "production")


def test_production_never_falls_back_to_the_per_install_keys(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _clean(monkeypatch)
    monkeypatch.setenv("CAMPAIGNS_LOCAL_DIR", str(tmp_path))
    ensure_local_keys(Settings(app_env="test", local_dir=str(tmp_path)))
    settings = Settings()
    with pytest.raises(KeyUnavailable, match="CAMPAIGNS_JWT_PRIVATE_KEY"):
        signing_key(settings)
    with pytest.raises(KeyUnavailable, match="CAMPAIGNS_JWT_PUBLIC_KEYS"):
        verification_keys(settings)


def test_production_refuses_a_private_key_file_others_can_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _clean(monkeypatch)
    path = tmp_path / "k.pem"
    path.write_bytes(_pem(Ed25519PrivateKey.generate()))
    path.chmod(0o644)
    monkeypatch.setenv("CAMPAIGNS_JWT_PRIVATE_KEY_FILE", str(path))
    with pytest.raises(DefaultSecretInProduction, match="chmod 600"):
        Settings()
    path.chmod(0o600)
    assert Settings().app_env == "production"


def test_production_refuses_a_low_entropy_key(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean(monkeypatch)
    weak = Ed25519PrivateKey.from_private_bytes(bytes(range(8)) * 4)
    monkeypatch.setenv("CAMPAIGNS_JWT_PRIVATE_KEY", _pem(weak).decode())
    with pytest.raises(DefaultSecretInProduction, match="low-entropy"):
        Settings()


def test_production_starts_with_generated_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean(monkeypatch)
    for name, value in key_settings().items():
        monkeypatch.setenv(f"CAMPAIGNS_{name.upper()}", str(value))
    assert Settings().app_env == "production"


def test_a_pem_in_one_line_with_escaped_newlines_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean(monkeypatch)
    monkeypatch.setenv(
        "CAMPAIGNS_JWT_PRIVATE_KEY", _pem(Ed25519PrivateKey.generate()).decode().replace("\n", "\\n")
    )
    assert Settings().app_env == "production"


@pytest.mark.parametrize("value", ["*", "nginx", "10.0.0.0/33"])
def test_trusted_proxies_are_addresses_or_networks_never_a_wildcard(value: str) -> None:
    with pytest.raises(ValueError, match="trusted_proxies"):
        Settings(trusted_proxies=value)


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
