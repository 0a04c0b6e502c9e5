"""The one settings class: every address, port, secret and size, read from CAMPAIGNS_* variables."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_JWT_SECRET = "dev-only-jwt-secret-change-me-0123456789abcdef"  # noqa: S105


class DefaultSecretInProduction(RuntimeError):
    """Raised when APP_ENV=production and a secret still has its development default."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAMPAIGNS_", extra="ignore")

    app_env: Literal["development", "test", "production"] = Field(
        default="development", validation_alias="APP_ENV"
    )

    # Servers
    mongo_url: str = "mongodb://127.0.0.1:27017/?directConnection=true"
    mongo_db: str = "campaigns"
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_partitions: int = Field(default=6, ge=1)
    topic_prefix: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "rm"
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
    scheduler_metrics_port: int = 9104

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

    # Scheduler: timers due within the lookahead are claimed (each for claim_seconds, after which
    # another scheduler may fire it) and fired at their due time; an idle scheduler polls.
    scheduler_lookahead_seconds: float = Field(default=1.0, gt=0, le=60)
    scheduler_poll_seconds: float = Field(default=0.25, gt=0, le=60)
    scheduler_claim_seconds: float = Field(default=15.0, gt=0)
    scheduler_batch_size: int = Field(default=500, ge=1)
    # Transactions in flight, and timers fired together in one (those due at the same moment).
    scheduler_concurrency: int = Field(default=4, ge=1)
    scheduler_fire_batch: int = Field(default=200, ge=1)

    # Monitor: how often the projectors sample consumer lag, dead letters and throughput
    monitor_sample_seconds: float = Field(default=5.0, gt=0)

    # Local stack
    local_dir: str = ".local"

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
