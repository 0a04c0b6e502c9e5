"""Runs every service as a child process: in the foreground with their logs, or detached."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from service_runtime.settings import Settings


class Supervisor:
    def __init__(self, repo: Path, settings: Settings, services: list[str]) -> None:
        self.repo = repo
        self.settings = settings
        self.services = services
        local = repo / settings.local_dir
        self.run_dir = local / "run" / "services"
        self.log_dir = local / "logs"

    def command(self, service: str) -> list[str]:
        return [sys.executable, "-m", "launcher", "serve", service]

    # ------------------------------------------------------------------ foreground

    def run_foreground(self) -> None:
        """Start all services, interleave their output, stop all on Ctrl-C or when one dies."""
        processes: dict[str, subprocess.Popen[bytes]] = {}
        selector = selectors.DefaultSelector()
        for service in self.services:
            proc = subprocess.Popen(
                self.command(service),
                cwd=self.repo,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            processes[service] = proc
            assert proc.stdout is not None
            selector.register(proc.stdout, selectors.EVENT_READ, service)
        width = max(len(s) for s in self.services)
        print(f"[run] {len(processes)} services starting; Ctrl-C stops everything", flush=True)
        try:
            self.wait_healthy(processes)
            print(
                f"[run] ready: command API http://{self.settings.command_api_host}:"
                f"{self.settings.command_api_port}, query API http://{self.settings.query_api_host}:"
                f"{self.settings.query_api_port} (monitor at /monitor)",
                flush=True,
            )
            while True:
                for key, _ in selector.select(timeout=1.0):
                    line = key.fileobj.readline()  # type: ignore[union-attr]
                    if line:
                        sys.stdout.write(f"{key.data:<{width}} | {line.decode(errors='replace')}")
                        sys.stdout.flush()
                dead = [name for name, p in processes.items() if p.poll() is not None]
                if dead:
                    print(f"[run] {', '.join(dead)} exited; stopping everything", flush=True)
                    return
        except KeyboardInterrupt:
            print("\n[run] stopping", flush=True)
        finally:
            for proc in processes.values():
                _terminate(proc.pid)

    # ------------------------------------------------------------------ detached

    def pid_file(self, service: str) -> Path:
        return self.run_dir / f"{service}.pid"

    def start_detached(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for service in self.services:
            pid_file = self.pid_file(service)
            if pid_file.exists() and _alive(int(pid_file.read_text())):
                print(f"[run] {service} already running", flush=True)
                continue
            with (self.log_dir / f"{service}.log").open("ab") as log:
                proc = subprocess.Popen(
                    self.command(service),
                    cwd=self.repo,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            pid_file.write_text(str(proc.pid))
            print(f"[run] {service} started (pid {proc.pid}), log {self.log_dir / service}.log")

    def stop_detached(self) -> None:
        for service in self.services:
            pid_file = self.pid_file(service)
            if not pid_file.exists():
                continue
            pid = int(pid_file.read_text())
            pid_file.unlink()
            if _alive(pid):
                _terminate(pid)
                print(f"[run] {service} stopped")

    def wait_healthy(
        self, processes: dict[str, subprocess.Popen[bytes]] | None = None, timeout: float = 90
    ) -> None:
        urls = [
            f"http://{self.settings.command_api_host}:{self.settings.command_api_port}/health/ready",
            f"http://{self.settings.query_api_host}:{self.settings.query_api_port}/health/ready",
        ]
        deadline = time.monotonic() + timeout
        pending = list(urls)
        while pending and time.monotonic() < deadline:
            if processes and any(p.poll() is not None for p in processes.values()):
                raise SystemExit("[run] a service exited during start-up; see its output above")
            pending = [u for u in pending if not _answers_200(u)]
            time.sleep(0.5)
        if pending:
            raise SystemExit(f"[run] not ready after {timeout:.0f}s: {', '.join(pending)}")
        for url in urls:
            print(f"[run] {url} -> 200", flush=True)


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback URL
            return bool(response.status == 200)
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state != "Z"


def _terminate(pid: int, timeout: float = 15) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
