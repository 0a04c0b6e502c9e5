"""Figure 7: the scheduler's accuracy under a burst, and its CPU.

`count` campaigns are scheduled to start within the same `window` seconds (due times spread
evenly), written straight into the write model as the schedule command leaves them (state
document at version 2 and its durable timer; the events before are not needed to fire), once
one `campaigns serve scheduler` process has started and reported; it fires them through the
command path. Each
activation event records how late its firing decided (`payload.timer.lateness_ms`) and when its
transaction was prepared (`recorded_at`); the figure is the p99 of that lateness against the goal
of 1 s, with the scheduler's and MongoDB's CPU over the burst. Beside it, in the same run, the
raw write limit of this MongoDB server for what the firings write (`raw_firings`: the firing
transaction's writes, grouped as the scheduler sends them, each campaign's next timer in its
update as the unit of work writes it, in a loop with no scheduler); the ratio is the scheduler's
firings per second over that limit, and the goal needs `count / window` firings a second. The
scheduler reads its timers under its lease (no per-timer claim), so the limit leaves out only its
reads (one a batch: the due timers' campaigns, taken by the firing without a read of its own).

All of it runs on a database and key prefix of its own (dropped after): the seeded campaigns have
no creation events, and left in the bench's database they were walked by the later figures'
anti-entropy as read models behind the write side, repaired again and again from a log without
their first events (the projectors' CPU grew through the rest of a whole run).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import AsyncMongoClient

from bench.anti_entropy import drop_own
from bench.memory import CpuWindow
from bench.raw_limits import raw_firings
from bench.report import Figure
from command_api.adapters.mongo_documents import campaign_document
from command_api.adapters.mongo_schema import CAMPAIGNS, EVENTS, ensure_indexes
from command_api.adapters.scheduler_status import scheduler_status_key
from service_runtime.redis_client import connect_redis
from service_runtime.settings import Settings
from tests.support.factories import scheduled_campaign
from tests.support.services import RunningServices

GOAL_MS = 1000
# Between the end of the seeding and the first due time (plus the seeding's own estimate).
LEAD_SECONDS = 3.0
INSERT_BATCH = 1000
# A seeded campaign's version once activated (scheduled at 2).
ACTIVATED_VERSION = 3
# Campaigns the raw firing loop writes (enough for a steady rate, few enough to stay short).
RAW_FIRINGS = 2000


def _campaign_id(n: int) -> str:
    return f"burst-{n}"


def _percentile(values: list[int], share: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


async def _insert(db: Any, ids: list[str], first_due: datetime, step: timedelta, now: datetime) -> None:
    """One batch of scheduled campaigns (state document and timer), as the schedule command leaves
    them, the n-th due at `first_due + n * step`."""
    states = []
    for n, campaign_id in enumerate(ids):
        starts_at = first_due + step * n
        campaign, timer = scheduled_campaign(
            campaign_id,
            "bench",
            name=f"Burst {campaign_id}",
            starts_at=starts_at,
            ends_at=starts_at + timedelta(days=1),
            now=now,
        )
        states.append(campaign_document(campaign, timer))
    await db[CAMPAIGNS].insert_many(states, ordered=False)


async def seed(settings: Settings, count: int, window: float) -> tuple[datetime, float]:
    """Seed `count` campaigns due within `window` seconds of the first due time, which is placed
    after the seeding's end: a first batch due in a day (never fired in the run) times this
    server's seeding rate, and the lead is that estimate for the whole count, half again, plus
    `LEAD_SECONDS`. A fixed estimate (1,500 campaigns a second) was too short on a slower host and
    failed the whole run."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url, tz_aware=True)
    db = client[settings.mongo_db]
    await ensure_indexes(db)
    started = time.monotonic()
    now = datetime.now(UTC)
    try:
        probe_ids = [f"burst-probe-{n}" for n in range(INSERT_BATCH)]
        await _insert(db, probe_ids, now + timedelta(days=1), timedelta(seconds=1), now)
        per_campaign = (time.monotonic() - started) / INSERT_BATCH
        first_due = datetime.now(UTC) + timedelta(seconds=LEAD_SECONDS + 1.5 * per_campaign * count)
        step = timedelta(seconds=window / max(1, count))
        for offset in range(0, count, INSERT_BATCH):
            ids = [_campaign_id(n) for n in range(offset, min(count, offset + INSERT_BATCH))]
            await _insert(db, ids, first_due + step * offset, step, now)
    finally:
        await client.close()
    return first_due, time.monotonic() - started


async def _reported(settings: Settings, limit_seconds: float = 120) -> None:
    """Wait until the scheduler process runs (its first status report), so its start-up is not
    counted as lateness."""
    redis = connect_redis(settings)
    deadline = time.monotonic() + limit_seconds
    try:
        while not await redis.hlen(scheduler_status_key(settings.redis_prefix)):
            if time.monotonic() > deadline:
                raise RuntimeError("the scheduler did not report within its start-up limit")
            await asyncio.sleep(0.2)
    finally:
        await redis.aclose()


async def measure(
    settings: Settings,
    services: RunningServices,
    processes: Callable[[], dict[str, list[int]]],
    *,
    count: int,
    window: float,
) -> Figure:
    own = settings.model_copy(
        update={"mongo_db": f"{settings.mongo_db}_sched", "redis_prefix": f"{settings.redis_prefix}-sched"}
    )
    try:
        return await _measure(own, services, processes, count=count, window=window)
    finally:
        await drop_own(own)


async def _measure(
    settings: Settings,
    services: RunningServices,
    processes: Callable[[], dict[str, list[int]]],
    *,
    count: int,
    window: float,
) -> Figure:
    fire_batch = services.settings.scheduler_fire_batch
    services.start_instance(
        "scheduler", "scheduler", mongo_db=settings.mongo_db, redis_prefix=settings.redis_prefix
    )
    await _reported(settings)
    first_due, seeded_in = await seed(settings, count, window)
    if datetime.now(UTC) > first_due - timedelta(seconds=1):
        raise RuntimeError("seeding took longer than its lead; lower BENCH_SCHEDULER_CAMPAIGNS")
    await asyncio.sleep(max(0.0, (first_due - datetime.now(UTC)).total_seconds()))
    groups = {name: pids for name, pids in processes().items() if name in ("scheduler", "mongodb")}
    window_cpu = CpuWindow(groups)
    started = time.monotonic()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url, tz_aware=True)
    events = client[settings.mongo_db][EVENTS]
    deadline = started + window + max(120.0, count / 20)
    try:
        fired = 0
        while fired < count and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            # The last campaign due fires last (earliest first): until its activation is there, a
            # point read of it (the events' unique index) is the whole poll; counting the events
            # each time cost the server ~30 us an event, a share of the burst's own time.
            if await events.find_one(
                {"aggregate_id": _campaign_id(count - 1), "aggregate_version": ACTIVATED_VERSION}, {"_id": 1}
            ):
                fired = await events.count_documents({"event_type": "CampaignActivated"})
        burst_seconds = time.monotonic() - started
        shares = window_cpu.shares()
        activations = await events.find(
            {"event_type": "CampaignActivated"}, {"payload.timer": 1, "recorded_at": 1}
        ).to_list()
    finally:
        await client.close()
    services.stop("scheduler")
    raw = await raw_firings(settings, min(count, RAW_FIRINGS), fire_batch)
    lateness = [int(e["payload"]["timer"]["lateness_ms"]) for e in activations]
    committed = [
        max(
            0,
            int(
                (e["recorded_at"] - datetime.fromisoformat(e["payload"]["timer"]["due_at"])).total_seconds()
                * 1000
            ),
        )
        for e in activations
    ]
    if not lateness:
        raise RuntimeError("the scheduler fired nothing")
    p99 = _percentile(lateness, 0.99)
    within = sum(1 for value in lateness if value <= GOAL_MS) / count
    scheduler_cpu = shares.get("scheduler", 0.0)
    fired_per_second = len(lateness) / burst_seconds
    needed_per_second = count / window
    return Figure(
        key="scheduler",
        title=f"Scheduler: {count:,} campaigns due within the same {window:.0f} s",
        measured=(
            f"p99 lateness {p99:,} ms ({len(lateness):,} fired, {fired_per_second:,.0f}/s; "
            f"{within:.0%} within 1 s); scheduler CPU {scheduler_cpu:.2f} core, "
            f"MongoDB {shares.get('mongodb', 0.0):.2f}"
        ),
        limit=f"raw firing writes {raw.per_second:,.0f}/s (needs {needed_per_second:,.0f}/s)",
        ratio=round(fired_per_second / raw.per_second, 3) if raw.per_second else None,
        goal=f"p99 ≤ {GOAL_MS} ms for {count:,} due in {window:.0f} s",
        met=p99 <= GOAL_MS and len(lateness) == count,
        how=(
            "scheduled campaigns and their timers written straight into MongoDB, due evenly over the "
            "window; one `campaigns serve scheduler` process fires them through the command path "
            "(its unit of work, version check and events); lateness = firing decision - due time, "
            "from each CampaignActivated's payload.timer; CPU as a share of one core over the burst; "
            f"limit: the firing transaction's writes for {raw.count:,} other campaigns, {fire_batch} a "
            "transaction grouped as the scheduler sends them (guarded updates of the campaigns that "
            "also set each one's next timer, 50 ids each, and one insert of the events, then commit), "
            "one at a time, no claim, no read, no scheduler; ratio = fired per second / that limit"
        ),
        data={
            "campaigns": count,
            "window_seconds": window,
            "fired": len(lateness),
            "seeded_in_seconds": round(seeded_in, 1),
            "burst_seconds": round(burst_seconds, 1),
            "fired_per_second": round(fired_per_second, 1),
            "needed_per_second": round(needed_per_second, 1),
            "raw_firings_per_second": round(raw.per_second, 1),
            "raw_firings": raw.count,
            "fire_batch": fire_batch,
            "lateness_ms": {
                "p50": _percentile(lateness, 0.5),
                "p99": p99,
                "max": max(lateness),
            },
            "commit_lateness_ms": {"p50": _percentile(committed, 0.5), "p99": _percentile(committed, 0.99)},
            "within_1s_share": round(within, 4),
            "cpu_share_of_one_core": shares,
            "scheduler_cpu_ms_per_firing": round(
                scheduler_cpu * burst_seconds * 1000 / max(1, len(lateness)), 2
            ),
        },
    )
