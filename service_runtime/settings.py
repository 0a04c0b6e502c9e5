"""The one settings class: every address, port, secret and size, read from CAMPAIGNS_* variables."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_JWT_SECRET = "dev-only-jwt-secret-change-me-0123456789abcdef"  # noqa: S105
# Where the cluster topology's servers listen unless told otherwise (README, "Topologies").
CLUSTER_REDIS_NODES = ",".join(f"127.0.0.1:{port}" for port in range(7000, 7006))
CLUSTER_KAFKA_BOOTSTRAP = ",".join(f"127.0.0.1:{port}" for port in (19092, 19093, 19094))


class DefaultSecretInProduction(RuntimeError):
    """Raised when APP_ENV=production and a secret still has its development default."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAMPAIGNS_", extra="ignore")

    app_env: Literal["development", "test", "production"] = Field(
        default="development", validation_alias="APP_ENV"
    )

    # Servers. `topology` picks what the local stack runs: "single" (one node of each, the
    # default) or "cluster" (a Redis Cluster of 3 primaries + 3 replicas and 3 Kafka nodes with
    # replication 3 and min ISR 2); in "cluster", the Redis nodes, the Kafka bootstrap list,
    # the replication factor and min ISR default to the cluster's unless set.
    topology: Literal["single", "cluster"] = "single"
    mongo_url: str = "mongodb://127.0.0.1:27017/?directConnection=true"
    mongo_db: str = "campaigns"
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_partitions: int = Field(default=6, ge=1)
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_min_insync_replicas: int = Field(default=1, ge=1)
    topic_prefix: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "rm"
    # "host:port,host:port,...": the Redis Cluster's seed nodes (empty: standalone `redis_url`).
    redis_cluster_nodes: str = ""
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_sender: str = "campaigns@localhost"

    # HTTP
    command_api_host: str = "127.0.0.1"
    command_api_port: int = 8001
    query_api_host: str = "127.0.0.1"
    query_api_port: int = 8002
    api_workers: int = Field(default=2, ge=1)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    max_json_depth: int = Field(default=32, ge=2)

    # Auth
    jwt_secret: str = DEFAULT_JWT_SECRET
    jwt_issuer: str = "campaigns-cqrs"
    jwt_audience: str = "campaigns-api"
    access_token_ttl_seconds: int = Field(default=900, ge=1)
    refresh_token_ttl_seconds: int = Field(default=14 * 24 * 3600, ge=60)
    login_max_attempts: int = Field(default=5, ge=1)
    login_window_seconds: int = Field(default=60, ge=1)

    # Prometheus endpoints of the processes that serve no HTTP API (GET /metrics on each)
    metrics_host: str = "127.0.0.1"
    relay_metrics_port: int = 9101
    projectors_metrics_port: int = 9102
    workers_metrics_port: int = 9103

    # Pipeline
    relay_lease_seconds: float = Field(default=10.0, gt=0)
    relay_batch_size: int = Field(default=500, ge=1)
    consumer_batch_size: int = Field(default=500, ge=1)
    read_wait_seconds: float = Field(default=2.0, ge=0)
    # The query API's in-process campaign cache (query_api/adapters/campaign_cache.py), per
    # worker: its memory bound (0 turns it off) and how long an entry may live at most.
    campaign_cache_bytes: int = Field(default=16 * 1024 * 1024, ge=0)
    campaign_cache_seconds: float = Field(default=1.0, gt=0)
    freshness_limit_seconds: float = Field(default=60.0, gt=0)
    worker_max_attempts: int = Field(default=5, ge=1)
    worker_backoff_seconds: float = Field(default=0.5, gt=0)

    # Monitor: how often the projectors sample consumer lag, dead letters and throughput
    monitor_sample_seconds: float = Field(default=5.0, gt=0)

    # Local stack
    local_dir: str = ".local"
    # Heap (-Xms = -Xmx) of each Kafka node of the cluster topology, in MiB
    kafka_cluster_heap_mb: int = Field(default=384, ge=128)

    @property
    def kafka_bootstrap_servers(self) -> list[str]:
        """`kafka_bootstrap` as a list: FastStream takes a string as one single address."""
        return [address.strip() for address in self.kafka_bootstrap.split(",") if address.strip()]

    @property
    def redis_cluster_addresses(self) -> list[str]:
        """The Redis Cluster's seed nodes; empty when Redis is the standalone `redis_url`."""
        return [address.strip() for address in self.redis_cluster_nodes.split(",") if address.strip()]

    @model_validator(mode="after")
    def _cluster_topology_defaults(self) -> Settings:
        if self.topology == "cluster":
            given = self.model_fields_set
            if not self.redis_cluster_nodes:
                self.redis_cluster_nodes = CLUSTER_REDIS_NODES
            if "kafka_bootstrap" not in given:
                self.kafka_bootstrap = CLUSTER_KAFKA_BOOTSTRAP
            if "kafka_replication_factor" not in given:
                self.kafka_replication_factor = 3
            if "kafka_min_insync_replicas" not in given:
                self.kafka_min_insync_replicas = 2
        if self.kafka_min_insync_replicas > self.kafka_replication_factor:
            raise ValueError(
                "kafka_min_insync_replicas must not exceed kafka_replication_factor "
                f"({self.kafka_min_insync_replicas} > {self.kafka_replication_factor})"
            )
        return self

    @model_validator(mode="after")
    def _refuse_default_secrets_in_production(self) -> Settings:
        if self.app_env == "production" and self.jwt_secret == DEFAULT_JWT_SECRET:
            raise DefaultSecretInProduction(
                "APP_ENV=production but CAMPAIGNS_JWT_SECRET is the development default; "
                "set CAMPAIGNS_JWT_SECRET to a long random value before starting."
            )
        if self.app_env == "production" and len(self.jwt_secret) < 32:
            raise DefaultSecretInProduction(
                "CAMPAIGNS_JWT_SECRET must be at least 32 characters in production."
            )
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
