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


def test_the_single_topology_is_the_default_and_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TOPOLOGY", "KAFKA_BOOTSTRAP", "REDIS_CLUSTER_NODES", "KAFKA_REPLICATION_FACTOR"):
        monkeypatch.delenv(f"CAMPAIGNS_{name}", raising=False)
    settings = Settings()
    assert settings.topology == "single"
    assert settings.redis_cluster_addresses == []
    assert settings.kafka_bootstrap_servers == ["127.0.0.1:9092"]
    assert (settings.kafka_replication_factor, settings.kafka_min_insync_replicas) == (1, 1)


def test_the_cluster_topology_points_every_client_at_the_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "KAFKA_BOOTSTRAP",
        "REDIS_CLUSTER_NODES",
        "KAFKA_REPLICATION_FACTOR",
        "KAFKA_MIN_INSYNC_REPLICAS",
    ):
        monkeypatch.delenv(f"CAMPAIGNS_{name}", raising=False)
    monkeypatch.setenv("CAMPAIGNS_TOPOLOGY", "cluster")
    settings = Settings()
    assert settings.redis_cluster_addresses == [f"127.0.0.1:{port}" for port in range(7000, 7006)]
    assert settings.kafka_bootstrap_servers == ["127.0.0.1:19092", "127.0.0.1:19093", "127.0.0.1:19094"]
    assert (settings.kafka_replication_factor, settings.kafka_min_insync_replicas) == (3, 2)
    # What is set explicitly wins over the cluster's defaults.
    monkeypatch.setenv("CAMPAIGNS_KAFKA_BOOTSTRAP", "k1:9092, k2:9092")
    monkeypatch.setenv("CAMPAIGNS_KAFKA_MIN_INSYNC_REPLICAS", "1")
    settings = Settings()
    assert settings.kafka_bootstrap_servers == ["k1:9092", "k2:9092"]
    assert settings.kafka_min_insync_replicas == 1


def test_min_isr_above_the_replication_factor_is_refused() -> None:
    with pytest.raises(ValueError, match="kafka_min_insync_replicas"):
        Settings(kafka_replication_factor=2, kafka_min_insync_replicas=3)
