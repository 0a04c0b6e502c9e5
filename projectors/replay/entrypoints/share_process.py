"""One process of a split replay pass: `python -m projectors.replay.entrypoints.share_process`.

Started by `adapters/partitioned_pass.py`, never by hand, possibly ahead of its pass. It reads a
`ShareOrder` (pickled) on stdin: its partitions with the offsets to read between, the generations
to write and the settings (an empty stdin: no pass needed it, and it exits). It reads those
records, applies them as the replay's own writer does (folding campaigns in a window of its
own), flushes, and writes JSON lines on stdout: `{"progress": n}` after each batch, then
`{"done": {...}}` with its events, tallies and where it stopped. Any failure ends it with a
non-zero exit and the reason on stderr.
"""

from __future__ import annotations

import asyncio
import pickle
import sys
import time

import orjson

from projectors.replay.adapters.partitioned_pass import ShareDone, ShareOrder, peak_rss_mib
from projectors.replay.bootstrap import replay


def _say(message: dict[str, object]) -> None:
    sys.stdout.buffer.write(orjson.dumps(message) + b"\n")
    sys.stdout.buffer.flush()


async def run(order: ShareOrder) -> ShareDone:
    started = time.perf_counter()
    async with replay(order.settings) as tools:
        source = tools.kafka_source(
            order.targets, start={tp: first for tp, (first, _) in order.share.items()}
        )
        open_writer = tools.writers(order.batch_size, order.fold_campaigns)
        events = 0
        async with source, open_writer(order.targets) as writer:
            async for batch in source.share_pass(order.share).batches():
                await writer.write(batch)
                events += len(batch)
                _say({"progress": len(batch)})
            await writer.flush()
            return ShareDone(
                events=events,
                invalid=source.invalid,
                tallies=dict(writer.tallies),
                positions=source.positions(),
                seconds=round(time.perf_counter() - started, 3),
                peak_rss_mib=round(peak_rss_mib(), 2),
            )


def main() -> None:
    # stdin is the pipe of the replay process that started this one (multiprocessing's own way
    # of handing a child its work), never a file or a socket.
    given = sys.stdin.buffer.read()
    if not given:
        return  # started ahead of a pass that was not split after all (`PartitionedPass.close`)
    order = pickle.loads(given)  # noqa: S301
    if not isinstance(order, ShareOrder):
        raise SystemExit("share_process: stdin held no ShareOrder")
    done = asyncio.run(run(order))
    _say({"done": done.as_json()})


if __name__ == "__main__":
    main()
