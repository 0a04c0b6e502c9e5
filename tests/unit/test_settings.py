"""Settings: configurable by environment, and no missing, guessable or exposed key in production."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

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


def test_read_model_buckets_default_to_one_on_standalone_redis_and_32_on_a_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("TOPOLOGY", "REDIS_CLUSTER_NODES", "REDIS_BUCKETS"):
        monkeypatch.delenv(f"CAMPAIGNS_{name}", raising=False)
    assert Settings().read_model_buckets == 1
    assert Settings(redis_cluster_nodes="r1:6379,r2:6379").read_model_buckets == 32
    assert Settings(redis_cluster_nodes="r1:6379", redis_buckets=128).read_model_buckets == 128
    # One bucket means untagged keys: on a cluster, scripts over them would cross slots.
    with pytest.raises(ValidationError, match="redis_buckets"):
        Settings(redis_cluster_nodes="r1:6379", redis_buckets=1)


def test_a_heartbeat_not_below_the_consumer_session_is_refused() -> None:
    with pytest.raises(ValueError, match="kafka_heartbeat_interval_seconds"):
        Settings(kafka_session_timeout_seconds=6, kafka_heartbeat_interval_seconds=6)
    settings = Settings(kafka_session_timeout_seconds=6, kafka_heartbeat_interval_seconds=1.5)
    assert (settings.kafka_session_timeout_ms, settings.kafka_heartbeat_interval_ms) == (6000, 1500)
