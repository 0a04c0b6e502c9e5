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


def test_no_console_origin_is_open_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAMPAIGNS_CONSOLE_ORIGINS", raising=False)
    assert Settings().console_origin_list == []


def test_console_origins_are_a_comma_separated_list_of_origins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAMPAIGNS_CONSOLE_ORIGINS", " http://127.0.0.1:8002, https://ops.example.com/ ")
    assert Settings().console_origin_list == ["http://127.0.0.1:8002", "https://ops.example.com"]


@pytest.mark.parametrize("origin", ["*", "http://ops.example.com/console", "ops.example.com", "file://x"])
def test_a_console_origin_that_is_not_an_origin_is_refused(origin: str) -> None:
    with pytest.raises(ValueError, match="console_origins"):
        Settings(console_origins=origin)


def test_the_command_api_public_url_must_be_http() -> None:
    assert Settings(command_api_public_url="https://api.example.com/").command_api_public_url == (
        "https://api.example.com"
    )
    with pytest.raises(ValueError, match="command_api_public_url"):
        Settings(command_api_public_url="javascript:alert(1)")
