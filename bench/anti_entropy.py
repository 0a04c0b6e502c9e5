"""Figure 9: what the anti-entropy pass costs, as a share of one core, at its default pace.

`count` campaigns (and a user for every ten) are written as the command side leaves them (state
documents in MongoDB, shaped and sized as the command side writes them, since the server reads
a whole document to return its version: measured apart, 17-19 µs of SecantusDB's CPU for a
campaign of ~720 B against 12-13 for a bare `{_id, version}`) and as the projectors leave them
(each read-model state at the same version), so the pass finds no drift and measures its steady
cost: it walks every aggregate, page by page, at `anti_entropy_keys_per_second`, resting between
sweeps. The projectors' pass (`Projectors._anti_entropy`, the code the process runs) runs alone
in this process for `seconds` (no live consumer applies events: its full pace, not the busy
one); its CPU is this process's CPU time over the window, MongoDB's and Redis's are read from
/proc. The goal: at most `GOAL_SHARE` of a core for the pass itself.

Alone: `python -m bench.anti_entropy` (BENCH_AE_CAMPAIGNS, BENCH_AE_SECONDS).
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from bench.memory import CpuWindow, server_pids
from bench.report import Figure
from command_api.adapters.mongo_documents import campaign_document, user_document
from command_api.adapters.mongo_schema import ensure_indexes
from command_api.domain.campaign import Campaign, CampaignDetails
from command_api.domain.user import User
from events.state_versions import STATE_COLLECTIONS
from projectors.adapters.metrics import ANTI_ENTROPY_CHECKED, ANTI_ENTROPY_REPAIRS, ANTI_ENTROPY_SWEEPS
from projectors.entrypoints.projectors import Projectors
from readmodels.generations import claim_live_generation, mark_whole
from readmodels.groups import PROJECTIONS
from readmodels.versions import aggregate_state
from service_runtime.settings import Settings
from tests.support.factories import campaign_fields
from tests.support.stack import delete_keys, drop_database

GOAL_SHARE = 0.10
SEED_BATCH = 1000


def _port(url: str) -> int:
    return int(url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])


@functools.cache
def _shapes() -> dict[str, dict[str, Any]]:
    """A campaign's and a user's state document as the command side writes them."""
    now = datetime(2026, 12, 1, tzinfo=UTC)
    details = CampaignDetails.parse(**campaign_fields(tags=["sale", "vip"]))
    campaign = Campaign.create(campaign_id="template", owner_id="owner", details=details, now=now)
    # Not a password: a stand-in the length of an argon2id hash, as a user's document holds one.
    stand_in = "$argon2id$v=19$m=65536,t=3,p=4$" + "s" * 22 + "$" + "h" * 43
    user = User.register(
        user_id="template", email="template@bench.example", name="Bench User", password_hash=stand_in, now=now
    )
    return {"campaign": campaign_document(campaign), "user": user_document(user)}


def state_document(kind: str, aggregate_id: str, version: int = 3) -> dict[str, Any]:
    """A state document of `kind` at `version`, its own id (and e-mail address) in it."""
    document = {**_shapes()[kind], "_id": aggregate_id, "version": version}
    if kind == "user":
        document["email"] = f"{aggregate_id}@bench.example"
    return document


async def seed(settings: Settings, redis: Redis, campaigns: int) -> dict[str, int]:
    """State documents in MongoDB and the read models' states at the same version."""
    prefix = settings.redis_prefix
    generations = {name: await claim_live_generation(redis, prefix, name) for name in PROJECTIONS}
    await mark_whole(redis, prefix, only_if_absent=True)
    counts = {"campaign": campaigns, "user": max(1, campaigns // 10)}
    holders = {"campaign": ("campaigns", "stats"), "user": ("users", "stats")}
    buckets = settings.read_model_buckets
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url)
    try:
        db = client[settings.mongo_db]
        await ensure_indexes(db)  # as the command side leaves them, the walk's index with them
        for kind, count in counts.items():
            for start in range(0, count, SEED_BATCH):
                # Ids as the command side makes them (UUIDs: the walk slices their hex prefixes).
                ids = [
                    str(uuid.uuid5(uuid.NAMESPACE_OID, f"{kind}-{n}"))
                    for n in range(start, min(count, start + SEED_BATCH))
                ]
                await db[STATE_COLLECTIONS[kind]].insert_many([state_document(kind, i) for i in ids])
                pipe = redis.pipeline(transaction=False)
                for aggregate_id in ids:
                    for projection in holders[kind]:
                        state = aggregate_state(
                            prefix, generations[projection], projection, kind, aggregate_id, buckets
                        )
                        pipe.hset(state.key, state.version_field, "3")  # type: ignore[arg-type]
                await pipe.execute()
    finally:
        await client.close()
    return counts


async def measure(settings: Settings, campaigns: int = 20_000, seconds: float = 20.0) -> Figure:
    """The figure, on a database and key prefix of its own beside `settings`' (deleted after)."""
    own = settings.model_copy(
        update={"mongo_db": f"{settings.mongo_db}_ae", "redis_prefix": f"{settings.redis_prefix}-ae"}
    )
    try:
        return await _measure(own, campaigns, seconds)
    finally:
        await drop_own(own)


async def drop_own(settings: Settings) -> None:
    """Drop a figure's own database and delete its own keys (those under its Redis prefix): the
    database first, wholly, before the next figure measures beside it."""
    await drop_database(settings)
    await delete_keys(settings)


async def _measure(settings: Settings, campaigns: int, seconds: float) -> Figure:
    redis = Redis.from_url(settings.redis_url)
    counts = await seed(settings, redis, campaigns)
    servers = server_pids(_port(settings.mongo_url), _port(settings.redis_url), "kafka.properties")
    projectors = Projectors(settings, redis)  # the broker is built, never started
    checked_before = ANTI_ENTROPY_CHECKED._value.get()
    sweeps_before = ANTI_ENTROPY_SWEEPS._value.get()
    repairs_before = sum(ANTI_ENTROPY_REPAIRS.labels(p)._value.get() for p in PROJECTIONS)
    window = CpuWindow({"mongodb": servers["mongodb"], "redis": servers["redis"]})
    cpu_started, wall_started = time.process_time(), time.monotonic()
    # Through the projectors' own loops: a cancellation a client library swallows would
    # otherwise leave the pass running and this wait hanging (service_runtime/background.py).
    projectors._loops.start(projectors._anti_entropy(), "bench-anti-entropy")
    try:
        await asyncio.sleep(seconds)
    finally:
        stuck = await projectors._loops.stop()
    if stuck:
        print(f"anti-entropy: the pass had not ended {projectors._loops.stop_seconds:.0f} s after its stop")
    wall = time.monotonic() - wall_started
    share = (time.process_time() - cpu_started) / wall
    shares = window.shares()
    checked = ANTI_ENTROPY_CHECKED._value.get() - checked_before
    sweeps = ANTI_ENTROPY_SWEEPS._value.get() - sweeps_before
    repairs = sum(ANTI_ENTROPY_REPAIRS.labels(p)._value.get() for p in PROJECTIONS) - repairs_before
    await projectors.mongo.close()
    await redis.aclose()
    keys_per_second = checked / wall
    return Figure(
        key="anti_entropy",
        title=(
            f"Anti-entropy pass over {counts['campaign']:,} campaigns and {counts['user']:,} users "
            f"(default pace: {settings.anti_entropy_keys_per_second:,.0f} keys/s, "
            f"pages of {settings.anti_entropy_batch_size})"
        ),
        measured=f"{share:.3f} core ({keys_per_second:,.0f} keys/s, {sweeps:.0f} sweeps in {wall:.0f} s)",
        limit=f"{GOAL_SHARE:.2f} core; MongoDB {shares['mongodb']:.2f}, Redis {shares['redis']:.2f} core",
        ratio=round(share / GOAL_SHARE, 3),
        goal=f"≤ {GOAL_SHARE:.2f} core",
        met=share <= GOAL_SHARE and repairs == 0,
        how=(
            "state documents in MongoDB (shaped as the command side writes them) and read-model "
            "states at the same version (no drift); the "
            "projectors' own pass loop runs alone in the bench process; its CPU = process CPU time "
            "/ wall time; the servers' from /proc (shared servers: other load counts too)"
        ),
        data={
            "cpu_share": round(share, 4),
            "keys_checked": int(checked),
            "keys_per_second": round(keys_per_second),
            "sweeps": int(sweeps),
            "repairs": int(repairs),
            "servers": shares,
            "seconds": round(wall, 1),
        },
    )


async def _main() -> None:
    from rich.console import Console

    from tests.support.stack import ensure_stack_up, isolated_settings

    ensure_stack_up()
    figure = await measure(
        isolated_settings(),
        campaigns=int(os.environ.get("BENCH_AE_CAMPAIGNS", 20_000)),
        seconds=float(os.environ.get("BENCH_AE_SECONDS", 20)),
    )
    Console().print(figure)


if __name__ == "__main__":
    asyncio.run(_main())
