"""What every server recipe shares: the Server record, where things live, installs."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service_runtime.processes import say as _say
from service_runtime.settings import Settings

REPO = Path(__file__).resolve().parents[3]
CACHE = Path(os.environ.get("CAMPAIGNS_CACHE_DIR", Path.home() / ".cache" / "campaigns-cqrs"))
# Installed tools (SecantusDB's venv) are shared by every stack of this checkout, whatever its
# CAMPAIGNS_LOCAL_DIR, so a second stack (the fault tests' private one) installs nothing again.
TOOLS = Path(os.environ.get("CAMPAIGNS_TOOLS_DIR", REPO / ".local" / "tools"))


class StackError(RuntimeError):
    """A server could not be started; the message says why and what to do."""

    reported = False  # set once the message has been printed


def say(message: str) -> None:
    _say(f"[stack] {message}")


@dataclass
class Server:
    """One server process: `name` is its pid file's and log's name, `kind` its recipe."""

    name: str
    kind: str
    host: str
    port: int
    command: Callable[[], list[str]]
    prepare: Callable[[], None] = lambda: None
    ready: Callable[[], bool] | None = None
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 90.0
    where: str = ""
    # What `status --json` adds for this server (a Redis node's role, a Kafka node's id).
    describe: Callable[[], dict[str, Any]] = dict


@dataclass
class Group:
    """The servers of one recipe, started together; `after_start` runs once all answer,
    if this run started any of them (create topics, form the Redis Cluster)."""

    kind: str
    servers: list[Server]
    after_start: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class Context:
    settings: Settings
    root: Path  # the stack's directory (data, logs, pid files)


def host_port(address: str, default_port: int) -> tuple[str, int]:
    host, _, port = address.strip().rpartition(":")
    if not host:
        return address.strip() or "127.0.0.1", default_port
    return host, int(port)


@contextmanager
def installing(lock_file: Path) -> Iterator[None]:
    """Held while one stack installs a tool that stacks share: stacks starting at once (`make
    test`'s two workers may each start a private stack on a fresh clone) take turns, and the
    later ones find the tool installed."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def run_checked(command: list[str], what: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StackError(
            f"{what} failed (exit {result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    return result.stdout


def ensure_debian_package(binary: str, package: str) -> None:
    if shutil.which(binary):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise StackError(f"{binary} is missing: install Debian's '{package}' (apt-get install {package})")
    say(f"installing Debian's {package} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, capture_output=True)
    result = subprocess.run(
        ["apt-get", "install", "-y", "-qq", package], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0 or not shutil.which(binary):
        raise StackError(f"apt-get install {package} failed:\n{result.stderr[-2000:]}")
