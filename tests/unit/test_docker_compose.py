"""docker-compose.yml, infra/docker/Dockerfile and nginx.conf, checked without a Docker engine.

`docker-compose config` (Debian's docker-compose v1) validates and resolves the compose file;
the resolved YAML is then checked for what the design asks of it. The Dockerfile and nginx.conf
cannot be built or run here, so their contents are checked against the repository.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from launcher.cli import SERVICES
from service_runtime.keys import signing_key, verification_keys
from service_runtime.settings import DefaultSecretInProduction, Settings
from tests.support.keys import run_keys

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "infra" / "docker" / "Dockerfile"
NGINX_CONF = REPO / "infra" / "docker" / "nginx.conf"
NGINX_TLS_CONF = REPO / "infra" / "docker" / "nginx-tls.conf"
DOCKERIGNORE = REPO / ".dockerignore"
APP_IMAGE_DOCKERFILE = "infra/docker/Dockerfile"
APIS = {"command-api": 8001, "query-api": 8002}


def _docker_compose() -> str:
    found = shutil.which("docker-compose") or (
        "/usr/bin/docker-compose" if Path("/usr/bin/docker-compose").exists() else None
    )
    if found is None:
        pytest.fail(
            "docker-compose is not installed, so docker-compose.yml cannot be validated: "
            "install Debian's docker-compose (apt-get install docker-compose)",
            pytrace=False,
        )
    return found


def _compose_env(**overrides: str) -> dict[str, str]:
    """This process's environment without anything that would change how the file resolves."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CAMPAIGNS_", "COMPOSE_")) and k not in {"APP_ENV", "DOCKER_HOST"}
    }
    env.update(overrides)
    return env


def _run_compose(*args: str, keys: bool = True, **overrides: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_docker_compose(), "-f", str(COMPOSE_FILE), *args],
        cwd=REPO,
        env=_compose_env(**{**(_keys_env() if keys else {}), **overrides}),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _keys_env() -> dict[str, str]:
    """This run's key pair, as an operator exports it for compose."""
    directory = run_keys()
    return {
        "CAMPAIGNS_JWT_PRIVATE_KEY": (directory / "access-token.key").read_text(),
        "CAMPAIGNS_JWT_PUBLIC_KEYS": (directory / "access-token.pub").read_text(),
    }


def _resolved(**overrides: str) -> dict[str, Any]:
    result = _run_compose("config", **overrides)
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    config = yaml.safe_load(result.stdout)
    assert isinstance(config, dict)
    return config


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return _resolved()


@pytest.fixture(scope="module")
def services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return config["services"]  # type: ignore[no-any-return]


def _command_text(service: dict[str, Any]) -> str:
    """Entrypoint and command as one string, whichever form (list or string) each is in."""
    parts: list[str] = []
    for key in ("entrypoint", "command"):
        value = service.get(key) or []
        parts.extend([value] if isinstance(value, str) else [str(v) for v in value])
    return " ".join(parts)


# ------------------------------------------------------------------------------------ compose


def test_compose_config_validates() -> None:
    result = _run_compose("config", "-q")
    assert result.returncode == 0, f"docker-compose config -q exited {result.returncode}:\n{result.stderr}"


def test_mongo_is_a_replica_set_initiated_by_a_one_shot_service(services: dict[str, dict[str, Any]]) -> None:
    mongo = services["mongo"]
    assert mongo["image"].split(":")[0] == "mongo"
    command = mongo["command"]
    assert "--replSet" in command and command[command.index("--replSet") + 1] == "rs0"
    assert "healthcheck" in mongo

    init = services["mongo-init"]
    script = _command_text(init)
    assert "rs.initiate" in script and "mongo:27017" in script
    assert "NotYetInitialized" in script, "rs.initiate must be skipped when the set already exists"
    assert init["depends_on"]["mongo"]["condition"] == "service_healthy"
    assert init.get("restart", "no") == "no"


def test_kafka_is_apache_kafka_41_in_kraft_mode(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    image, _, tag = kafka["image"].partition(":")
    assert image == "apache/kafka"
    assert tag.startswith("4.1."), f"pin a 4.1.x tag, got {tag!r}"
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert "CONTROLLER" in env["KAFKA_LISTENERS"] and "PLAINTEXT://:9092" in env["KAFKA_LISTENERS"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@kafka:")
    assert env["CLUSTER_ID"], "the image formats its storage with CLUSTER_ID in KRaft mode"
    assert str(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == "1"
    assert str(env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"]) == "1"
    assert any(
        str(v).endswith(":/var/lib/kafka/data") or "/var/lib/kafka/data" in str(v) for v in kafka["volumes"]
    )
    assert "healthcheck" in kafka


def test_topics_are_created_with_the_configured_shape_and_nothing_auto_creates(
    services: dict[str, dict[str, Any]],
) -> None:
    init = services["kafka-init"]
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert init["build"]["dockerfile"] == APP_IMAGE_DOCKERFILE
    # The same code as `campaigns kafka topics --reconcile` (service_runtime/kafka_topics.py).
    assert init["command"] == ["kafka", "topics", "--reconcile"]
    env = init["environment"]
    assert (env["CAMPAIGNS_KAFKA_PARTITIONS"], env["CAMPAIGNS_KAFKA_REPLICATION_FACTOR"]) == ("6", "1")
    assert env["CAMPAIGNS_KAFKA_MIN_INSYNC_REPLICAS"] == "1"
    assert str(services["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]) == "false"

    three = _resolved(CAMPAIGNS_KAFKA_PARTITIONS="3")["services"]
    assert three["kafka-init"]["environment"]["CAMPAIGNS_KAFKA_PARTITIONS"] == "3"
    assert three["command-api"]["environment"]["CAMPAIGNS_KAFKA_PARTITIONS"] == "3"


def test_redis_7_and_a_mail_catcher(services: dict[str, dict[str, Any]]) -> None:
    redis = services["redis"]
    image, _, tag = redis["image"].partition(":")
    assert image == "redis" and tag.startswith("7.")
    assert "redis-cli" in " ".join(redis["healthcheck"]["test"])
    mail = services["mailpit"]
    assert mail["image"].startswith("axllent/mailpit:")
    assert any("8025" in str(port) for port in mail["ports"]), "the mail UI should be reachable"


def test_every_cli_service_is_built_from_the_dockerfile(services: dict[str, dict[str, Any]]) -> None:
    assert set(SERVICES) == {"command-api", "query-api", "relay", "scheduler", "projectors", "workers"}
    for name in SERVICES:
        assert name in services, f"service {name} is missing from docker-compose.yml"
        service = services[name]
        build = service["build"]
        assert Path(build["context"]).resolve() == REPO
        assert build["dockerfile"] == APP_IMAGE_DOCKERFILE
        assert service["command"] == ["serve", name]
        depends = service["depends_on"]
        assert depends["mongo-init"]["condition"] == "service_completed_successfully"
        assert depends["kafka-init"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"
        assert service.get("init") is True, "without an init, PID 1 ignores SIGTERM"
        assert not service.get("ports"), f"{name} must be reached through nginx, not published"


def test_api_replicas_and_health_checks(services: dict[str, dict[str, Any]]) -> None:
    for name, port in APIS.items():
        service = services[name]
        assert service.get("scale") == 2, f"{name}: `scale` is what docker-compose v1 honours"
        assert service.get("deploy", {}).get("replicas", 2) == 2
        test = " ".join(service["healthcheck"]["test"])
        assert "python" in test and f"http://127.0.0.1:{port}/health/live" in test
    assert services["relay"].get("scale", 1) == 1
    assert services["relay"].get("deploy", {}).get("replicas", 1) == 1


def test_app_environment_is_valid_settings(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    fields = set(Settings.model_fields)
    for name in SERVICES:
        env = services[name]["environment"]
        unknown = [k for k in env if k.startswith("CAMPAIGNS_") and k[10:].lower() not in fields]
        assert not unknown, f"{name}: no such setting: {unknown}"

    env = services["command-api"]["environment"]
    for key in list(os.environ):
        if key.startswith("CAMPAIGNS_") or key == "APP_ENV":
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    settings = Settings()
    assert settings.app_env == "development"
    assert "replicaSet=rs0" in settings.mongo_url and settings.mongo_url.startswith("mongodb://mongo:27017")
    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.redis_url.startswith("redis://redis:6379")
    assert settings.smtp_host == "mailpit" and settings.smtp_port == 1025
    assert settings.command_api_host == settings.query_api_host == "0.0.0.0"
    assert (settings.command_api_port, settings.query_api_port) == (APIS["command-api"], APIS["query-api"])
    assert settings.kafka_partitions == 6

    # The keys came from the environment, and production refuses a weak one.
    assert settings.jwt_private_key.get_secret_value() == _keys_env()["CAMPAIGNS_JWT_PRIVATE_KEY"]
    assert signing_key(settings).kid in verification_keys(settings)
    monkeypatch.setenv("APP_ENV", "production")
    weak = Ed25519PrivateKey.from_private_bytes(bytes(32)).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    monkeypatch.setenv("CAMPAIGNS_JWT_PRIVATE_KEY", weak.decode())
    with pytest.raises(DefaultSecretInProduction):
        Settings()


def test_compose_refuses_to_start_without_keys() -> None:
    for missing in ("CAMPAIGNS_JWT_PRIVATE_KEY", "CAMPAIGNS_JWT_PUBLIC_KEYS"):
        env = {k: v for k, v in _keys_env().items() if k != missing}
        result = _run_compose("config", keys=False, **env)
        assert result.returncode != 0
        assert missing in result.stderr, result.stderr[-500:]


def test_only_the_command_api_holds_the_private_key(services: dict[str, dict[str, Any]]) -> None:
    for name in SERVICES:
        env = services[name]["environment"]
        assert ("CAMPAIGNS_JWT_PRIVATE_KEY" in env) == (name == "command-api"), name
        assert ("CAMPAIGNS_JWT_PUBLIC_KEYS" in env) == (name in APIS), name
        assert "CAMPAIGNS_JWT_SECRET" not in env, name


def test_forwarded_addresses_are_trusted_from_nginx_network_only(config: dict[str, Any]) -> None:
    services = config["services"]
    subnets = [c["subnet"] for c in config["networks"]["edge"]["ipam"]["config"]]
    assert list(services["nginx"]["networks"]) == ["edge"]
    for name in SERVICES:
        env = services[name]["environment"]
        assert "FORWARDED_ALLOW_IPS" not in env, name
        assert env["CAMPAIGNS_TRUSTED_PROXIES"] == subnets[0], name
    conf = NGINX_CONF.read_text()
    assert "$proxy_add_x_forwarded_for" not in conf
    assert conf.count("X-Forwarded-For $remote_addr") >= 1


def test_prometheus_loads_the_alerting_rules_and_reaches_every_metrics_port(
    services: dict[str, dict[str, Any]],
) -> None:
    prometheus = services["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus:v2.")
    mounts: dict[str, str] = {}
    for volume in prometheus["volumes"]:  # "source:target:mode" (compose v1) or long form (v2)
        source, target = (
            (volume["source"], volume["target"]) if isinstance(volume, dict) else volume.split(":")[:2]
        )
        if source.startswith("/"):
            mounts[str(Path(source).resolve().relative_to(REPO))] = target
    assert mounts["infra/prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"
    assert mounts["infra/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    config = yaml.safe_load((REPO / "infra/prometheus/prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    targets = {
        job["job_name"]: (sd["names"], sd["port"])
        for job in config["scrape_configs"]
        for sd in job["dns_sd_configs"]
    }
    defaults = Settings()
    ports = {
        "command-api": defaults.command_api_metrics_port,
        "query-api": defaults.query_api_metrics_port,
        "relay": defaults.relay_metrics_port,
        "scheduler": defaults.scheduler_metrics_port,
        "projectors": defaults.projectors_metrics_port,
        "workers": defaults.workers_metrics_port,
    }
    assert targets == {name: ([name], port) for name, port in ports.items()}
    # Every process serves /metrics on the metrics host (the APIs on an internal listener, not
    # their public port): all interfaces of the container here.
    for name in ("command-api", "query-api", "relay", "scheduler", "projectors", "workers"):
        assert services[name]["environment"]["CAMPAIGNS_METRICS_HOST"] == "0.0.0.0"


def test_nginx_fronts_both_apis(services: dict[str, dict[str, Any]]) -> None:
    nginx = services["nginx"]
    assert nginx["image"].startswith("nginx:")
    published = {str(p.get("published")) if isinstance(p, dict) else str(p) for p in nginx["ports"]}
    text = " ".join(sorted(published))
    assert "8001" in text and "8002" in text, f"nginx must publish 8001 and 8002: {nginx['ports']}"
    volumes = [str(v) for v in nginx["volumes"]]
    assert any(v.startswith(str(NGINX_CONF)) and ":/etc/nginx/nginx.conf" in v for v in volumes), (
        f"nginx must mount infra/docker/nginx.conf: {volumes}"
    )
    for api in APIS:
        assert nginx["depends_on"][api]["condition"] == "service_healthy"


# ------------------------------------------------------------------------------------ nginx


def _servers(conf: str) -> list[str]:
    """The text of each `server { ... }` block (nginx.conf is brace-balanced)."""
    blocks = []
    for match in re.finditer(r"\bserver\s*\{", conf):
        depth, i = 1, match.end()
        while depth:
            depth += {"{": 1, "}": -1}.get(conf[i], 0)
            i += 1
        blocks.append(conf[match.end() : i - 1])
    return blocks


def test_nginx_conf_routes_each_port_to_its_api() -> None:
    conf = re.sub(r"#[^\n]*", "", NGINX_CONF.read_text())
    routes = {}
    for block in _servers(conf):
        listen = re.search(r"^\s*listen\s+(\d+)\s*;", block, re.M)
        targets = set(re.findall(r"http://([\w-]+:\d+)", block))
        assert listen and len(targets) == 1, f"one listen port and one upstream per server: {block[:200]}"
        routes[int(listen.group(1))] = targets.pop()
    assert routes == {port: f"{name}:{port}" for name, port in APIS.items()}
    assert re.search(r"^\s*resolver\s+127\.0\.0\.11\b", conf, re.M), "Docker's DNS, for the replicas"


def test_nginx_conf_body_limit_matches_the_app() -> None:
    conf = NGINX_CONF.read_text()
    size = re.search(r"^\s*client_max_body_size\s+(\d+)([kKmM]?)\s*;", conf, re.M)
    assert size, "client_max_body_size is not set"
    limit = int(size.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[size.group(2).lower()]
    default = Settings.model_fields["max_body_bytes"].default
    assert limit == default
    assert f"request body over {default} bytes" in conf, "nginx's 413 should read like the app's"
    assert "application/problem+json" in conf


def test_nginx_conf_upgrades_the_monitor_websocket() -> None:
    conf = NGINX_CONF.read_text()
    query_server = next(b for b in _servers(conf) if "query-api:8002" in b)
    location = re.search(r"location\s+[=^~]*\s*/monitor/ws\s*\{(?P<body>[^}]*)\}", query_server)
    assert location, "no location for /monitor/ws on the query API"
    body = location.group("body")
    assert re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade", body)
    assert re.search(r"proxy_set_header\s+Connection\s+\$connection_upgrade", body)
    assert "map $http_upgrade $connection_upgrade" in conf


def test_nginx_never_forwards_metrics() -> None:
    for path in (NGINX_CONF, NGINX_TLS_CONF):
        conf = re.sub(r"#[^\n]*", "", path.read_text())
        for block in _servers(conf):
            assert re.search(r"location\s+\^~\s*/metrics\s*\{\s*return\s+404;\s*\}", block), (
                f"{path.name}: a server forwards /metrics: {block[:120]}"
            )


def test_nginx_tls_servers_send_hsts_with_mounted_certificates() -> None:
    assert re.search(r"^\s*include\s+/etc/nginx/conf\.d/\*\.tls\.conf;", NGINX_CONF.read_text(), re.M)
    conf = re.sub(r"#[^\n]*", "", NGINX_TLS_CONF.read_text())
    servers = _servers(conf)
    assert len(servers) == 2
    for block in servers:
        assert re.search(r"^\s*listen\s+\d+\s+ssl\s*;", block, re.M)
        assert "ssl_certificate /etc/nginx/certs/fullchain.pem;" in block
        assert "ssl_certificate_key /etc/nginx/certs/privkey.pem;" in block
        hsts = re.search(r'add_header\s+Strict-Transport-Security\s+"max-age=(\d+)[^"]*"\s+always;', block)
        assert hsts and int(hsts.group(1)) >= 180 * 24 * 3600
    assert re.search(r"^\s*ssl_protocols\s+TLSv1\.2\s+TLSv1\.3\s*;", conf, re.M)
    compose = COMPOSE_FILE.read_text()
    assert "nginx-tls.conf:/etc/nginx/conf.d/campaigns.tls.conf:ro" in compose
    assert "CAMPAIGNS_TLS_DIR" in compose


# ------------------------------------------------------------------------------------ Dockerfile


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            rows.append((keyword.upper(), rest.strip()))
    return rows


def _ignored(path: str) -> bool:
    patterns = [
        p.strip() for p in DOCKERIGNORE.read_text().splitlines() if p.strip() and not p.startswith("#")
    ]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            ignored = not negate
    return ignored


def test_dockerfile_copies_the_package_sources() -> None:
    copies = [rest.split() for kw, rest in _instructions() if kw == "COPY" and "--from=" not in rest]
    sources = [src.rstrip("/") for parts in copies for src in parts[:-1] if not src.startswith("--")]
    for source in sources:
        assert (REPO / source).exists(), f"COPY source {source} does not exist"
        assert not _ignored(source), f"COPY source {source} is excluded by .dockerignore"

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    includes = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in includes}
    assert packages <= set(sources), f"packages not copied: {packages - set(sources)}"
    assert "pyproject.toml" in sources


def test_dockerfile_runtime_is_slim_non_root_and_runs_campaigns() -> None:
    rows = _instructions()
    stages = [rest for kw, rest in rows if kw == "FROM"]
    assert len(stages) >= 2, "multi-stage: build, then runtime"
    assert all(stage.split()[0] == "python:3.11-slim" for stage in stages)
    runtime = rows[max(i for i, (kw, _) in enumerate(rows) if kw == "FROM") :]
    users = [rest for kw, rest in runtime if kw == "USER"]
    assert users and users[-1] not in {"root", "0"}
    assert ("ENTRYPOINT", '["campaigns"]') in runtime
    assert ("CMD", '["serve", "command-api"]') in runtime
    env = " ".join(rest for kw, rest in runtime if kw == "ENV")
    for variable in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "CAMPAIGNS_LOCAL_DIR=/"):
        assert variable in env
    installs = " ".join(rest for kw, rest in rows if kw == "RUN")
    assert "pip install --no-deps ." in installs
    assert "-e ." not in installs and "[dev]" not in installs


def test_dockerignore_keeps_local_state_out() -> None:
    for path in (".git", ".venv", ".local", "tests/artifacts", ".pytest_cache", "command_api/__pycache__"):
        assert _ignored(path), f".dockerignore lets {path} into the build context"
