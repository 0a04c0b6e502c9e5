"""Redis commands an event of the stats projection: counts, not times.

`python -m bench.stats_commands [TREE ...]` (takes the bench lock: it starts a private
redis-server, no AOF, no snapshot, stopped at the end) runs the bench's campaign events
(BENCH_EVENTS, 20,000 by default) in batches of 500 through the stats projection's `apply` at 1
bucket (standalone's default) and at 32 (the cluster's), once per source tree given (default:
this one; each in a process of its own with that tree's code, as bench/stats_apply.py), and
prints per event: script calls, the other commands Redis ran (those inside the scripts), writes
(what a cluster's primaries append to their AOF and stream to their replicas), and each
command's count.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from bench.stats_apply import BATCH, _calls, _commands, wait_answering


async def _measure(port: int, count: int) -> dict[str, Any]:
    from redis.asyncio import Redis

    from bench.event_load import campaign_events
    from events import decode_event
    from projectors.adapters.redis_projection import stats_projection

    events = [decode_event(value) for _, value in campaign_events(count)]
    client = Redis(port=port)
    results: dict[str, Any] = {}
    try:
        for buckets in (1, 32):
            projection = stats_projection(f"statscmds{uuid.uuid4().hex[:8]}", buckets)
            await projection.script.load(client)
            before = _calls([port])
            for start in range(0, len(events), BATCH):
                await projection.apply(client, "stats.1", events[start : start + BATCH])
            results[str(buckets)] = _commands(before, _calls([port]), len(events))
    finally:
        await client.aclose()
    return results


def main() -> None:
    if sys.argv[1:2] == ["--pass"]:
        print(json.dumps(asyncio.run(_measure(int(sys.argv[2]), int(sys.argv[3])))), flush=True)
        return
    from bench.lock import bench_lock
    from tests.support.stack import free_port

    trees = [str(Path(t).resolve()) for t in sys.argv[1:]] or [str(Path(__file__).resolve().parents[1])]
    count = int(os.environ.get("BENCH_EVENTS", "20000"))
    with bench_lock(), tempfile.TemporaryDirectory() as directory:
        port = free_port()
        command = ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"]
        server = subprocess.Popen([*command, "--dir", directory], stdout=subprocess.DEVNULL)
        try:
            wait_answering(port)
            print(f"{count:,} events in batches of {BATCH}", flush=True)
            for tree in trees:
                done = subprocess.run(
                    [sys.executable, "-m", "bench.stats_commands", "--pass", str(port), str(count)],
                    cwd=tree,
                    env={**os.environ, "PYTHONPATH": tree},
                    capture_output=True,
                    text=True,
                    check=True,
                )
                for buckets, c in json.loads(done.stdout.strip().splitlines()[-1]).items():
                    print(
                        f"{tree}, {buckets} bucket(s): {c['script_calls']} script calls, {c['commands']} "
                        f"other commands, {c['writes']} writes an event {c['by_name']}",
                        flush=True,
                    )
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
