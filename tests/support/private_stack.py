"""A second, private local stack for tests that stop and kill servers.

Fault tests must never touch the stack other tests (and other people) use on the default
ports, so they get their own Redis, Kafka, MongoDB and SMTP sink: the same `infra/local/stack.py`
started on free ports with a local directory of the session's own. Individual servers of it can be killed
and started again; the whole of it is torn down at the end of the session.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from service_runtime.settings import Settings
from tests.support.stack import REPO, STACK, free_port, isolated_settings

SERVERS = ("redis", "kafka", "mongo", "smtp")
# Where installed tools and downloaded jars live: shared with the main stack.
_KEPT = ("CAMPAIGNS_CACHE_DIR", "CAMPAIGNS_TOOLS_DIR")


PRIVATE_ROOT = ".local/private"


@dataclass(frozen=True)
class PrivateStack:
    """Where one test session's private servers listen and how to stop and start each one.

    Every session gets free ports and a directory of its own (`.local/private/<pid>`), so two
    sessions on one machine (two people running `make test`) never stop each other's servers.
    """

    local_dir: str
    redis_port: int
    kafka_port: int
    kafka_controller_port: int
    mongo_port: int
    smtp_port: int

    @classmethod
    def for_this_session(cls) -> PrivateStack:
        return cls(
            local_dir=f"{PRIVATE_ROOT}/{os.getpid()}",
            redis_port=free_port(),
            kafka_port=free_port(),
            kafka_controller_port=free_port(),
            mongo_port=free_port(),
            smtp_port=free_port(),
        )

    @classmethod
    def load(cls, root: Path) -> PrivateStack:
        return cls(**json.loads((root / "stack.json").read_text()))

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
        """Start every server on an empty directory (a stack's description kept beside it)."""
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        (self.root / "stack.json").write_text(json.dumps(asdict(self)))
        self._stack("up")

    def down(self) -> None:
        """Stop every server and delete the data."""
        self._stack("down", timeout=120)
        shutil.rmtree(self.root, ignore_errors=True)

    # ------------------------------------------------------------------ one server

    def pid(self, name: str) -> int | None:
        return server_pid(self.root, name)

    def kill(self, name: str, sig: int = signal.SIGKILL, timeout: float = 40) -> None:
        """Send `sig` to the server's process group and wait until it is gone (SIGKILL after `timeout`)."""
        kill_server(self.root, name, sig, timeout)

    def stop(self, name: str) -> None:
        """A clean stop: SIGTERM, as an operator would."""
        self.kill(name, signal.SIGTERM)

    def start(self, name: str) -> None:
        """Start one server again (no-op if it runs) and wait until it answers."""
        self._stack("up", name)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.root / "logs" / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def server_pid(root: Path, name: str) -> int | None:
    """The pid of a private server `name` under `root`, if it runs."""
    try:
        pid = int((root / "run" / f"{name}.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def kill_server(root: Path, name: str, sig: int = signal.SIGKILL, timeout: float = 40) -> None:
    """Send `sig` to a private server's process group and wait until it is gone (SIGKILL after `timeout`)."""
    pid = server_pid(root, name)
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
        reap_abandoned_stacks()
        stack = PrivateStack.for_this_session()
        stack.fresh_up()
        _RUNNING = stack
    return _RUNNING


def reap_abandoned_stacks() -> None:
    """Stop the private stacks of sessions that died without tearing theirs down."""
    for root in (REPO / PRIVATE_ROOT).glob("*"):
        if not root.name.isdigit() or _alive(int(root.name)):
            continue
        try:
            PrivateStack.load(root).down()
        except (OSError, ValueError, TypeError, RuntimeError):
            shutil.rmtree(root, ignore_errors=True)


def release_private_stack() -> None:
    """Tear the private stack down if this session started it (safe to call more than once)."""
    global _RUNNING
    if _RUNNING is not None and not os.environ.get("CAMPAIGNS_KEEP_PRIVATE_STACK"):
        _RUNNING.down()
    _RUNNING = None
