"""Settings: configurable by environment, and no default secret in production."""

from __future__ import annotations

import pytest

from service_runtime.settings import DefaultSecretInProduction, Settings


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


def test_production_refuses_the_default_jwt_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.delenv("CAMPAIGNS_JWT_SECRET", raising=False)
    with pytest.raises(DefaultSecretInProduction, match="CAMPAIGNS_JWT_SECRET"):
        Settings()


def test_production_starts_with_a_real_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("CAMPAIGNS_JWT_SECRET", "x" * 48)
    assert Settings().app_env == "production"
