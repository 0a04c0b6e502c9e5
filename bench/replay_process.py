"""The replay in a process of its own, so its peak resident memory is its own (the scale figures).

`python -m bench.replay_process PROJECTION SOURCE` runs `campaigns replay rebuild PROJECTION
--source SOURCE --grace-seconds 0` through the replay tool's composition root, with the settings
of its environment (CAMPAIGNS_*), and prints the report as one JSON line, with its own peak RSS
(VmHWM of /proc/self/status, read once the replay is done): exact, not sampled.

Not `wait4`'s ru_maxrss: Linux carries a process's high-water mark across exec, and the child
is spawned from the bench (vfork: the bench's own pages are the child's until exec), so ru_maxrss
was the bench's RSS whenever that was larger (216 MiB at both 10,000 and 100,000 campaigns in a
whole run, the bench's own size then). VmHWM belongs to the memory the child's exec created.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import orjson

from projectors.replay.adapters.partitioned_pass import peak_rss_mib
from projectors.replay.application.ports import NoProgress
from projectors.replay.bootstrap import replay
from projectors.replay.domain.plan import SourceName
from service_runtime.settings import Settings, get_settings


@dataclass(frozen=True)
class ReplayRun:
    events: int
    seconds: float  # as the tool reports it: from the lock taken to the final pass done
    passes: int
    invalid: int
    peak_rss_mib: float  # the processes', summed, start-up and imports included
    wall_seconds: float  # the process's, from spawn to exit
    process_peaks_mib: list[float]  # each process's: this one, then the full pass's others

    @property
    def per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def run(settings: Settings, projection: str = "campaigns", source: str = "kafka") -> ReplayRun:
    """Spawn the replay on these settings; wait for it; its report and peak RSS."""
    # Imported here, not in the child: its peak RSS is the replay's, not the test support's.
    from tests.support.services import settings_env
    from tests.support.stack import REPO

    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.replay_process", projection, source],
            cwd=REPO,
            env=settings_env(settings),
            stdout=out,
            stderr=err,
        )
        process.wait()
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        printed, complaint = out.read(), err.read()
    if process.returncode != 0:
        raise RuntimeError(
            f"replay exited with {process.returncode}: {complaint.decode(errors='replace')[-2000:]}"
        )
    report: dict[str, Any] = orjson.loads(printed.splitlines()[-1])
    return ReplayRun(
        events=int(report["events"]),
        seconds=float(report["seconds"]),
        passes=int(report["passes"]),
        invalid=int(report["invalid"]),
        peak_rss_mib=float(report["peak_rss_mib"]),
        wall_seconds=wall,
        process_peaks_mib=[float(p) for p in report.get("process_peaks_mib", [report["peak_rss_mib"]])],
    )


async def _main(projection: str, source: str) -> dict[str, Any]:
    async with replay(get_settings()) as tools:
        report = await tools.rebuild(projection, SourceName(source), NoProgress(), 0)
        helpers = tools.last_full_pass.helpers if tools.last_full_pass else []
    own = peak_rss_mib()
    return {
        "events": report.events,
        "seconds": report.seconds,
        "passes": report.passes,
        "invalid": report.invalid,
        # The full pass's other processes (CAMPAIGNS_REPLAY_PROCESSES) ran beside this one: the
        # replay's memory is the sum of their peaks (an upper bound: they need not peak at once).
        "peak_rss_mib": own + sum(h.peak_rss_mib for h in helpers),
        "process_peaks_mib": [round(own, 2), *(h.peak_rss_mib for h in helpers)],
    }


if __name__ == "__main__":
    sys.stdout.buffer.write(orjson.dumps(asyncio.run(_main(sys.argv[1], sys.argv[2]))) + b"\n")
