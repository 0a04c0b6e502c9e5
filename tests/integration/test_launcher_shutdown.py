"""Ctrl-C of `make up 2>&1 | tee up.log` stops every server and service (issue 17, item 7).

A terminal's Ctrl-C sends SIGINT to the whole foreground process group: the launcher and `tee`
alike. `tee` dies first, so the launcher's output pipe closes under its shutdown messages; the
shutdown must still stop everything. And a server that fails to start stops the ones that run
started, naming the failed one.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from service_runtime import processes
from tests.support.stack import REPO, STACK, free_port


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGNS_") or k.endswith("_DIR")}
    env.pop("CAMPAIGNS_LOCAL_DIR", None)
    return {**env, **extra}


def wait_for(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    if not processes.wait_until(condition, pid=None, timeout=timeout, interval=0.1):
        raise AssertionError(f"not within {timeout}s: {what}")


def test_ctrl_c_of_a_piped_foreground_launcher_stops_every_child(tmp_path: Path) -> None:
    local = tmp_path / "local"
    log = tmp_path / "up.log"
    launcher_pid_file = tmp_path / "launcher.pid"
    (tmp_path / "www").mkdir()
    env = clean_env(
        CAMPAIGNS_LOCAL_DIR=str(local),
        CAMPAIGNS_SMTP_PORT=str(free_port()),
        CAMPAIGNS_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        LAUNCHER_READY_PORT=str(free_port()),
        LAUNCHER_SERVE_DIR=str(tmp_path / "www"),
        LAUNCHER_PID_FILE=str(launcher_pid_file),
    )
    pipeline = f'"{sys.executable}" -m tests.support.foreground_launcher 2>&1 | tee "{log}" >/dev/null'
    shell = subprocess.Popen(["sh", "-c", pipeline], cwd=REPO, env=env, start_new_session=True)
    try:
        wait_for(lambda: log.exists() and "[run] ready" in log.read_text(), 60, "the launcher is ready")
        launcher = int(launcher_pid_file.read_text())
        children = {p.stem: int(p.read_text()) for p in (local / "run").rglob("*.pid")}
        assert set(children) == {"redis", "smtp", "ready", "chatty", "sleeper"}, children
        assert all(processes.pid_alive(pid) for pid in children.values())

        os.killpg(shell.pid, signal.SIGINT)  # what the terminal does on Ctrl-C

        wait_for(lambda: not processes.pid_alive(launcher), 60, "the launcher has finished")
        survivors = {name: pid for name, pid in children.items() if processes.pid_alive(pid)}
        assert survivors == {}
        assert not list((local / "run").rglob("*.pid"))
    finally:
        for pid_file in (local / "run").rglob("*.pid"):
            processes.terminate(int(pid_file.read_text()), timeout=5)
        processes.terminate(shell.pid, timeout=5)


def test_a_server_that_fails_to_start_stops_the_ones_this_run_started(tmp_path: Path) -> None:
    local = tmp_path / "local"
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        smtp_port = squatter.getsockname()[1]
        env = clean_env(
            CAMPAIGNS_LOCAL_DIR=str(local),
            CAMPAIGNS_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
            CAMPAIGNS_SMTP_PORT=str(smtp_port),
        )
        result = subprocess.run(
            [sys.executable, str(STACK), "up", "redis", "smtp"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
    assert result.returncode == 1
    out = result.stdout
    assert f"port 127.0.0.1:{smtp_port} for smtp is taken" in out
    assert "redis  stopping (started by this run, before smtp failed)" in out
    assert "Traceback" not in out + result.stderr
    redis_log = (local / "logs" / "redis.log").read_text()
    assert "starting" in redis_log  # it did run
    assert not (local / "run" / "redis.pid").exists()
