"""Process control shared by the stack and the supervisor, on real short-lived children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from service_runtime import processes


def sleeper(tmp_path: Path, *, ignore_term: bool = False) -> subprocess.Popen[bytes]:
    script = "trap '' TERM; sleep 30" if ignore_term else "sleep 30"
    return processes.spawn(["sh", "-c", script], cwd=tmp_path, log=tmp_path / "child.log")


def test_a_spawned_child_leads_its_own_session_and_logs_to_its_file(tmp_path: Path) -> None:
    child = processes.spawn([sys.executable, "-c", "print('hello')"], cwd=tmp_path, log=tmp_path / "x.log")
    assert os.getsid(child.pid) == child.pid
    child.wait(timeout=10)
    assert "hello" in (tmp_path / "x.log").read_text()


def test_terminate_stops_the_whole_group_and_reaps_it(tmp_path: Path) -> None:
    child = sleeper(tmp_path)
    assert processes.pid_alive(child.pid)
    assert processes.terminate(child.pid, timeout=5) is True
    assert not processes.pid_alive(child.pid)
    assert child.poll() is not None  # reaped: no zombie left behind
    assert processes.terminate(child.pid) is False  # nothing left to stop


def test_terminate_kills_a_child_that_ignores_sigterm_after_the_timeout(tmp_path: Path) -> None:
    child = sleeper(tmp_path, ignore_term=True)
    time.sleep(0.2)  # let the shell install its trap
    started = time.monotonic()
    processes.terminate(child.pid, timeout=0.5)
    assert not processes.pid_alive(child.pid)
    assert time.monotonic() - started >= 0.5  # SIGTERM was ignored; SIGKILL ended it


def test_terminate_all_stops_every_child_at_once(tmp_path: Path) -> None:
    children = [sleeper(tmp_path, ignore_term=True) for _ in range(3)]
    time.sleep(0.2)
    processes.terminate_all([c.pid for c in children], timeout=0.5)
    assert not any(processes.pid_alive(c.pid) for c in children)


def test_pid_files_name_only_running_processes(tmp_path: Path) -> None:
    child = sleeper(tmp_path)
    path = tmp_path / "run" / "x.pid"
    processes.write_pid(path, child.pid)
    assert processes.read_pid(path) == child.pid
    processes.terminate(child.pid, timeout=5)
    assert processes.read_pid(path) is None
    path.write_text("not a pid")
    assert processes.read_pid(path) is None
    assert processes.read_pid(tmp_path / "missing.pid") is None


def test_wait_until_gives_up_when_the_process_dies_or_time_runs_out() -> None:
    now = [0.0]
    assert not processes.wait_until(
        lambda: False,
        pid=None,
        timeout=5,
        clock=lambda: now[0],
        sleep=lambda s: now.__setitem__(0, now[0] + s),
    )
    assert now[0] >= 5
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert not processes.wait_until(lambda: True, pid=dead.pid, timeout=5)
    assert processes.wait_until(lambda: True, pid=None, timeout=0)


def test_port_open_tells_a_listening_port_from_a_closed_one() -> None:
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert processes.port_open("127.0.0.1", port)
    assert not processes.port_open("127.0.0.1", port)


def test_say_survives_a_closed_output_pipe() -> None:
    # A child whose stdout and stderr are one pipe the reader has closed: `say` must not raise,
    # and the interpreter must not fail flushing at exit.
    code = (
        "import time; from service_runtime.processes import say\n"
        "time.sleep(0.3)\n"
        "for i in range(3): say(f'line {i}')\n"
        "print('after', flush=True)\n"
        "import sys; sys.exit(7)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[3],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert child.stdout is not None
    child.stdout.close()
    # `print` after the pipe broke and was silenced goes to /dev/null: the exit code is ours.
    assert child.wait(timeout=20) == 7


def test_the_shutdown_shield_ignores_ctrl_c_and_sigpipe_then_restores_them() -> None:
    before = signal.getsignal(signal.SIGINT)
    with processes.shutdown_shield():
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGINT)  # would raise KeyboardInterrupt unshielded
        time.sleep(0.05)
    assert signal.getsignal(signal.SIGINT) == before


def test_waiting_for_a_child_through_ctrl_c_reraises_only_after_it_ended(tmp_path: Path) -> None:
    child = subprocess.Popen(["sleep", "0.5"])
    calls = {"n": 0}
    real_wait = child.wait

    def interrupted_once(timeout: float | None = None) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
        return real_wait(timeout)

    child.wait = interrupted_once  # type: ignore[method-assign]
    try:
        processes.wait_through_interrupts(child)  # type: ignore[arg-type]
    except KeyboardInterrupt:
        assert child.returncode == 0
    else:
        raise AssertionError("the interrupt was swallowed")
