"""Run the real services as processes (`python -m launcher serve NAME`) for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import redis
from pydantic import SecretStr
from redis.cluster import ClusterNode

from readmodels.keyspace import scheduler_status_key
from service_runtime.settings import Settings
from tests.support import loopback
from tests.support.stack import REPO, free_port

__all__ = ["RunningServices", "free_port", "settings_env"]


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process load exactly these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGNS_")}
    for name, value in settings.model_dump().items():
        if name == "app_env":
            env["APP_ENV"] = str(value)
        elif isinstance(value, SecretStr):
            env[f"CAMPAIGNS_{name.upper()}"] = value.get_secret_value()
        else:
            env[f"CAMPAIGNS_{name.upper()}"] = str(value)
    return env


@dataclass
class RunningServices:
    settings: Settings
    log_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def command_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.command_api_port}"

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.query_api_port}"

    def start(self, names: Iterable[str]) -> None:
        for name in names:
            self.start_instance(name, name)

    def start_instance(self, name: str, service: str, **overrides: object) -> None:
        """One more process of `service` under its own `name` (e.g. "projectors-3"), with these
        settings changed (its own metrics port)."""
        env = settings_env(self.settings.model_copy(update=overrides) if overrides else self.settings)
        env["PYTHONUNBUFFERED"] = "1"
        log = (self.log_dir / f"{name}.log").open("ab")
        metrics_dir = self.log_dir / f"metrics-{name}"
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "launcher", "serve", service],
            cwd=REPO,
            env={**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        """Until the APIs answer ready and, when a scheduler runs, one reports holding the lease."""
        urls = []
        if "command-api" in self.processes:
            urls.append(f"{self.command_url}/health/ready")
        if "query-api" in self.processes:
            urls.append(f"{self.query_url}/health/ready")
        deadline = time.monotonic() + timeout
        pending = list(urls)
        scheduler = any(name.startswith("scheduler") for name in self.processes)
        status = self._redis() if scheduler else None
        try:
            while True:
                for name, proc in self.processes.items():
                    if proc.poll() is not None:
                        raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
                pending = [url for url in pending if not _is_ready(url)]
                scheduler = scheduler and not (status is not None and self._scheduler_leads(status))
                if not pending and not scheduler:
                    return
                if time.monotonic() > deadline:
                    waiting = [*pending, *(["a scheduler holding the lease"] if scheduler else [])]
                    raise RuntimeError(f"not ready after {timeout}s: {waiting}")
                time.sleep(0.2)
        finally:
            if status is not None:
                status.close()

    def _redis(self) -> redis.Redis | redis.RedisCluster:
        addresses = self.settings.redis_cluster_addresses
        if addresses:
            nodes = [ClusterNode(*a.rsplit(":", 1)) for a in addresses]
            return redis.RedisCluster(startup_nodes=nodes, socket_timeout=2)
        return redis.Redis.from_url(self.settings.redis_url, socket_timeout=2)

    def _scheduler_leads(self, client: redis.Redis | redis.RedisCluster) -> bool:
        """A scheduler has reported holding the lease (before that it fires nothing: a process
        still importing, connecting, taking the lease)."""
        try:
            reports = client.hvals(scheduler_status_key(self.settings.redis_prefix))
        except redis.RedisError:
            return False
        return any(orjson.loads(report).get("leading") for report in reports)

    def stop(self, name: str, sig: int = 15) -> None:
        proc = self.processes.pop(name)
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()

    def stop_all(self) -> None:
        """SIGTERM to every process at once, then wait for each (SIGKILL after 20 s)."""
        stopping = list(self.processes.items())
        self.processes.clear()
        for _, proc in stopping:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 15)
        deadline = time.monotonic() + 20
        for _, proc in stopping:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                proc.wait()

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def _is_ready(url: str) -> bool:
    """The API's own readiness answer: 200 with its JSON body, not just any 200 on that port
    (another server there, e.g. a metrics server, answers every GET with 200)."""
    try:
        response = loopback.get(url, timeout=2)
        return response.status_code == 200 and response.json().get("status") == "ready"
    except (httpx.HTTPError, ValueError):
        return False
