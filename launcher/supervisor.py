"""Runs every service as a child process: in the foreground with their logs, or detached.

Process control (sessions, pid files, SIGTERM then SIGKILL) is `service_runtime.processes`,
the same code the local stack uses for its servers. A scaled-out service runs as several
instances (`launcher/instances.py`), each with its own pid file, log and metrics port; beside
each pid file a small JSON file says which service and instance it is (`campaigns stack status
--json`). Stopping is shielded: a second Ctrl-C, a closed terminal or a closed output pipe
(`make up | tee up.log`, then Ctrl-C) cannot abort it.
"""

from __future__ import annotations

import json
import selectors
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from launcher.instances import Instance, plan_instances
from service_runtime import processes
from service_runtime.processes import say
from service_runtime.settings import Settings

StackControl = Callable[[str], int]  # runs `stack.py ACTION`, returns its exit code


class StartFailed(RuntimeError):
    """A service did not start; the message names it and where its output is."""


class Supervisor:
    def __init__(
        self,
        repo: Path,
        settings: Settings,
        services: list[str],
        *,
        commands: Mapping[str, list[str]] | None = None,
        ready_urls: list[str] | None = None,
    ) -> None:
        self.repo = repo
        self.settings = settings
        self.services = services
        self.commands = dict(commands or {})
        self.instances: list[Instance] = plan_instances(settings, services)
        local = repo / settings.local_dir
        self.run_dir = local / "run" / "services"
        self.log_dir = local / "logs"
        self.ready_urls = (
            ready_urls
            if ready_urls is not None
            else [
                f"http://{settings.command_api_host}:{settings.command_api_port}/health/ready",
                f"http://{settings.query_api_host}:{settings.query_api_port}/health/ready",
            ]
        )

    def command(self, service: str) -> list[str]:
        return self.commands.get(service) or [sys.executable, "-m", "launcher", "serve", service]

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def _record(self, instance: Instance, pid: int) -> None:
        processes.write_pid(self.pid_file(instance.name), pid)
        self.pid_file(instance.name).with_suffix(".json").write_text(json.dumps(instance.describe()))

    def _forget(self, name: str) -> None:
        self.pid_file(name).unlink(missing_ok=True)
        self.pid_file(name).with_suffix(".json").unlink(missing_ok=True)

    # ------------------------------------------------------------------ with the stack

    def run_with_stack(self, stack: StackControl) -> int:
        """`campaigns run`: the stack, then every service in the foreground; whatever ends it
        (Ctrl-C, a service dying, a failed start), every service and server is stopped."""
        try:
            code = stack("up")
            if code:
                say(f"[run] the stack did not start (exit {code}); stopping what runs", sys.stderr)
                return code
            return self.run_foreground()
        except KeyboardInterrupt:
            return 130
        finally:
            with processes.shutdown_shield():
                stack("down")

    def start_with_stack(self, stack: StackControl) -> int:
        """`campaigns run --detach`: on a failed start, stop the services and the stack again."""
        code = stack("up")
        if code:
            return code
        try:
            started = self.start_detached()
            self.wait_healthy(started)
            return 0
        except (StartFailed, KeyboardInterrupt) as exc:
            with processes.shutdown_shield():
                if isinstance(exc, StartFailed):
                    say(f"[run] {exc}; stopping every service and server", sys.stderr)
                self.stop_detached()
                stack("down")
            return 1 if isinstance(exc, StartFailed) else 130

    # ------------------------------------------------------------------ foreground

    def run_foreground(self) -> int:
        """Start all services, interleave their output, stop all on Ctrl-C, when one dies or
        when the output pipe closes. Returns the exit code for the launcher."""
        running: dict[str, subprocess.Popen[bytes]] = {}
        selector = selectors.DefaultSelector()
        code = 0
        try:
            for instance in self.instances:
                proc = processes.spawn(
                    self.command(instance.service), cwd=self.repo, pipe_output=True, env=instance.env
                )
                running[instance.name] = proc
                self._record(instance, proc.pid)
                assert proc.stdout is not None
                selector.register(proc.stdout, selectors.EVENT_READ, instance.name)
            width = max(len(i.name) for i in self.instances)
            say(f"[run] {len(running)} services starting; Ctrl-C stops everything")
            self.wait_healthy({name: proc.pid for name, proc in running.items()})
            say(
                f"[run] ready: command API http://{self.settings.command_api_host}:"
                f"{self.settings.command_api_port}, query API http://{self.settings.query_api_host}:"
                f"{self.settings.query_api_port} (monitor at /monitor)"
            )
            while True:
                for key, _ in selector.select(timeout=1.0):
                    line = key.fileobj.readline()  # type: ignore[union-attr]
                    if line:
                        sys.stdout.write(f"{key.data:<{width}} | {line.decode(errors='replace')}")
                        sys.stdout.flush()
                dead = [name for name, p in running.items() if p.poll() is not None]
                if dead:
                    say(f"[run] {', '.join(dead)} exited; stopping everything", sys.stderr)
                    return 1
        except KeyboardInterrupt:
            code = 130
            say("\n[run] stopping", sys.stderr)
        except BrokenPipeError:
            code = 141
            processes.silence(sys.stdout)
            say("[run] output closed; stopping everything", sys.stderr)
        except StartFailed as exc:
            code = 1
            say(f"[run] {exc}; stopping everything", sys.stderr)
        finally:
            with processes.shutdown_shield():
                selector.close()
                processes.terminate_all([p.pid for p in running.values()], timeout=15)
                for name in running:
                    self._forget(name)
        return code

    # ------------------------------------------------------------------ detached

    def start_detached(self) -> dict[str, int]:
        """Start every service not running; returns name -> pid of all of them."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        pids: dict[str, int] = {}
        for instance in self.instances:
            name = instance.name
            pid = processes.read_pid(self.pid_file(name))
            if pid is not None:
                say(f"[run] {name} already running (pid {pid})")
                pids[name] = pid
                continue
            log = self.log_dir / f"{name}.log"
            proc = processes.spawn(self.command(instance.service), cwd=self.repo, log=log, env=instance.env)
            self._record(instance, proc.pid)
            pids[name] = proc.pid
            port = f", metrics :{instance.metrics_port}" if instance.metrics_port else ""
            say(f"[run] {name} started (pid {proc.pid}{port}), log {log}")
        return pids

    def stop_detached(self) -> None:
        """Stop every instance this plan names and any other a pid file names (one started with
        other instance counts), all at once."""
        with processes.shutdown_shield():
            names = [instance.name for instance in self.instances]
            others = sorted(p.stem for p in self.run_dir.glob("*.pid") if p.stem not in names)
            pids = {name: processes.read_pid(self.pid_file(name)) for name in [*names, *others]}
            processes.terminate_all([pid for pid in pids.values() if pid is not None], timeout=15)
            for name, pid in pids.items():
                self._forget(name)
                if pid is not None:
                    say(f"[run] {name} stopped")

    def wait_healthy(self, pids: Mapping[str, int] | None = None, timeout: float = 90) -> None:
        """Wait until every ready URL answers 200; a service that exits meanwhile is named."""
        deadline = time.monotonic() + timeout
        pending = list(self.ready_urls)
        while pending:
            for name, pid in (pids or {}).items():
                if not processes.pid_alive(pid):
                    raise StartFailed(
                        f"{name} exited during start-up; see its output above or {self.log_dir / name}.log"
                    )
            pending = [u for u in pending if not _answers_200(u)]
            if pending and time.monotonic() > deadline:
                raise StartFailed(f"not ready after {timeout:.0f}s: {', '.join(pending)}")
            if pending:
                time.sleep(0.5)
        for url in self.ready_urls:
            say(f"[run] {url} -> 200")


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback URL
            return bool(response.status == 200)
    except OSError:
        return False
