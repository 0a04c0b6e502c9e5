"""Process control shared by the local stack and the service supervisor.

Every long-running child (a server of the stack, a service) is started in a session of its own,
so a Ctrl-C in the terminal reaches only the launcher, which then stops each child on purpose:
SIGTERM to the child's process group, SIGKILL to what is left after a timeout. Pid files record
detached children so another command can find and stop them.

Stopping must finish even when the terminal has gone: `shutdown_shield()` ignores SIGINT, SIGHUP,
SIGTERM and SIGPIPE while it runs, and `say()` never raises when stdout or stderr is a closed pipe
(`make up 2>&1 | tee up.log`, then Ctrl-C, kills `tee` before the launcher has stopped anything).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

_SHIELDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE)


# ---------------------------------------------------------------------- output


def say(message: str, stream: IO[str] | None = None) -> None:
    """Print one line; if the stream is a closed pipe, try stderr, then drop the line.

    A stream found broken is pointed at /dev/null, so the interpreter's own flush at exit
    does not fail on it again.
    """
    for target in (stream or sys.stdout, sys.stderr):
        try:
            target.write(message + "\n")
            target.flush()
            return
        except (BrokenPipeError, ValueError, OSError):
            silence(target)


def silence(stream: IO[str]) -> None:
    """Point a broken stream's file descriptor at /dev/null (its buffer is dropped)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


@contextlib.contextmanager
def shutdown_shield() -> Iterator[None]:
    """Ignore SIGINT, SIGTERM, SIGHUP and SIGPIPE while the body stops things.

    A second Ctrl-C, the terminal closing or the output pipe breaking cannot abort a shutdown
    halfway (each stop is bounded by its own SIGKILL timeout). Children started inside the body
    inherit the ignored signals, so a `stack.py down` run from here finishes too.
    """
    previous: dict[signal.Signals, object] = {}
    for sig in _SHIELDED:
        try:
            previous[sig] = signal.signal(sig, signal.SIG_IGN)
        except ValueError:  # not the main thread: nothing to shield
            pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def wait_through_interrupts(process: subprocess.Popen[bytes]) -> int:
    """Wait for a child that got the same Ctrl-C (it shares our process group and cleans up
    after itself); re-raise KeyboardInterrupt only once it has finished."""
    interrupted = False
    while True:
        try:
            code = process.wait()
            break
        except KeyboardInterrupt:
            interrupted = True
    if interrupted:
        raise KeyboardInterrupt
    return code


# ---------------------------------------------------------------------- probes


def pid_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped) is not alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tree_pids(root: int) -> list[int]:
    """`root` and all its descendants (an API's uvicorn workers), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, []))
    return found


def resident_bytes(root: int) -> int:
    """Resident memory (VmRSS) of `root` and its descendants; 0 for a process that is gone."""
    total = 0
    for pid in tree_pids(root):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except (OSError, ValueError, IndexError):
            continue
    return total


# ---------------------------------------------------------------------- pid files


def read_pid(path: Path) -> int | None:
    """The pid recorded in `path` if that process still runs, else None."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def write_pid(path: Path, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(pid))


# ---------------------------------------------------------------------- start, wait, stop


def spawn(
    command: Sequence[str],
    *,
    cwd: Path,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
    pipe_output: bool = False,
) -> subprocess.Popen[bytes]:
    """Start `command` in a session of its own, its output appended to `log` (or piped back)."""
    environment = {**os.environ, **(env or {})}
    if pipe_output:
        return subprocess.Popen(
            list(command),
            cwd=cwd,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    if log is None:
        raise ValueError("spawn needs a log file or pipe_output=True")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {command[0]}\n".encode())
        return subprocess.Popen(
            list(command),
            cwd=cwd,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def wait_until(
    ready: Callable[[], bool],
    *,
    pid: int | None,
    timeout: float,
    interval: float = 0.3,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Poll `ready` until it holds (True), the process `pid` dies or `timeout` passes (False)."""
    deadline = clock() + timeout
    while True:
        if pid is not None and not pid_alive(pid):
            return False
        if ready():
            return True
        if clock() >= deadline:
            return False
        sleep(interval)


def terminate(pid: int, timeout: float = 30.0) -> bool:
    """SIGTERM the process group led by `pid`, SIGKILL it if still alive after `timeout`.

    Returns False if nothing ran. Reaps `pid` if it is our child, so it does not stay a zombie.
    """
    if not pid_alive(pid):
        _reap(pid)
        return False
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        _reap(pid)
        time.sleep(0.05)
    if pid_alive(pid):
        _signal_group(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and pid_alive(pid):
            _reap(pid)
            time.sleep(0.05)
    _reap(pid)
    return True


def terminate_all(pids: Sequence[int], timeout: float = 30.0) -> None:
    """SIGTERM every group at once, wait for all with one shared deadline, then SIGKILL the
    groups still alive: stopping N children costs the slowest one's time, not the sum."""
    for pid in pids:
        if pid_alive(pid):
            _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid in pids:
            _reap(pid)
        if not any(pid_alive(pid) for pid in pids):
            return
        time.sleep(0.05)
    for pid in pids:
        terminate(pid, timeout=0)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        # Not a group leader (or not ours to signal as a group): the process alone.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
