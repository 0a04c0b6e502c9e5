"""`campaigns replay verify` and `inspect` on real Kafka, MongoDB and Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from redis.asyncio import Redis

from readmodels.generations import live_generations
from readmodels.json_form import json_time
from readmodels.keyspace import CampaignKeys, StatsKeys, UserKeys, generation_base
from service_runtime.settings import Settings
from tests.integration.read_side.conftest import running_projectors, wait_records
from tests.integration.read_side.workload import interleave, mixed_workload, new_campaign, new_user
from tests.integration.replay.conftest import EventWriter, RunReplay

START = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)


async def live_system(settings: Settings, redis: Redis, writer: EventWriter) -> list[str]:
    """Events written and projected by the live projectors; returns the campaign ids."""
    campaigns = mixed_workload(60, ["owner-a", "owner-b"])
    users = [new_user() for _ in range(10)]
    events = interleave([*campaigns, *users])
    async with running_projectors(settings):
        await writer.write(events)
        campaign_events = sum(1 for e in events if e.aggregate_type == "campaign")
        await wait_records(redis, settings, "campaigns", campaign_events)
        await wait_records(redis, settings, "users", len(events) - campaign_events)
        await wait_records(redis, settings, "stats", len(events))
    return [c.aggregate_id for c in campaigns]


async def scratch_keys(redis: Redis, settings: Settings) -> list[bytes]:
    return [key async for key in redis.scan_iter(match=f"{settings.redis_prefix}:*.verify-*")]


@pytest.mark.parametrize("source", ["mongo", "kafka"])
async def test_verify_passes_on_an_untouched_projection_and_leaves_no_scratch_keys(
    settings: Settings, redis: Redis, writer: EventWriter, replay_cli: RunReplay, source: str
) -> None:
    await live_system(settings, redis, writer)

    result = await replay_cli("verify", "all", "--source", source)

    assert result.exit_code == 0, result.output
    assert result.stdout.count("same") == 3
    assert "DRIFT" not in result.stdout
    assert await scratch_keys(redis, settings) == []


async def test_verify_finds_a_key_changed_by_hand_names_it_and_exits_non_zero(
    settings: Settings, redis: Redis, writer: EventWriter, replay_cli: RunReplay
) -> None:
    ids = await live_system(settings, redis, writer)
    live = await live_generations(redis, settings.redis_prefix)
    base = generation_base(settings.redis_prefix, live["campaigns"])
    key = CampaignKeys(base, settings.read_model_buckets).campaign(ids[0])
    await redis.hset(key, "doc", b'{"name":"tampered"}')
    stats_base = generation_base(settings.redis_prefix, live["stats"])
    counts = StatsKeys(stats_base, settings.read_model_buckets).counts()
    await redis.hset(counts, "campaigns.total", 999)

    result = await replay_cli("verify", "all")

    assert result.exit_code == 1, result.output
    # Keys are named relative to their generation (a bucket's hash tag included on a cluster).
    assert f"changed: {relative(key, base)}" in result.stdout
    assert f"changed: {relative(counts, stats_base)}" in result.stdout
    assert "users" in result.stdout and result.stdout.count("same") == 1
    assert await scratch_keys(redis, settings) == []


async def test_verify_names_keys_only_the_live_generation_has(
    settings: Settings, redis: Redis, writer: EventWriter, replay_cli: RunReplay
) -> None:
    await live_system(settings, redis, writer)
    live = await live_generations(redis, settings.redis_prefix)
    base = generation_base(settings.redis_prefix, live["users"])
    ghost = UserKeys(base, settings.read_model_buckets).user("ghost")
    await redis.hset(ghost, "v", "1")

    result = await replay_cli("verify", "users")

    assert result.exit_code == 1
    assert f"only in the live generation: {relative(ghost, base)}" in result.stdout


def relative(key: str, base: str) -> str:
    return key.removeprefix(f"{base}:")


async def written_campaign(writer: EventWriter):  # type: ignore[no-untyped-def]
    campaign = new_campaign("owner-a", clock=START, name="First name", tags=["launch"])
    campaign.clock = START + timedelta(hours=1)
    campaign.then("CampaignUpdated", {"name": "Second name"})
    campaign.clock = START + timedelta(hours=2)
    campaign.then("CampaignActivated")
    await writer.write(campaign.events)
    return campaign


async def test_inspect_as_of_version_1_shows_the_campaign_as_created(
    writer: EventWriter, replay_cli: RunReplay
) -> None:
    campaign = await written_campaign(writer)

    result = await replay_cli("inspect", campaign.aggregate_id, "--as-of-version", "1")

    assert result.exit_code == 0, result.output
    shown = orjson.loads(result.stdout)
    assert shown["aggregate_type"] == "campaign"
    assert shown["version"] == 1
    assert shown["latest_version"] == 3
    assert shown["state"]["name"] == "First name"
    assert shown["state"]["status"] == "draft"
    assert shown["state"]["version"] == 1
    assert [e["event_type"] for e in shown["events"]] == ["CampaignCreated"]


async def test_inspect_as_of_a_timestamp_shows_the_campaign_as_it_was_then(
    writer: EventWriter, replay_cli: RunReplay
) -> None:
    campaign = await written_campaign(writer)
    between = START + timedelta(hours=1, minutes=30)

    after_update = await replay_cli("inspect", campaign.aggregate_id, "--as-of", between.isoformat())
    naive_utc = await replay_cli("inspect", campaign.aggregate_id, "--as-of", "2027-03-01T09:30:00")
    latest = await replay_cli("inspect", campaign.aggregate_id)

    assert after_update.exit_code == 0, after_update.output
    shown = orjson.loads(after_update.stdout)
    assert (shown["version"], shown["state"]["name"], shown["state"]["status"]) == (2, "Second name", "draft")
    assert shown["as_of"] == {"timestamp": json_time(between)}
    assert orjson.loads(naive_utc.stdout)["version"] == 1
    assert orjson.loads(latest.stdout)["state"]["status"] == "active"


async def test_inspect_before_the_creation_or_of_an_unknown_id_exits_non_zero(
    writer: EventWriter, replay_cli: RunReplay
) -> None:
    campaign = await written_campaign(writer)

    before = await replay_cli("inspect", campaign.aggregate_id, "--as-of", "2027-02-01T00:00:00Z")
    unknown = await replay_cli("inspect", "no-such-aggregate")
    both = await replay_cli("inspect", campaign.aggregate_id, "--as-of-version", "1", "--as-of", "2027-03-01")

    assert before.exit_code == 1
    assert "did not exist yet" in before.output
    assert unknown.exit_code == 1
    assert "no events for aggregate no-such-aggregate" in unknown.output
    assert both.exit_code == 2
    assert "not both" in both.output


async def test_inspect_shows_a_user_exactly_as_the_users_read_model_holds_it(
    settings: Settings, redis: Redis, writer: EventWriter, replay_cli: RunReplay
) -> None:
    user = new_user(email="Mixed.Case@Example.com")
    user.then("UserLoggedIn")
    user.then("UserRolesChanged", {"roles": ["user", "admin"]})
    async with running_projectors(settings):
        await writer.write(user.events)
        await wait_records(redis, settings, "users", 3)

    result = await replay_cli("inspect", user.aggregate_id)

    assert result.exit_code == 0, result.output
    live = await live_generations(redis, settings.redis_prefix)
    stored = await redis.hget(
        UserKeys(generation_base(settings.redis_prefix, live["users"]), settings.read_model_buckets).user(
            user.aggregate_id
        ),
        "doc",
    )
    shown = orjson.loads(result.stdout)
    assert shown["aggregate_type"] == "user"
    assert shown["state"] == orjson.loads(stored or b"null")
    assert [e["version"] for e in shown["events"]] == [1, 2, 3]
