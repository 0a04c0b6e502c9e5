"""The supervisor's start-up failure path, on stand-in services (real short-lived processes)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from launcher.supervisor import Supervisor
from service_runtime import processes
from service_runtime.settings import Settings
from tests.support.stack import free_port


def supervisor(tmp_path: Path, commands: dict[str, list[str]]) -> Supervisor:
    settings = Settings(local_dir=str(tmp_path / "local"))
    never_ready = [f"http://127.0.0.1:{free_port()}/"]
    return Supervisor(tmp_path, settings, list(commands), commands=commands, ready_urls=never_ready)


def test_a_service_dying_at_start_stops_the_others_and_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    running = supervisor(
        tmp_path,
        {"steady": ["sleep", "60"], "broken": [sys.executable, "-c", "import sys; sys.exit(3)"]},
    )
    assert running.run_foreground() == 1
    err = capsys.readouterr().err
    assert "broken exited during start-up" in err
    # Nothing survives and no pid file is left behind.
    assert not list(running.run_dir.glob("*.pid"))


def test_detached_start_failure_stops_what_it_started_and_the_stack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    running = supervisor(
        tmp_path,
        {"steady": ["sleep", "60"], "broken": [sys.executable, "-c", "import sys; sys.exit(3)"]},
    )
    stack_calls: list[str] = []

    def stack(action: str) -> int:
        stack_calls.append(action)
        return 0

    assert running.start_with_stack(stack) == 1
    assert stack_calls == ["up", "down"]
    err = capsys.readouterr().err
    assert "broken exited during start-up" in err
    assert "stopping every service and server" in err
    assert not list(running.run_dir.glob("*.pid"))


def test_a_failed_stack_start_starts_no_service_and_still_stops_the_stack(tmp_path: Path) -> None:
    running = supervisor(tmp_path, {"steady": ["sleep", "60"]})
    calls: list[str] = []

    def stack(action: str) -> int:
        calls.append(action)
        return 1 if action == "up" else 0

    assert running.run_with_stack(stack) == 1
    assert calls == ["up", "down"]
    assert not running.run_dir.exists() or not list(running.run_dir.glob("*.pid"))


def test_foreground_services_leave_no_process_behind(tmp_path: Path) -> None:
    running = supervisor(tmp_path, {"a": ["sleep", "60"], "b": ["sleep", "60"]})
    pids: list[int] = []
    real_wait = running.wait_healthy

    def record_then_fail(found: dict[str, int] | None = None, timeout: float = 90) -> None:
        pids.extend((found or {}).values())
        real_wait(found, timeout=0.1)

    running.wait_healthy = record_then_fail  # type: ignore[method-assign,assignment]
    assert running.run_foreground() == 1  # not ready in time
    assert len(pids) == 2
    assert not any(processes.pid_alive(pid) for pid in pids)
