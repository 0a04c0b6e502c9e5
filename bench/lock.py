"""The machine's bench lock: one bench measures at a time (`/tmp/campaigns-bench.lock`, flock).

Shared by everyone's benches on this machine, so two of them never measure each other. Taken
while measuring; re-entrant within a process, and treated as held when a parent process holds it
(`flock /tmp/campaigns-bench.lock make bench`), which would otherwise wait forever.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = Path("/tmp/campaigns-bench.lock")  # noqa: S108 - the machine-wide bench lock
_HELD = "CAMPAIGNS_BENCH_LOCK_HELD"


def _ancestors() -> set[int]:
    found, pid = set(), os.getpid()
    while pid > 1:
        found.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return found


def _held_by_an_ancestor() -> bool:
    """True when a process this one runs under holds the lock (`flock /tmp/campaigns-bench.lock
    make bench`): waiting for it would wait forever."""
    try:
        inode = LOCK_FILE.stat().st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return False
    ancestors = _ancestors()
    for line in lines:
        fields = line.split()
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode):
            if int(fields[4]) in ancestors:
                return True
    return False


@contextlib.contextmanager
def bench_lock() -> Iterator[None]:
    """Hold the machine's bench lock (waits for another bench to finish); re-entrant per process,
    and already held when a parent process took it (`flock ... make bench`)."""
    if os.environ.get(_HELD) or _held_by_an_ancestor():
        yield
        return
    with LOCK_FILE.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        os.environ[_HELD] = "1"
        try:
            yield
        finally:
            os.environ.pop(_HELD, None)
            fcntl.flock(handle, fcntl.LOCK_UN)
