"""`campaigns replay rebuild` on real Kafka, MongoDB and Redis: restores, swaps, loses nothing."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest
from redis.asyncio import Redis

from events import EventEnvelope, Topics
from projectors.adapters.digest import generation_digest, generation_keys
from projectors.adapters.redis_projection import all_projections
from readmodels.generations import PROJECTIONS, live_generations
from readmodels.keyspace import CampaignKeys, UserKeys, generation_base, pointer_key, replay_lock_key
from readmodels.stored_documents import document_json
from service_runtime.settings import Settings
from tests.integration.read_side.conftest import running_projectors, wait_records
from tests.integration.read_side.workload import Aggregate, interleave, mixed_workload, new_campaign, new_user
from tests.integration.replay.conftest import EventWriter, RunReplay, delete_prefix, live_digests
from tests.support.waiting import eventually

OWNERS = ["owner-a", "owner-b", "owner-c"]


def workload() -> tuple[list[Aggregate], list[Aggregate]]:
    campaigns = mixed_workload(120, OWNERS)
    users = [new_user() for _ in range(30)]
    for user in users[:15]:
        user.then("UserLoggedIn")
    return campaigns, users


def counts(events: list[EventEnvelope]) -> tuple[int, int]:
    campaigns = sum(1 for e in events if e.aggregate_type == "campaign")
    return campaigns, len(events) - campaigns


async def projected(
    redis: Redis, settings: Settings, events: list[EventEnvelope], within: float = 30
) -> None:
    """Wait until the live projectors consumed `events` (each projection its own share)."""
    campaigns, users = counts(events)
    await wait_records(redis, settings, "campaigns", campaigns, within)
    await wait_records(redis, settings, "users", users, within)
    await wait_records(redis, settings, "stats", campaigns + users, within)


@pytest.mark.parametrize("source", ["mongo", "kafka"])
async def test_after_every_read_model_key_is_deleted_a_rebuild_restores_the_same_digests(
    settings: Settings, redis: Redis, writer: EventWriter, replay_cli: RunReplay, source: str
) -> None:
    campaigns, users = workload()
    events = interleave([*campaigns, *users])
    async with running_projectors(settings):
        await writer.write(events)
        await projected(redis, settings, events)
    before = await live_digests(redis, settings)

    assert await delete_prefix(redis, settings) > 0
    result = await replay_cli("rebuild", "all", "--source", source, "--grace-seconds", "0")

    assert result.exit_code == 0, result.output
    assert await live_generations(redis, settings.redis_prefix) == {p: f"{p}.2" for p in PROJECTIONS}
    assert await live_digests(redis, settings) == before
    assert (
        f"Rebuilt from {source}: {len(events) * 2:,} events" not in result.output
    )  # read once, not per projection
    assert f"Rebuilt from {source}: {len(events):,} events" in result.output


async def test_a_rebuild_swaps_in_a_new_generation_and_removes_the_old_one_after_the_grace(
    settings: Settings, redis: Redis, writer: EventWriter, replay_cli: RunReplay
) -> None:
    campaign = new_campaign("owner-a")
    campaign.then("CampaignActivated")
    await writer.write(campaign.events)
    for projection in all_projections(settings.redis_prefix, settings.read_model_buckets):
        await projection.apply(
            redis, f"{projection.name}.1", [e for e in campaign.events if projection.accepts(e)]
        )
    await redis.set(pointer_key(settings.redis_prefix, "campaigns"), "campaigns.1")

    result = await replay_cli("rebuild", "campaigns", "--grace-seconds", "0.5")

    assert result.exit_code == 0, result.output
    assert await live_generations(redis, settings.redis_prefix) == {
        "campaigns": "campaigns.2",
        "users": "users.1",
        "stats": "stats.1",
    }
    assert await generation_keys(redis, settings.redis_prefix, "campaigns.1") == []
    doc = await redis.hget(
        CampaignKeys(
            generation_base(settings.redis_prefix, "campaigns.2"), settings.read_model_buckets
        ).campaign(campaign.aggregate_id),
        "doc",
    )
    assert doc is not None and b'"status":"active"' in document_json(doc)
    assert await generation_keys(redis, settings.redis_prefix, "stats.1") != []  # other projections untouched


def split_passes(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's settings with every full pass from Kafka split, however small."""
    from projectors.replay.entrypoints import cli as replay_cli_module

    split = settings.model_copy(update={"replay_parallel_min_events": 0})
    monkeypatch.setattr(replay_cli_module, "get_settings", lambda: split)


@pytest.mark.parametrize("source", ["mongo", "kafka", "kafka-split"])
async def test_a_rebuild_while_writes_keep_coming_ends_with_every_write_reflected(
    settings: Settings,
    redis: Redis,
    writer: EventWriter,
    replay_cli: RunReplay,
    source: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    options = ["--source", source]
    if source == "kafka-split":
        split_passes(settings, monkeypatch)
        options = ["--source", "kafka", "--processes", "3"]
    campaigns, users = workload()
    aggregates = [*campaigns, *users]
    written: list[EventEnvelope] = interleave(aggregates)
    await writer.write(written)
    rng = random.Random(7)
    stop = asyncio.Event()

    async def keep_writing() -> None:
        """New campaigns and updates to existing ones, a few at a time, until told to stop."""
        numbers = itertools.count()
        while not stop.is_set():
            batch = []
            for _ in range(8):
                n = next(numbers)
                if n % 4 == 0:
                    fresh = new_campaign(rng.choice(OWNERS), name=f"Live {n}")
                    aggregates.append(fresh)
                    batch.append(fresh.events[-1])
                else:
                    target = rng.choice(campaigns)
                    if target.events[-1].event_type != "CampaignDeleted":
                        batch.append(target.then("CampaignUpdated", {"description": f"edit {n}"}))
            await writer.write(batch)
            written.extend(batch)
            await asyncio.sleep(0.02)

    async with running_projectors(settings):
        await projected(redis, settings, written)
        traffic = asyncio.create_task(keep_writing())
        before = len(written)
        await eventually(lambda: len(written) >= before + 40, what="writes before the rebuild")
        result = await replay_cli("rebuild", "all", *options, "--grace-seconds", "1")
        swapped = len(written)
        # Writes after the swap land in the new generation.
        await eventually(lambda: len(written) >= swapped + 40, what="writes after the swap")
        stop.set()
        await traffic
        await projected(redis, settings, written, within=60)

    assert result.exit_code == 0, result.output
    if source == "kafka-split":
        assert "3 processes" in result.output
    live = await live_generations(redis, settings.redis_prefix)
    assert live == {p: f"{p}.2" for p in PROJECTIONS}
    for projection in all_projections(settings.redis_prefix, settings.read_model_buckets):
        mine = [e for e in written if projection.accepts(e)]
        await projection.apply(redis, f"{projection.name}.clean", mine, announce=False)
        assert await generation_digest(redis, settings.redis_prefix, live[projection.name]) == (
            await generation_digest(redis, settings.redis_prefix, f"{projection.name}.clean")
        ), projection.name
    campaign_keys = CampaignKeys(
        generation_base(settings.redis_prefix, live["campaigns"]), settings.read_model_buckets
    )
    user_keys = UserKeys(generation_base(settings.redis_prefix, live["users"]), settings.read_model_buckets)
    for aggregate in aggregates:
        key = (
            campaign_keys.campaign(aggregate.aggregate_id)
            if aggregate.kind == "campaign"
            else user_keys.user(aggregate.aggregate_id)
        )
        assert await redis.hget(key, "v") == str(aggregate.version).encode(), aggregate.aggregate_id


async def test_a_kafka_rebuild_split_over_processes_restores_the_same_digests_and_counts_every_record(
    settings: Settings,
    redis: Redis,
    writer: EventWriter,
    replay_cli: RunReplay,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    campaigns, users = workload()
    events = interleave([*campaigns, *users])
    async with running_projectors(settings):
        await writer.write(events)
        await projected(redis, settings, events)
    before = await live_digests(redis, settings)
    await writer.kafka.publish_raw(Topics(settings.topic_prefix).campaigns, b"not json at all")
    assert await delete_prefix(redis, settings) > 0
    split_passes(settings, monkeypatch)

    result = await replay_cli(
        "rebuild", "all", "--source", "kafka", "--grace-seconds", "0", "--processes", "3"
    )

    assert result.exit_code == 0, result.output
    assert "3 processes" in result.output  # the full pass was split: two of its parts ran elsewhere
    assert await live_digests(redis, settings) == before
    assert f"Rebuilt from kafka: {len(events):,} events" in result.output  # every part's events
    assert "1 records in the source are not valid events and were skipped" in result.output


async def test_a_split_pass_starts_its_other_processes_before_it_reads_the_topics_offsets(
    settings: Settings,
    writer: EventWriter,
    replay_cli: RunReplay,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new Python process imports for about half a second before it reads a record, and the
    pass ends with its slowest part: the rebuild starts them ahead (while it takes its lock and
    claims the generations), and the pass gives them their parts."""
    from projectors.replay.adapters import kafka_source, partitioned_pass

    happened: list[str] = []
    start, shares = partitioned_pass._start_share_process, kafka_source.KafkaEventSource.shares

    async def started() -> asyncio.subprocess.Process:
        happened.append("a process started")
        return await start()

    async def cut(self: kafka_source.KafkaEventSource, ways: int) -> list[kafka_source.Share]:
        happened.append("the pass began")
        return await shares(self, ways)

    monkeypatch.setattr(partitioned_pass, "_start_share_process", started)
    monkeypatch.setattr(kafka_source.KafkaEventSource, "shares", cut)
    campaigns, users = workload()
    events = interleave([*campaigns, *users])
    await writer.write(events)
    split_passes(settings, monkeypatch)

    result = await replay_cli(
        "rebuild", "all", "--source", "kafka", "--grace-seconds", "0", "--processes", "3"
    )

    assert result.exit_code == 0, result.output
    assert "3 processes" in result.output
    assert happened == ["a process started", "a process started", "the pass began"]
    assert f"Rebuilt from kafka: {len(events):,} events" in result.output


async def test_processes_started_ahead_of_a_pass_that_does_not_use_them_exit(
    settings: Settings, writer: EventWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from projectors.replay.adapters import partitioned_pass
    from projectors.replay.bootstrap import replay

    ahead: list[asyncio.subprocess.Process] = []
    start = partitioned_pass._start_share_process

    async def started() -> asyncio.subprocess.Process:
        ahead.append(await start())
        return ahead[-1]

    monkeypatch.setattr(partitioned_pass, "_start_share_process", started)
    await writer.write(interleave(list(workload()[0])))
    full_pass = partitioned_pass.PartitionedPass(settings, processes=3, min_events=1, batch_size=100)
    async with replay(settings) as tools, tools.kafka_source(["campaigns"]) as source:
        await full_pass.start_early(source)
        assert len(ahead) == 2
        await full_pass.close()  # no pass came

    assert [process.returncode for process in ahead] == [0, 0]  # they exited, none was killed


async def test_a_split_pass_whose_other_process_fails_fails_the_rebuild_and_swaps_nothing(
    settings: Settings,
    redis: Redis,
    writer: EventWriter,
    replay_cli: RunReplay,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from projectors.replay.adapters import partitioned_pass

    campaigns, users = workload()
    await writer.write(interleave([*campaigns, *users]))
    split_passes(settings, monkeypatch)
    # The other processes run a module that exits at once, as a crashed one would.
    monkeypatch.setattr(partitioned_pass, "SHARE_MODULE", "this_module_does_not_exist")

    result = await replay_cli(
        "rebuild", "all", "--source", "kafka", "--grace-seconds", "0", "--processes", "2"
    )

    assert result.exit_code == 1, result.output
    said = " ".join(result.output.split())  # as wrapped by the console
    assert "the process replaying partitions" in said
    assert "No module named this_module_does_not_exist" in said
    assert await live_generations(redis, settings.redis_prefix) == {p: f"{p}.1" for p in PROJECTIONS}


async def test_dry_run_counts_the_events_and_writes_nothing(
    settings: Settings, redis: Redis, writer: EventWriter, replay_cli: RunReplay
) -> None:
    campaigns, users = workload()
    events = interleave([*campaigns, *users])
    await writer.write(events)
    campaign_events, user_events = counts(events)

    result = await replay_cli("rebuild", "all", "--dry-run")

    assert result.exit_code == 0, result.output
    assert "nothing written" in result.output
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") > 4}
    assert f"{campaign_events:,}" in rows["campaigns"] and "campaigns.2" in rows["campaigns"]
    assert f"{user_events:,}" in rows["users"]
    assert f"{campaign_events + user_events:,}" in rows["stats"]
    assert [key async for key in redis.scan_iter(match=f"{settings.redis_prefix}:*")] == []


async def test_a_second_rebuild_of_the_same_projection_is_refused_while_one_runs(
    settings: Settings, redis: Redis, replay_cli: RunReplay
) -> None:
    held = redis.lock(replay_lock_key(settings.redis_prefix, "stats"), timeout=30)
    assert await held.acquire(blocking=False)
    try:
        result = await replay_cli("rebuild", "all", "--grace-seconds", "0")
    finally:
        await held.release()

    assert result.exit_code == 1
    assert "another rebuild of stats is running" in result.output
    assert await redis.get(pointer_key(settings.redis_prefix, "campaigns")) is None  # nothing started


async def test_drop_removes_a_leftover_generation_and_refuses_the_live_one(
    settings: Settings, redis: Redis, replay_cli: RunReplay
) -> None:
    await redis.set(pointer_key(settings.redis_prefix, "users"), "users.1")
    for generation in ("users.1", "users.7"):
        users = UserKeys(generation_base(settings.redis_prefix, generation), settings.read_model_buckets)
        await redis.hset(users.user("u1"), "v", "1")

    dropped = await replay_cli("drop", "users.7")
    refused = await replay_cli("drop", "users.1")

    assert dropped.exit_code == 0, dropped.output
    assert "users.7: 1 keys removed" in dropped.output
    assert await generation_keys(redis, settings.redis_prefix, "users.7") == []
    assert refused.exit_code == 1
    assert "users.1 is live" in refused.output
    assert await generation_keys(redis, settings.redis_prefix, "users.1") != []


async def test_an_unknown_projection_is_a_usage_error_naming_the_choices(replay_cli: RunReplay) -> None:
    result = await replay_cli("rebuild", "campains")
    assert result.exit_code == 2
    assert "unknown projection 'campains'" in result.output
    assert "campaigns, users, stats, all" in result.output


async def test_a_record_in_kafka_that_is_no_event_is_skipped_and_reported_and_the_rest_rebuilds(
    settings: Settings, redis: Redis, writer: EventWriter, replay_cli: RunReplay
) -> None:
    campaigns, users = workload()
    events = interleave([*campaigns, *users])
    await writer.write(events[: len(events) // 2])
    await writer.kafka.publish_raw(Topics(settings.topic_prefix).campaigns, b"not json at all")
    await writer.write(events[len(events) // 2 :])

    result = await replay_cli("rebuild", "all", "--source", "kafka", "--grace-seconds", "0")

    assert result.exit_code == 0, result.output
    assert "1 records in the source are not valid events and were skipped" in result.output
    live = await live_generations(redis, settings.redis_prefix)
    for projection in all_projections(settings.redis_prefix, settings.read_model_buckets):
        await projection.apply(
            redis, f"{projection.name}.clean", [e for e in events if projection.accepts(e)]
        )
        assert await generation_digest(redis, settings.redis_prefix, live[projection.name]) == (
            await generation_digest(redis, settings.redis_prefix, f"{projection.name}.clean")
        )


async def test_drop_unlinks_a_generation_page_by_page_and_counts_each_key_once(
    settings: Settings, redis: Redis, replay_cli: RunReplay, monkeypatch: pytest.MonkeyPatch
) -> None:
    from projectors.replay.adapters import redis_generations

    monkeypatch.setattr(redis_generations, "UNLINK_CHUNK", 7)  # many SCAN pages, unlinked behind the cursor
    users = UserKeys(generation_base(settings.redis_prefix, "users.9"), settings.read_model_buckets)
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(250):
            pipe.hset(users.user(f"u{n}"), "v", "1")
        await pipe.execute()
    await redis.set(pointer_key(settings.redis_prefix, "users"), "users.1")
    kept = UserKeys(generation_base(settings.redis_prefix, "users.1"), settings.read_model_buckets)
    await redis.hset(kept.user("u0"), "v", "1")

    dropped = await replay_cli("drop", "users.9")

    assert dropped.exit_code == 0, dropped.output
    assert "users.9: 250 keys removed" in dropped.output
    assert await generation_keys(redis, settings.redis_prefix, "users.9") == []
    assert await generation_keys(redis, settings.redis_prefix, "users.1") == [kept.user("u0").encode()]


async def test_the_kafka_source_reads_one_partition_at_a_time_and_closes_each_with_its_last_batch(
    settings: Settings, writer: EventWriter
) -> None:
    """A `ClosingBatch` promises that no aggregate read so far has an event left in the pass:
    the fold writes its window out on it."""
    from projectors.replay.application.ports import ClosingBatch
    from projectors.replay.bootstrap import replay

    campaigns, _ = workload()
    events = interleave(campaigns)
    await writer.write(events)
    async with replay(settings) as tools, tools.kafka_source(["campaigns"]) as source:
        batches = [batch async for batch in (await source.next_pass()).batches()]
        holding = [tp for tp, offset in source.positions().items() if offset > 0]

    seen: set[str] = set()
    closed: set[str] = set()
    for batch in batches:
        ids = {envelope.aggregate_id for envelope in batch}
        assert not ids & closed, "an aggregate came back after a batch that closed it"
        seen |= ids
        if isinstance(batch, ClosingBatch):
            closed |= seen
    assert len(holding) > 1  # the workload spreads over partitions, so the order is tested
    assert sum(isinstance(batch, ClosingBatch) for batch in batches) == len(holding)
    assert isinstance(batches[-1], ClosingBatch)
    assert sorted(e.event_id for batch in batches for e in batch) == sorted(e.event_id for e in events)
