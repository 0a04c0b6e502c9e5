"""The atomic apply against real Redis: version guard, gaps, refusals, documents, indexes, stats."""

from __future__ import annotations

import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from projectors.adapters.digest import generation_digest, generation_keys
from projectors.adapters.redis_projection import campaigns_projection, stats_projection, users_projection
from projectors.domain.outcomes import Outcome
from readmodels.campaigns import (
    campaign_document,
    campaign_memberships,
    fold_campaign,
    member_campaign_id,
    set_member,
    unpacked_id,
)
from readmodels.keyspace import (
    CampaignKeys,
    StatsKeys,
    UserKeys,
    generation_base,
    layout_key,
    parked_set_key_of,
)
from readmodels.stored_documents import document_json, stored_form
from readmodels.versions import read_versions
from service_runtime.settings import Settings
from tests.integration.read_side.workload import interleave, mixed_workload, new_campaign, new_user
from tests.support.redis_keys import summed_hashes

GEN = "campaigns.1"


async def doc(redis: Redis, settings: Settings, campaign_id: str) -> dict | None:
    raw = await redis.hget(
        CampaignKeys(generation_base(settings.redis_prefix, GEN), settings.read_model_buckets).campaign(
            campaign_id
        ),
        "doc",
    )
    return orjson.loads(document_json(raw)) if raw else None


async def test_stored_document_is_byte_identical_to_the_fold_of_the_same_events(
    settings: Settings, redis: Redis
) -> None:
    campaign = new_campaign("owner-1", tags=["spring", "ünïcode"])
    campaign.then("CampaignUpdated", {"name": "Renamed", "budget": {"amount": "10.5", "currency": "USD"}})
    campaign.then("CampaignActivated")
    await campaigns_projection(settings.redis_prefix, settings.read_model_buckets).apply(
        redis, GEN, campaign.events
    )
    key = CampaignKeys(generation_base(settings.redis_prefix, GEN), settings.read_model_buckets).campaign(
        campaign.aggregate_id
    )
    stored = await redis.hget(key, "doc")
    assert stored is not None and stored == stored_form(
        campaign_document(fold_campaign(campaign.events) or {})
    )
    body = orjson.loads(document_json(stored))
    assert body["name"] == "Renamed"
    assert body["status"] == "active"
    assert body["version"] == 3
    assert body["tags"] == ["spring", "ünïcode"]
    assert body["created_at"] < body["updated_at"] or body["created_at"] == body["updated_at"]


async def test_duplicate_and_older_versions_change_nothing(settings: Settings, redis: Redis) -> None:
    projection = campaigns_projection(settings.redis_prefix, settings.read_model_buckets)
    campaign = new_campaign("owner-1")
    campaign.then("CampaignUpdated", {"name": "Second name"})
    await projection.apply(redis, GEN, campaign.events)
    before = await generation_digest(redis, settings.redis_prefix, GEN)

    replayed = await projection.apply(redis, GEN, [campaign.events[1], campaign.events[0]])

    assert [o.outcome for o in replayed.outcomes] == [Outcome.DUPLICATE, Outcome.DUPLICATE]
    assert await generation_digest(redis, settings.redis_prefix, GEN) == before
    assert (await doc(redis, settings, campaign.aggregate_id) or {})["name"] == "Second name"
    campaign.then("CampaignActivated")
    await projection.apply(redis, GEN, campaign.events[2:])
    assert await generation_digest(redis, settings.redis_prefix, GEN) != before


async def test_a_gap_is_parked_not_applied_and_drained_when_the_missing_version_arrives(
    settings: Settings, redis: Redis
) -> None:
    projection = campaigns_projection(settings.redis_prefix, settings.read_model_buckets)
    campaign = new_campaign("owner-1")
    campaign.then("CampaignActivated")
    campaign.then("CampaignPaused")
    base = generation_base(settings.redis_prefix, GEN)

    first = await projection.apply(redis, GEN, [campaign.events[0], campaign.events[2]])
    assert [o.outcome for o in first.outcomes] == [Outcome.APPLIED, Outcome.PARKED]
    assert (await doc(redis, settings, campaign.aggregate_id) or {})["status"] == "draft"
    assert await redis.smembers(
        parked_set_key_of(base, campaign.aggregate_id, settings.read_model_buckets)
    ) == {f"campaign:{campaign.aggregate_id}".encode()}

    filled = await projection.apply(redis, GEN, [campaign.events[1]])
    assert filled.outcomes[0].outcome is Outcome.APPLIED and filled.outcomes[0].drained == 1
    body = await doc(redis, settings, campaign.aggregate_id) or {}
    assert (body["status"], body["version"]) == ("paused", 3)
    assert await redis.scard(parked_set_key_of(base, campaign.aggregate_id, settings.read_model_buckets)) == 0


async def test_an_update_without_a_creation_is_refused_and_writes_nothing(
    settings: Settings, redis: Redis
) -> None:
    projection = campaigns_projection(settings.redis_prefix, settings.read_model_buckets)
    orphan = new_campaign("owner-1")
    orphan.events.clear()
    orphan.then("CampaignUpdated", {"name": "no creation"})

    result = await projection.apply(redis, GEN, orphan.events)

    assert result.outcomes[0].outcome is Outcome.FAILED
    assert "no creation event" in (result.outcomes[0].error or "")
    assert (
        await redis.exists(
            CampaignKeys(generation_base(settings.redis_prefix, GEN), settings.read_model_buckets).campaign(
                orphan.aggregate_id
            )
        )
        == 0
    )


async def test_members_are_packed_unless_the_generation_is_marked_with_an_earlier_layout(
    settings: Settings, redis: Redis
) -> None:
    """A deployment upgraded across layout 3 goes on writing its live generation in the form it
    was built with (text members and ids) until the rebuild swaps it out; a generation with no
    marker yet (a fresh one, or one a rebuild fills) gets packed members."""
    projection = campaigns_projection(settings.redis_prefix, settings.read_model_buckets)
    earlier = "campaigns.9"
    await redis.set(layout_key(settings.redis_prefix, earlier), 2)
    campaign = new_campaign("owner-1", channel="sms", tags=["a"])
    cid = campaign.aggregate_id
    state = fold_campaign(campaign.events)
    assert state is not None
    for generation, packed in ((GEN, True), (earlier, False)):
        keys = CampaignKeys(generation_base(settings.redis_prefix, generation), settings.read_model_buckets)
        bucket = keys.bucket_of(cid)
        await projection.apply(redis, generation, campaign.events)
        members = await redis.zrange(keys.index("created", bucket=bucket), 0, -1)
        assert members == [campaign_memberships(state, packed)["created"][0]]
        assert member_campaign_id(members[0], packed) == cid
        assert await redis.smembers(keys.filter_set("channel", "sms", bucket)) == {set_member(cid, packed)}


async def test_indexes_follow_status_channel_tags_and_deletion(settings: Settings, redis: Redis) -> None:
    projection = campaigns_projection(settings.redis_prefix, settings.read_model_buckets)
    keys = CampaignKeys(generation_base(settings.redis_prefix, GEN), settings.read_model_buckets)
    campaign = new_campaign("owner-1", channel="sms", tags=["a", "b"])
    cid = campaign.aggregate_id
    bucket = keys.bucket_of(cid)
    await projection.apply(redis, GEN, campaign.events)
    for sort in ("created", "updated", "name"):
        assert await redis.zcard(keys.index(sort, bucket=bucket)) == 1
        assert await redis.zcard(keys.index(sort, "owner", "owner-1", bucket)) == 1
    assert await redis.smembers(keys.filter_set("status", "draft", bucket)) == {set_member(cid, True)}
    assert await redis.smembers(keys.filter_set("tag", "b", bucket)) == {set_member(cid, True)}
    # The lean layout: no sorted index per status, channel or tag.
    assert await redis.exists(keys.index("created", "status", "draft", bucket)) == 0

    campaign.then("CampaignUpdated", {"channel": "push", "tags": ["c"]})
    campaign.then("CampaignActivated")
    await projection.apply(redis, GEN, campaign.events[1:])
    assert await redis.scard(keys.filter_set("status", "draft", bucket)) == 0
    assert await redis.smembers(keys.filter_set("status", "active", bucket)) == {set_member(cid, True)}
    assert await redis.scard(keys.filter_set("channel", "sms", bucket)) == 0
    assert await redis.smembers(keys.filter_set("channel", "push", bucket)) == {set_member(cid, True)}
    assert await redis.scard(keys.filter_set("tag", "b", bucket)) == 0
    assert await redis.smembers(keys.filter_set("tag", "c", bucket)) == {set_member(cid, True)}
    # The updated sort moved with the events, in all campaigns' index and the owner's alike.
    updated = await redis.zrange(keys.index("updated", bucket=bucket), 0, -1)
    assert updated == await redis.zrange(keys.index("updated", "owner", "owner-1", bucket), 0, -1)
    assert len(updated) == 1

    campaign.then("CampaignDeleted")
    await projection.apply(redis, GEN, campaign.events[3:])
    assert await doc(redis, settings, campaign.aggregate_id) is None
    for sort in ("created", "updated", "name"):
        assert await redis.zcard(keys.index(sort, bucket=bucket)) == 0
        assert await redis.zcard(keys.index(sort, "owner", "owner-1", bucket)) == 0
    for dimension, value in (("status", "active"), ("channel", "push"), ("tag", "c")):
        assert await redis.scard(keys.filter_set(dimension, value, bucket)) == 0
    # The tombstone keeps the version: a redelivered creation cannot resurrect it.
    again = await projection.apply(redis, GEN, campaign.events[:1])
    assert again.outcomes[0].outcome is Outcome.DUPLICATE
    assert await doc(redis, settings, campaign.aggregate_id) is None


async def test_stats_count_live_campaigns_budgets_and_users_exactly_once(
    settings: Settings, redis: Redis
) -> None:
    projection = stats_projection(settings.redis_prefix, settings.read_model_buckets)
    workload = mixed_workload(30, ["u1", "u2"])
    users = [new_user() for _ in range(4)]
    users[0].then("UserLoggedIn")
    events = interleave([*workload, *users])
    await projection.apply(redis, "stats.1", events)
    await projection.apply(redis, "stats.1", events)  # redelivered: counted once

    keys = StatsKeys(generation_base(settings.redis_prefix, "stats.1"), settings.read_model_buckets)
    buckets = range(settings.read_model_buckets)
    counts = await summed_hashes(redis, [keys.counts(b) for b in buckets])
    live = [fold_campaign(c.events) for c in workload]
    live = [c for c in live if c and c["status"] != "deleted"]
    assert counts["campaigns.total"] == len(live)
    assert counts["campaigns.deleted"] == 30 - len(live)
    assert counts["status:active"] == sum(1 for c in live if c["status"] == "active")
    assert counts["channel:sms"] == sum(1 for c in live if c["channel"] == "sms")
    assert counts["users.total"] == 4
    per_minute = await summed_hashes(redis, [keys.events_per_minute(b) for b in buckets])
    assert sum(int(v) for v in per_minute.values()) == len(events)


async def test_stats_budgets_and_channels_move_with_updates_currency_changes_and_deletions(
    settings: Settings, redis: Redis
) -> None:
    # Only what an event changes is written (stats.lua): an unchanged budget, a status change and
    # a move to another currency must each leave the sums exact.
    projection = stats_projection(settings.redis_prefix, settings.read_model_buckets)
    moved = new_campaign("u1", channel="email", budget={"amount": "100.25", "currency": "EUR"})
    moved.then("CampaignUpdated", {"budget": {"amount": "7.5", "currency": "USD"}})
    moved.then("CampaignActivated")
    kept = new_campaign("u1", channel="sms", budget={"amount": "10.10", "currency": "EUR"})
    kept.then("CampaignUpdated", {"name": "Same budget", "budget": {"amount": "10.10", "currency": "EUR"}})
    kept.then("CampaignUpdated", {"channel": "push"})
    gone = new_campaign("u2", channel="sms", budget={"amount": "3", "currency": "USD"})
    gone.then("CampaignActivated")
    gone.then("CampaignDeleted")
    await projection.apply(redis, "stats.1", interleave([moved, kept, gone]))

    keys = StatsKeys(generation_base(settings.redis_prefix, "stats.1"), settings.read_model_buckets)
    buckets = range(settings.read_model_buckets)
    budget = await summed_hashes(redis, [keys.budget(b) for b in buckets])
    assert (budget["EUR:units"], budget["EUR:frac"]) == (10, 1000)
    assert (budget["USD:units"], budget["USD:frac"]) == (7, 5000)
    counts = await summed_hashes(redis, [keys.counts(b) for b in buckets])
    assert counts["campaigns.total"] == 2
    assert counts["campaigns.deleted"] == 1
    assert (counts["status:active"], counts["status:draft"]) == (1, 1)
    assert (counts["channel:email"], counts["channel:push"], counts["channel:sms"]) == (1, 1, 0)


async def test_stats_states_are_fields_of_their_buckets_hash_and_an_earlier_layout_is_written_as_it_was(
    settings: Settings, redis: Redis
) -> None:
    # Key layout 2 of stats: each campaign's and user's state one field of its bucket's hash, no
    # key of its own; a live generation marked with layout 1 (a deployment upgraded, until the
    # projectors' rebuild swaps it out) is still written a hash a campaign, with the same counts.
    prefix, buckets = settings.redis_prefix, settings.read_model_buckets
    projection = stats_projection(prefix, buckets)
    workload = mixed_workload(12, ["u1", "u2"])
    users = [new_user() for _ in range(2)]
    events = interleave([*workload, *users])
    await redis.set(layout_key(prefix, "stats.7"), 1)
    for generation in ("stats.1", "stats.7"):
        await projection.apply(redis, generation, events)
        await projection.apply(redis, generation, events)  # redelivered: counted once

    now, then = (StatsKeys(generation_base(prefix, g), buckets) for g in ("stats.1", "stats.7"))
    for name in ("counts", "budget", "events_per_minute"):
        assert await summed_hashes(redis, [getattr(now, name)(b) for b in range(buckets)]) == (
            await summed_hashes(redis, [getattr(then, name)(b) for b in range(buckets)])
        )
    last = {a.aggregate_id: a.events[-1].aggregate_version for a in [*workload, *users]}
    kinds = {a.aggregate_id: a.events[0].aggregate_type for a in [*workload, *users]}
    fields = 0
    for bucket in range(buckets):
        for states in (now.campaign_states(bucket), now.user_states(bucket)):
            for field, value in (await redis.hgetall(states)).items():
                assert int(value.partition(b"|")[0]) == last[unpacked_id(field)]
                fields += 1
    assert fields == len(last)
    per_bucket = {
        name(b).encode()
        for b in range(buckets)
        for name in (now.counts, now.budget, now.events_per_minute, now.campaign_states, now.user_states)
    }
    assert set(await generation_keys(redis, prefix, "stats.1")) <= per_bucket  # no key a campaign
    for aggregate_id, version in last.items():
        layout1 = then.layout1_campaign if kinds[aggregate_id] == "campaign" else then.layout1_user
        assert await redis.hget(layout1(aggregate_id), "v") == str(version).encode()
        for generation in ("stats.1", "stats.7"):
            held = await read_versions(
                redis, prefix, generation, "stats", kinds[aggregate_id], [aggregate_id], buckets
            )
            assert held == [version]


async def test_a_stats_gap_is_parked_and_drained_in_the_buckets_hash(
    settings: Settings, redis: Redis
) -> None:
    prefix, buckets = settings.redis_prefix, settings.read_model_buckets
    projection = stats_projection(prefix, buckets)
    campaign = new_campaign("u1", channel="sms")
    campaign.then("CampaignActivated")
    campaign.then("CampaignPaused")
    first, second, third = campaign.events
    result = await projection.apply(redis, "stats.1", [first, third])
    assert [o.outcome for o in result.outcomes] == [Outcome.APPLIED, Outcome.PARKED]
    result = await projection.apply(redis, "stats.1", [second])
    assert [(o.outcome, o.drained) for o in result.outcomes] == [(Outcome.APPLIED, 1)]
    keys = StatsKeys(generation_base(prefix, "stats.1"), buckets)
    state = await redis.hget(*keys.campaign(campaign.aggregate_id))
    assert state is not None and state.split(b"|")[:3] == [b"3", b"paused", b"sms"]
    counts = await summed_hashes(redis, [keys.counts(b) for b in range(buckets)])
    assert (counts["status:paused"], counts["status:active"], counts["status:draft"]) == (1, 0, 0)


async def test_user_profile_document_follows_registration_login_roles_and_password_change(
    settings: Settings, redis: Redis
) -> None:
    user = new_user("Mixed.Case@Example.com")
    user.then("UserLoggedIn")
    user.then("UserRolesChanged", {"roles": ["user", "admin"]})
    user.then("UserPasswordChanged")
    await users_projection(settings.redis_prefix, settings.read_model_buckets).apply(
        redis, "users.1", user.events
    )
    users = UserKeys(generation_base(settings.redis_prefix, "users.1"), settings.read_model_buckets)
    raw = await redis.hget(users.user(user.aggregate_id), "doc")
    profile = orjson.loads(raw or b"{}")
    assert profile["email"] == "mixed.case@example.com"
    assert profile["roles"] == ["user", "admin"]
    assert profile["version"] == 4
    assert profile["last_login_at"] is not None


async def test_replaying_into_a_new_generation_gives_the_live_digest(
    settings: Settings, redis: Redis
) -> None:
    projection = campaigns_projection(settings.redis_prefix, settings.read_model_buckets)
    events = interleave(mixed_workload(40, ["u1", "u2", "u3"]))
    for start in range(0, len(events), 7):  # live: in small batches, with redeliveries
        await projection.apply(redis, GEN, events[start : start + 7])
        await projection.apply(redis, GEN, events[max(0, start - 3) : start + 2])
    await projection.apply(redis, "campaigns.2", events, announce=False)

    assert await generation_digest(redis, settings.redis_prefix, GEN) == await generation_digest(
        redis, settings.redis_prefix, "campaigns.2"
    )


async def test_a_redis_that_lost_its_scripts_gets_them_again(settings: Settings, redis: Redis) -> None:
    # A restarted Redis answers NOSCRIPT: the projections load their scripts and run the batch.
    campaign = new_campaign("owner-1")
    user = new_user()
    await redis.script_flush()
    applied = await campaigns_projection(settings.redis_prefix, settings.read_model_buckets).apply(
        redis, GEN, campaign.events
    )
    assert [o.outcome for o in applied.outcomes] == [Outcome.APPLIED]
    await redis.script_flush()
    profile = await users_projection(settings.redis_prefix, settings.read_model_buckets).apply(
        redis, "users.1", user.events
    )
    assert [o.outcome for o in profile.outcomes] == [Outcome.APPLIED]
    assert (await doc(redis, settings, campaign.aggregate_id) or {})["version"] == 1


async def test_a_page_of_versions_is_read_in_order_with_zero_for_no_state(
    settings: Settings, redis: Redis
) -> None:
    """What anti-entropy reads a step: a page of ids, in one write, each id's version or 0."""
    prefix, buckets = settings.redis_prefix, settings.read_model_buckets
    campaigns = [new_campaign(f"owner-{n}") for n in range(7)]
    for n, campaign in enumerate(campaigns):
        for _ in range(n % 3):
            campaign.then("CampaignActivated" if _ == 0 else "CampaignPaused")
    applied = campaigns[:5]  # the last two never reach the read models
    for projection, generation in ((campaigns_projection, GEN), (stats_projection, "stats.1")):
        await projection(prefix, buckets).apply(redis, generation, [e for c in applied for e in c.events])
    ids = [c.aggregate_id for c in reversed(campaigns)]
    expected = [len(c.events) if c in applied else 0 for c in reversed(campaigns)]

    for projection, generation in (("campaigns", GEN), ("stats", "stats.1")):
        held = await read_versions(redis, prefix, generation, projection, "campaign", ids, buckets)
        assert held == expected, projection
    assert await read_versions(redis, prefix, GEN, "campaigns", "campaign", [], buckets) == []

    wrong = CampaignKeys(generation_base(prefix, GEN), buckets).campaign(campaigns[-1].aggregate_id)
    await redis.set(wrong, "not a hash")  # an error reply is raised, not read as a version
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await read_versions(redis, prefix, GEN, "campaigns", "campaign", ids, buckets)
