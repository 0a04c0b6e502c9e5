"""A second, private local stack for tests that stop and kill servers.

Fault tests must never touch the stack other tests (and other people) use on the default
ports, so they get their own Redis, Kafka, MongoDB and SMTP sink: the same `infra/local/stack.py`
started with other ports and another local directory. Individual servers of it can be killed
and started again; the whole of it is torn down at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from service_runtime.settings import Settings
from tests.support.stack import REPO, STACK, isolated_settings

SERVERS = ("redis", "kafka", "mongo", "smtp")
# Where installed tools and downloaded jars live: shared with the main stack.
_KEPT = ("CAMPAIGNS_CACHE_DIR", "CAMPAIGNS_TOOLS_DIR")


def _env_port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True)
class PrivateStack:
    """Where the private servers listen (env-overridable) and how to stop and start each one."""

    local_dir: str = os.environ.get("CAMPAIGNS_PRIVATE_LOCAL_DIR", ".local/chaos")
    redis_port: int = _env_port("CAMPAIGNS_PRIVATE_REDIS_PORT", 16379)
    kafka_port: int = _env_port("CAMPAIGNS_PRIVATE_KAFKA_PORT", 19092)
    kafka_controller_port: int = _env_port("CAMPAIGNS_PRIVATE_KAFKA_CONTROLLER_PORT", 19093)
    mongo_port: int = _env_port("CAMPAIGNS_PRIVATE_MONGO_PORT", 27018)
    smtp_port: int = _env_port("CAMPAIGNS_PRIVATE_SMTP_PORT", 11025)

    @property
    def root(self) -> Path:
        return (REPO / self.local_dir).resolve()

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def mongo_url(self) -> str:
        return f"mongodb://127.0.0.1:{self.mongo_port}/?directConnection=true"

    def env(self) -> dict[str, str]:
        """The environment that points stack.py (and nothing else) at the private servers."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGNS_") or k in _KEPT}
        env.update(
            {
                "CAMPAIGNS_LOCAL_DIR": self.local_dir,
                "CAMPAIGNS_REDIS_URL": self.redis_url,
                "CAMPAIGNS_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
                "CAMPAIGNS_KAFKA_CONTROLLER_PORT": str(self.kafka_controller_port),
                "CAMPAIGNS_MONGO_URL": self.mongo_url,
                "CAMPAIGNS_SMTP_PORT": str(self.smtp_port),
                "CAMPAIGNS_KAFKA_PARTITIONS": "3",
            }
        )
        return env

    def settings(self, **overrides: object) -> Settings:
        """Isolated settings (own database, key prefix, topics) on the private servers."""
        values: dict[str, object] = {
            "mongo_url": self.mongo_url,
            "redis_url": self.redis_url,
            "kafka_bootstrap": self.kafka_bootstrap,
            "smtp_port": self.smtp_port,
            "local_dir": self.local_dir,
        }
        values.update(overrides)
        return isolated_settings(**values)

    # ------------------------------------------------------------------ whole stack

    def _stack(self, *args: str, timeout: float = 300) -> None:
        result = subprocess.run(
            [sys.executable, str(STACK), *args],
            cwd=REPO,
            env=self.env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"stack.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")

    def fresh_up(self) -> None:
        """Stop whatever a previous run left, wipe the servers' data, start every server."""
        self.down()
        for name in (*SERVERS, "logs", "run"):
            shutil.rmtree(self.root / name, ignore_errors=True)
        (self.root / "kafka.properties").unlink(missing_ok=True)
        self._stack("up")

    def down(self) -> None:
        self._stack("down", timeout=120)

    # ------------------------------------------------------------------ one server

    def pid(self, name: str) -> int | None:
        path = self.root / "run" / f"{name}.pid"
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def kill(self, name: str, sig: int = signal.SIGKILL, timeout: float = 40) -> None:
        """Send `sig` to the server's process group and wait until it is gone (SIGKILL after `timeout`)."""
        pid = self.pid(name)
        if pid is None:
            raise RuntimeError(f"private {name} is not running")
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while _alive(pid):
            if time.monotonic() > deadline:
                os.killpg(pid, signal.SIGKILL)
                deadline = time.monotonic() + timeout
            time.sleep(0.05)

    def stop(self, name: str) -> None:
        """A clean stop: SIGTERM, as an operator would."""
        self.kill(name, signal.SIGTERM)

    def start(self, name: str) -> None:
        """Start one server again (no-op if it runs) and wait until it answers."""
        self._stack("up", name)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.root / "logs" / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


_RUNNING: PrivateStack | None = None


def acquire_private_stack() -> PrivateStack:
    """The session's private stack, started fresh on first use (several conftests share it)."""
    global _RUNNING
    if _RUNNING is None:
        stack = PrivateStack()
        stack.fresh_up()
        _RUNNING = stack
    return _RUNNING


def release_private_stack() -> None:
    """Tear the private stack down if this session started it (safe to call more than once)."""
    global _RUNNING
    if _RUNNING is not None and not os.environ.get("CAMPAIGNS_KEEP_PRIVATE_STACK"):
        _RUNNING.down()
    _RUNNING = None
