"""Where each service spends its CPU during a figure: py-spy on every service, summarised.

`BENCH_PROFILE=<dir>` makes the CPU-per-command run record each service with py-spy (the `bench`
extra: `pip install -e '.[bench]'`) for the run's duration: `--nonblocking` (the services are
never paused, so their CPU figures stand), idle threads left out (so samples are CPU time), uvicorn
workers included (`--subprocesses`). Each service's collapsed stacks land in `<dir>/<service>.txt`
(flamegraph.pl and speedscope read them); `python -m bench.profiles <dir>/<service>.txt` prints
the functions with the most samples, by their own time and with what they call.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

SAMPLES_PER_SECOND = 100
# Frames every sample of a process passes through (start-up, the event loop's run): left out of
# the inclusive list, where they would only push the informative entries off it.
ENTRY_FILES = frozenset(
    {
        "runners.py",
        "base_events.py",
        "process.py",
        "spawn.py",
        "core.py",
        "main.py",
        "__main__.py",
        "<frozen runpy>",
        "server.py",
        "_subprocess.py",
        "_compat.py",
        "multiprocess.py",
        "cli.py",
        "<string>",
        "asgi_server.py",
    }
)


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start(pids: dict[str, int], seconds: float, directory: Path) -> list[subprocess.Popen[bytes]]:
    """One py-spy per service (by its root pid), recording for `seconds`; empty without py-spy."""
    tool = py_spy()
    if tool is None:
        print("BENCH_PROFILE: py-spy is not installed (pip install -e '.[bench]'); not profiling")
        return []
    directory.mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [
                tool,
                "record",
                "--pid",
                str(pid),
                "--subprocesses",
                "--nonblocking",
                "--rate",
                str(SAMPLES_PER_SECOND),
                "--duration",
                str(max(1, int(seconds))),
                "--format",
                "raw",
                "--output",
                str(directory / f"{name}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    ]


def finish(recorders: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    for recorder in recorders:
        try:
            recorder.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            recorder.terminate()


def stop(recorders: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    """End recordings before their duration: py-spy writes what it has on SIGINT."""
    for recorder in recorders:
        recorder.send_signal(signal.SIGINT)
    finish(recorders, timeout)


def _function(frame: str) -> str:
    """`name (path/to/module.py:123)` -> `name (module.py)`: lines of one function merged."""
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rsplit("/", 1)[-1]
    return f"{name} ({file})" if file else name


def summarise(path: Path, top: int = 25) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(f) for f in stack.split(";") if f]
        # py-spy's first frames name the process and thread, not code
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for function in set(frames):
            if function.rsplit(" (", 1)[-1].rstrip(")") not in ENTRY_FILES:
                inclusive[function] += count
    if not total:
        return f"{path.name}: no samples"
    lines = [f"{path.name}: {total} samples ({total / SAMPLES_PER_SECOND:.1f} CPU s)", "  own time:"]
    lines += [f"    {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines.append("  with what they call:")
    lines += [f"    {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        print(summarise(Path(argument)))
