"""docker-compose.cluster.yml over docker-compose.yml, validated and resolved by docker-compose."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher.cli import SERVICES
from service_runtime.settings import Settings
from tests.unit.test_docker_compose import _compose_env, _docker_compose, _keys_env

REPO = Path(__file__).resolve().parents[2]
FILES = ["-f", str(REPO / "docker-compose.yml"), "-f", str(REPO / "docker-compose.cluster.yml")]


def _compose(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_docker_compose(), *FILES, *args],
        cwd=REPO,
        env=_compose_env(**_keys_env()),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    result = _compose("config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]  # type: ignore[no-any-return]


def test_the_overlay_validates() -> None:
    result = _compose("config", "-q")
    assert result.returncode == 0, f"docker-compose config -q exited {result.returncode}:\n{result.stderr}"


def test_three_kafka_kraft_nodes_with_replication_3_and_min_isr_2(
    services: dict[str, dict[str, Any]],
) -> None:
    nodes = ["kafka", "kafka-2", "kafka-3"]
    voters = {services[n]["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"] for n in nodes}
    assert voters == {"1@kafka:9093,2@kafka-2:9093,3@kafka-3:9093"}
    assert sorted(str(services[n]["environment"]["KAFKA_NODE_ID"]) for n in nodes) == ["1", "2", "3"]
    for name in nodes:
        env = services[name]["environment"]
        assert services[name]["image"].startswith("apache/kafka:4.1.")
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        assert str(env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]) == "false"
        assert str(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == "3"
        assert str(env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"]) == "3"
        assert str(env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"]) == "2"
        assert str(env["KAFKA_MIN_INSYNC_REPLICAS"]) == "2"
    init = services["kafka-init"]
    assert init["command"] == ["kafka", "topics", "--reconcile"]
    assert set(init["depends_on"]) >= set(nodes)


def test_a_three_member_mongodb_replica_set(services: dict[str, dict[str, Any]]) -> None:
    for name in ("mongo", "mongo-2", "mongo-3"):
        command = services[name]["command"]
        assert command[command.index("--replSet") + 1] == "rs0"
        assert "healthcheck" in services[name]
    script = " ".join(services["mongo-init"]["command"])
    for host in ("mongo:27017", "mongo-2:27017", "mongo-3:27017"):
        assert host in script
    assert "NotYetInitialized" in script


def test_a_redis_cluster_of_six_nodes_and_a_create_job(services: dict[str, dict[str, Any]]) -> None:
    nodes = [f"redis-node-{n}" for n in range(1, 7)]
    for name in nodes:
        command = services[name]["command"]
        assert command[command.index("--cluster-enabled") + 1] == "yes"
        assert name in command, "each node announces its own hostname"
    job = services["redis-cluster-init"]
    script = " ".join(job["command"])
    assert "redis-cli --cluster create" in script
    assert "--cluster-replicas 1" in script and "cluster_state:ok" in script
    assert set(job["depends_on"]) == set(nodes)


def test_every_long_running_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    long_running = [name for name, s in services.items() if s.get("restart", "no") != "no"]
    assert len(long_running) >= 20
    missing = [name for name in long_running if "healthcheck" not in services[name]]
    assert not missing, f"no healthcheck: {missing}"


def test_two_instances_of_relay_projectors_and_workers_with_reachable_metrics(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, port in (("relay", 9101), ("projectors", 9102), ("workers", 9103)):
        service = services[name]
        assert service["scale"] == 2
        assert f"127.0.0.1:{port}/metrics" in " ".join(service["healthcheck"]["test"])
        assert service["environment"]["CAMPAIGNS_METRICS_HOST"] == "0.0.0.0"
        assert service["depends_on"]["redis-cluster-init"]["condition"] == "service_completed_successfully"


def test_the_services_settings_point_at_the_cluster(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [*SERVICES, "kafka-init"]:
        env = services[name]["environment"]
        for key in [k for k in os.environ if k.startswith("CAMPAIGNS_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, str(value))
        settings = Settings()
        assert settings.kafka_bootstrap_servers == ["kafka:9092", "kafka-2:9092", "kafka-3:9092"], name
        assert (settings.kafka_replication_factor, settings.kafka_min_insync_replicas) == (3, 2), name
        assert settings.mongo_url.startswith("mongodb://mongo:27017,mongo-2:27017,mongo-3:27017/"), name
        assert "replicaSet=rs0" in settings.mongo_url and "directConnection" not in settings.mongo_url
        assert len(settings.redis_cluster_addresses) == 6, name
