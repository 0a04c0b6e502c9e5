"""The query API in-process (its lifespan running) over real Redis, MongoDB and a running projector."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.asyncio import Redis

from events import encode_event
from projectors.adapters.redis_projection import campaigns_projection
from projectors.entrypoints.projectors import Projectors
from readmodels.campaigns import fold_campaign
from readmodels.generations import swap_generation
from service_runtime.http import metrics_text
from service_runtime.settings import Settings
from service_runtime.tokens import issue_access_token
from tests.integration.read_side.conftest import (
    EventProducer,
    QueryClient,
    query_app,
    record_in_log,
    records_seen,
    wait_records,
    wait_until,
)
from tests.integration.read_side.workload import (
    START,
    Aggregate,
    campaign_payload,
    interleave,
    mixed_workload,
    new_campaign,
    new_user,
)
from tests.support.services import free_port

PROBLEM = "application/problem+json"


async def publish_and_wait(
    producer: EventProducer, redis: Redis, settings: Settings, aggregates: list[Aggregate]
) -> None:
    """Publish the aggregates' events and wait until every projection has consumed them."""
    events = interleave(aggregates)
    campaign_events = sum(1 for e in events if e.aggregate_type == "campaign")
    counts = {"campaigns": campaign_events, "users": len(events) - campaign_events, "stats": len(events)}
    before = {p: await records_seen(redis, settings, p) for p in counts}
    await producer.publish(events)
    for projection, count in counts.items():
        await wait_records(redis, settings, projection, before[projection] + count)


async def walk(
    query: QueryClient, headers: dict[str, str], params: dict[str, Any], between_pages: Any = None
) -> list[dict]:
    items: list[dict] = []
    cursor = None
    pages = 0
    while True:
        response = await query.http.get(
            "/campaigns", params={**params, **({"cursor": cursor} if cursor else {})}, headers=headers
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= params.get("limit", 20)
        items += page["items"]
        cursor = page["next_cursor"]
        pages += 1
        if between_pages is not None and pages == 1:
            await between_pages()
        if cursor is None:
            return items


# ---------------------------------------------------------------- read your writes


async def test_min_version_waits_for_the_projection_and_is_woken_by_its_notification(
    settings: Settings, redis: Redis, producer: EventProducer, projectors: Projectors, query: QueryClient
) -> None:
    campaign = new_campaign("owner-1")
    await producer.publish(campaign.events)
    await wait_records(redis, settings, "campaigns", 1)
    activated = campaign.then("CampaignActivated")

    read = asyncio.create_task(
        query.http.get(
            f"/campaigns/{campaign.aggregate_id}", params={"min_version": 2}, headers=query.token("owner-1")
        )
    )

    async def parked_on_the_notification() -> bool:
        return len(query.read_side.waiters) == 1

    await wait_until(parked_on_the_notification, 5, "the read to wait")
    assert not read.done()
    published = time.monotonic()
    await producer.publish([activated])
    response = await read

    assert response.status_code == 200
    assert (response.json()["version"], response.json()["status"]) == (2, "active")
    assert response.headers["etag"] == '"2"'
    # Woken by the projector's notification, well before the 5 s bound.
    assert time.monotonic() - published < 2
    assert len(query.read_side.waiters) == 0


async def test_min_version_of_a_campaign_not_projected_yet_waits_for_its_creation(
    settings: Settings, producer: EventProducer, projectors: Projectors, query: QueryClient
) -> None:
    campaign = new_campaign("owner-1")
    read = asyncio.create_task(
        query.http.get(
            f"/campaigns/{campaign.aggregate_id}", params={"min_version": 1}, headers=query.token("owner-1")
        )
    )
    await wait_until(lambda: _waiting(query), 5, "the read to wait")
    await producer.publish(campaign.events)
    response = await read
    assert response.status_code == 200
    assert response.json()["id"] == campaign.aggregate_id


async def _waiting(query: QueryClient) -> bool:
    return len(query.read_side.waiters) > 0


async def test_min_version_not_reached_in_time_answers_503_with_retry_after(
    settings: Settings, redis: Redis, producer: EventProducer, projectors: Projectors
) -> None:
    impatient = settings.model_copy(update={"read_wait_seconds": 0.3})
    campaign = new_campaign("owner-1")
    await producer.publish(campaign.events)
    await wait_records(redis, settings, "campaigns", 1)
    async with query_app(impatient) as query:
        started = time.monotonic()
        response = await query.http.get(
            f"/campaigns/{campaign.aggregate_id}", params={"min_version": 5}, headers=query.token("owner-1")
        )
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["retry-after"] == "1"
    assert "version 5" in response.json()["detail"]
    assert 0.25 < elapsed < 2


async def test_min_version_reads_over_the_users_quota_answer_429_alike_on_either_path(
    settings: Settings, redis: Redis, producer: EventProducer, projectors: Projectors
) -> None:
    one_each = settings.model_copy(update={"min_version_waiters_per_user": 1, "read_wait_seconds": 1.0})
    campaign = new_campaign("owner-1")
    await producer.publish(campaign.events)
    await wait_records(redis, settings, "campaigns", 1)
    path = f"/campaigns/{campaign.aggregate_id}"
    async with query_app(one_each) as query:
        auth = query.token("owner-1")
        waiting = asyncio.create_task(query.http.get(path, params={"min_version": 5}, headers=auth))
        await asyncio.sleep(0.2)  # the first read holds the user's one place
        fast = await query.http.get(path, params={"min_version": 5}, headers=auth)
        routed = await query.http.get(path, params={"min_version": 5, "ignored": 1}, headers=auth)
        assert (await waiting).status_code == 503
    for response in (fast, routed):
        assert response.status_code == 429
        assert response.headers["content-type"] == PROBLEM
        assert response.headers["retry-after"] == "1"
    assert fast.json() == routed.json()


# ---------------------------------------------------------------- lists


async def test_pages_return_every_campaign_once_in_order_while_new_campaigns_arrive(
    settings: Settings, redis: Redis, producer: EventProducer, projectors: Projectors, query: QueryClient
) -> None:
    workload = mixed_workload(100, ["owner-a", "owner-b"], start=START)
    await publish_and_wait(producer, redis, settings, workload)
    live = [s for s in (fold_campaign(c.events) for c in workload) if s and s["status"] != "deleted"]

    async def more_campaigns_arrive() -> None:
        later = [new_campaign("owner-a", clock=START.replace(year=2028)) for _ in range(5)]
        await publish_and_wait(producer, redis, settings, later)

    newest_first = await walk(
        query, query.admin(), {"sort": "-created_at", "limit": 7}, between_pages=more_campaigns_arrive
    )
    expected = sorted(live, key=lambda c: (c["created_at"], c["id"]), reverse=True)
    assert [c["id"] for c in newest_first] == [c["id"] for c in expected]
    assert newest_first[0] == expected[0]

    by_name = await walk(query, query.admin(), {"sort": "name", "limit": 9, "owner_id": "owner-b"})
    expected_b = sorted(
        (c for c in live if c["owner_id"] == "owner-b"), key=lambda c: (c["name"].casefold(), c["id"])
    )
    assert [c["id"] for c in by_name] == [c["id"] for c in expected_b]


async def test_filters_combine_and_match_the_campaigns_state(
    settings: Settings, redis: Redis, producer: EventProducer, projectors: Projectors, query: QueryClient
) -> None:
    workload = mixed_workload(60, ["owner-a", "owner-b"], start=START)
    await publish_and_wait(producer, redis, settings, workload)
    live = [s for s in (fold_campaign(c.events) for c in workload) if s and s["status"] != "deleted"]

    cases: list[dict[str, Any]] = [
        {"status": "active"},
        {"status": "paused", "channel": "sms"},
        {"tag": "t1"},
        {"tag": "all", "status": "draft"},
        {"channel": "push", "owner_id": "owner-a", "tag": "t2"},
    ]
    for filters in cases:
        got = await walk(query, query.admin(), {**filters, "sort": "updated_at", "limit": 4})

        def matches(c: dict, f: dict = filters) -> bool:
            return (
                f.get("status", c["status"]) == c["status"]
                and f.get("channel", c["channel"]) == c["channel"]
                and f.get("owner_id", c["owner_id"]) == c["owner_id"]
                and ("tag" not in f or f["tag"] in c["tags"])
            )

        expected = sorted((c for c in live if matches(c)), key=lambda c: (c["updated_at"], c["id"]))
        assert [c["id"] for c in got] == [c["id"] for c in expected], filters
        assert expected, f"the workload should have campaigns for {filters}"


async def test_users_list_only_their_own_campaigns_and_admins_list_all(
    settings: Settings, redis: Redis, producer: EventProducer, projectors: Projectors, query: QueryClient
) -> None:
    mine = [new_campaign("alice") for _ in range(3)]
    theirs = [new_campaign("bob") for _ in range(2)]
    await publish_and_wait(producer, redis, settings, [*mine, *theirs])

    alice = await walk(query, query.token("alice"), {})
    assert {c["id"] for c in alice} == {c.aggregate_id for c in mine}
    spying = await query.http.get("/campaigns", params={"owner_id": "bob"}, headers=query.token("alice"))
    assert spying.json() == {"items": [], "next_cursor": None}
    everyone = await walk(query, query.admin(), {})
    assert len(everyone) == 5


# ---------------------------------------------------------------- detail, visibility, deletion


async def test_owner_and_admin_read_a_campaign_and_anyone_else_gets_404(
    settings: Settings, redis: Redis, producer: EventProducer, projectors: Projectors, query: QueryClient
) -> None:
    campaign = new_campaign("alice")
    await record_in_log(settings, campaign.events)
    await publish_and_wait(producer, redis, settings, [campaign])
    path = f"/campaigns/{campaign.aggregate_id}"

    owner = await query.http.get(path, headers=query.token("alice"))
    assert owner.status_code == 200
    assert owner.headers["content-type"] == "application/json"
    assert owner.json()["owner_id"] == "alice"
    assert (await query.http.get(path, headers=query.admin())).json() == owner.json()

    for other_path in (path, f"{path}/history", f"{path}?as_of_version=1", f"{path}?min_version=1"):
        other = await query.http.get(other_path, headers=query.token("mallory"))
        assert other.status_code == 404, other_path
        assert other.headers["content-type"] == PROBLEM
    unknown = await query.http.get("/campaigns/no-such-campaign", headers=query.admin())
    assert unknown.status_code == 404


async def test_the_plain_read_and_the_routed_read_answer_alike(
    settings: Settings, redis: Redis, producer: EventProducer, projectors: Projectors, query: QueryClient
) -> None:
    campaign = new_campaign("alice")
    await publish_and_wait(producer, redis, settings, [campaign])
    path = f"/campaigns/{campaign.aggregate_id}"
    for who in (query.token("alice"), query.token("mallory"), {}, {"Authorization": "Bearer forged"}):
        plain = await query.http.get(path, headers={**who, "X-Correlation-ID": "c-1"})
        # `min_version` alone is answered by the pure-ASGI read too; with a parameter the route
        # ignores beside it, by FastAPI's route.
        fast = await query.http.get(path, params={"min_version": 1}, headers=who)
        routed = await query.http.get(path, params={"min_version": 1, "ignored": 1}, headers=who)
        for other in (fast, routed):
            assert (plain.status_code, plain.content) == (other.status_code, other.content)
            assert plain.headers["content-type"] == other.headers["content-type"]
            assert plain.headers.get("etag") == other.headers.get("etag")
        assert plain.headers["x-correlation-id"] == "c-1"
    assert 'route="/campaigns/{campaign_id}"' in metrics_text().decode()


async def test_the_fast_list_and_the_routed_list_answer_alike(
    settings: Settings, redis: Redis, producer: EventProducer, projectors: Projectors, query: QueryClient
) -> None:
    campaigns = [new_campaign("alice") for _ in range(3)]
    for campaign in campaigns[:2]:
        campaign.then("CampaignActivated")
    await publish_and_wait(producer, redis, settings, campaigns)
    first = await query.http.get("/campaigns", params={"limit": 1}, headers=query.admin())
    cursor = first.json()["next_cursor"]
    asked: list[dict[str, str | int]] = [
        {"status": "active", "sort": "-created_at", "limit": 1},
        {"sort": "name", "limit": 2},
        {"limit": 1, "cursor": cursor},
        {"cursor": "garbage!"},
        {"cursor": cursor, "sort": "name"},  # another sort's cursor: 422
    ]
    for params in asked:
        for who in (query.token("alice"), query.token("mallory"), query.admin(), {}):
            fast = await query.http.get("/campaigns", params=params, headers=who)
            # An unknown parameter sends the request through FastAPI (which ignores it).
            routed = await query.http.get("/campaigns", params={**params, "x": "1"}, headers=who)
            assert (fast.status_code, fast.content) == (routed.status_code, routed.content), (params, who)
            assert fast.headers["content-type"] == routed.headers["content-type"]
    assert 'route="/campaigns"' in metrics_text().decode()


async def test_a_deleted_campaign_is_gone_from_detail_and_lists_but_keeps_its_history(
    settings: Settings, redis: Redis, producer: EventProducer, projectors: Projectors, query: QueryClient
) -> None:
    kept, deleted = new_campaign("alice"), new_campaign("alice")
    deleted.then("CampaignActivated")
    deleted.then("CampaignDeleted")
    await record_in_log(settings, [*kept.events, *deleted.events])
    await publish_and_wait(producer, redis, settings, [kept, deleted])
    path = f"/campaigns/{deleted.aggregate_id}"

    assert (await query.http.get(path, headers=query.token("alice"))).status_code == 404
    assert (
        await query.http.get(path, params={"min_version": 3}, headers=query.token("alice"))
    ).status_code == 404
    listed = await walk(query, query.token("alice"), {})
    assert [c["id"] for c in listed] == [kept.aggregate_id]
    history = await query.http.get(f"{path}/history", headers=query.token("alice"))
    assert [e["event_type"] for e in history.json()["items"]] == [
        "CampaignCreated",
        "CampaignActivated",
        "CampaignDeleted",
    ]
    before = await query.http.get(path, params={"as_of_version": 2}, headers=query.token("alice"))
    assert before.json()["status"] == "active"
    at_deletion = await query.http.get(path, params={"as_of_version": 3}, headers=query.token("alice"))
    assert at_deletion.status_code == 404


async def test_history_lists_the_events_in_version_order_and_as_of_version_shows_the_past(
    settings: Settings, redis: Redis, producer: EventProducer, projectors: Projectors, query: QueryClient
) -> None:
    campaign = new_campaign("alice", name="First name")
    campaign.then("CampaignUpdated", {"name": "Second name", "tags": ["x", "y"]})
    campaign.then("CampaignActivated")
    campaign.then("CampaignPaused")
    await record_in_log(settings, list(reversed(campaign.events)))
    await publish_and_wait(producer, redis, settings, [campaign])
    path = f"/campaigns/{campaign.aggregate_id}"
    alice = query.token("alice")

    history = await query.http.get(f"{path}/history", headers=alice)
    assert history.status_code == 200
    assert history.json()["items"] == [orjson.loads(encode_event(e)) for e in campaign.events]

    first = (await query.http.get(path, params={"as_of_version": 1}, headers=alice)).json()
    assert (first["name"], first["status"], first["version"], first["tags"]) == (
        "First name",
        "draft",
        1,
        ["launch"],
    )
    third = (await query.http.get(path, params={"as_of_version": 3}, headers=alice)).json()
    assert (third["name"], third["status"], third["version"]) == ("Second name", "active", 3)
    # The fold of the log and the projection agree byte for byte on the current version.
    now = await query.http.get(path, headers=alice)
    as_of_now = await query.http.get(path, params={"as_of_version": 4}, headers=alice)
    assert now.content == as_of_now.content

    beyond = await query.http.get(path, params={"as_of_version": 9}, headers=alice)
    assert beyond.status_code == 404
    both = await query.http.get(path, params={"as_of_version": 1, "min_version": 1}, headers=alice)
    assert both.status_code == 422
    assert both.json()["errors"][0]["field"] == "as_of_version"


# ---------------------------------------------------------------- users and stats


async def test_users_me_is_the_callers_profile(
    settings: Settings, redis: Redis, producer: EventProducer, projectors: Projectors, query: QueryClient
) -> None:
    user = new_user("Someone@Example.com")
    user.then("UserLoggedIn")
    await publish_and_wait(producer, redis, settings, [user])
    me = await query.http.get("/users/me", headers=query.token(user.aggregate_id))
    assert me.status_code == 200
    profile = me.json()
    assert (profile["id"], profile["email"], profile["version"]) == (
        user.aggregate_id,
        "someone@example.com",
        2,
    )
    assert profile["last_login_at"] is not None
    stranger = await query.http.get("/users/me", headers=query.token("not-registered"))
    assert stranger.status_code == 404


async def test_stats_right_after_a_mixed_workload(
    settings: Settings, redis: Redis, producer: EventProducer, projectors: Projectors, query: QueryClient
) -> None:
    workload = mixed_workload(40, ["alice", "bob"])
    users = [new_user() for _ in range(6)]
    await publish_and_wait(producer, redis, settings, [*workload, *users])
    events = sum(len(a.events) for a in [*workload, *users])
    states = [s for s in (fold_campaign(c.events) for c in workload) if s]
    live = [s for s in states if s["status"] != "deleted"]

    assert (await query.http.get("/stats", headers=query.token("alice"))).status_code == 403
    response = await query.http.get("/stats", headers=query.admin())
    assert response.status_code == 200
    stats = response.json()
    assert stats["campaigns"]["total"] == len(live)
    assert stats["campaigns"]["deleted"] == len(states) - len(live)
    assert stats["campaigns"]["by_status"] == {
        s: sum(1 for c in live if c["status"] == s)
        for s in ("draft", "scheduled", "active", "paused", "completed")
    }
    assert stats["campaigns"]["by_channel"] == {
        ch: sum(1 for c in live if c["channel"] == ch) for ch in ("email", "sms", "push", "social")
    }
    for currency in ("EUR", "USD"):
        total = sum(Decimal(c["budget"]["amount"]) for c in live if c["budget"]["currency"] == currency)
        assert Decimal(stats["budget_by_currency"][currency]) == total
    assert stats["users"]["total"] == 6
    assert sum(m["count"] for m in stats["events_per_minute"]) == events
    assert len(stats["events_per_minute"]) == 60


# ---------------------------------------------------------------- errors and health


async def test_missing_or_forged_tokens_get_401_problems(query: QueryClient) -> None:
    for headers in ({}, {"Authorization": "Bearer not.a.jwt"}, {"Authorization": "Basic abc"}):
        response = await query.http.get("/campaigns", headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"] == PROBLEM
        assert response.headers["www-authenticate"].startswith("Bearer")
    # Signed by a key that is not the command API's, under the real key's kid.
    real = jwt.get_unverified_header(issue_access_token(query.settings, "alice", ["user"]))
    claims = jwt.decode(
        issue_access_token(query.settings, "alice", ["admin"]), options={"verify_signature": False}
    )
    token = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers=real)
    response = await query.http.get("/stats", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


async def test_the_events_contract_is_served_as_asyncapi(query: QueryClient) -> None:
    response = await query.http.get("/asyncapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["asyncapi"].startswith("3.")
    addresses = {channel["address"] for channel in document["channels"].values()}
    prefix = query.settings.topic_prefix
    assert addresses == {f"{prefix}{t}" for t in ("campaigns.events", "users.events")} | {
        f"{prefix}{t}.dlq" for t in ("campaigns.events", "users.events")
    }
    assert "EventEnvelope" in document["components"]["schemas"]


async def test_the_report_route_is_served_with_the_same_authentication(query: QueryClient) -> None:
    assert (await query.http.get("/campaigns/c1/report")).status_code == 401
    missing = await query.http.get("/campaigns/c1/report", headers=query.admin())
    assert missing.status_code == 404
    assert missing.headers["content-type"] == PROBLEM


async def test_bad_query_parameters_get_422_naming_the_parameter(query: QueryClient) -> None:
    cases = {
        "limit": {"limit": 0},
        "sort": {"sort": "budget"},
        "status": {"status": "deleted"},
        "cursor": {"cursor": "garbage!"},
    }
    for field, params in cases.items():
        response = await query.http.get("/campaigns", params=params, headers=query.admin())
        assert response.status_code == 422, field
        assert response.headers["content-type"] == PROBLEM
        assert [e["field"] for e in response.json()["errors"]] == [field]
    page = await query.http.get("/campaigns", params={"sort": "name", "limit": 1}, headers=query.admin())
    assert page.status_code == 200
    min_version = await query.http.get("/campaigns/x", params={"min_version": 0}, headers=query.admin())
    assert min_version.json()["errors"][0]["field"] == "min_version"


async def test_a_cursor_is_refused_under_another_sort_order(
    settings: Settings, redis: Redis, producer: EventProducer, projectors: Projectors, query: QueryClient
) -> None:
    await publish_and_wait(producer, redis, settings, [new_campaign("alice") for _ in range(3)])
    first = await query.http.get("/campaigns", params={"limit": 1}, headers=query.admin())
    cursor = first.json()["next_cursor"]
    assert cursor
    other = await query.http.get(
        "/campaigns", params={"cursor": cursor, "sort": "name"}, headers=query.admin()
    )
    assert other.status_code == 422
    assert "sort=-created_at" in other.json()["detail"]


async def test_ready_only_while_the_projectors_report(
    settings: Settings, redis: Redis, query: QueryClient
) -> None:
    not_yet = await query.http.get("/health/ready")
    assert not_yet.status_code == 503
    assert {e["field"] for e in not_yet.json()["errors"]} == {
        "projector.campaigns",
        "projector.users",
        "projector.stats",
    }
    async with Projectors(settings):

        async def ready() -> bool:
            return (await query.http.get("/health/ready")).status_code == 200

        await wait_until(ready, 10, "readiness")
    live = await query.http.get("/health/live")
    assert live.json() == {"status": "ok"}


async def test_reads_follow_the_generation_pointer_as_soon_as_it_is_swapped(
    settings: Settings, redis: Redis, query: QueryClient
) -> None:
    campaign = new_campaign("alice", name="Live name")
    projection = campaigns_projection(settings.redis_prefix, settings.read_model_buckets)
    await projection.apply(redis, "campaigns.1", campaign.events)
    rebuilt = new_campaign("alice", name="Rebuilt name")
    rebuilt.aggregate_id = campaign.aggregate_id
    rebuilt.events.clear()
    rebuilt.then("CampaignCreated", campaign_payload("alice", name="Rebuilt name"))
    await projection.apply(redis, "campaigns.2", rebuilt.events, announce=False)
    path = f"/campaigns/{campaign.aggregate_id}"
    assert (await query.http.get(path, headers=query.token("alice"))).json()["name"] == "Live name"

    await swap_generation(redis, settings.redis_prefix, "campaigns", "campaigns.2")

    async def swapped() -> bool:
        return (await query.http.get(path, headers=query.token("alice"))).json()["name"] == "Rebuilt name"

    await wait_until(swapped, 0.5, "the swap announcement")  # well within the 1 s fallback poll


async def test_without_redis_the_api_is_live_but_not_ready(settings: Settings) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    unreachable = settings.model_copy(
        update={
            "redis_url": f"redis://{nowhere}/0",
            "redis_cluster_nodes": nowhere if settings.redis_cluster_addresses else "",
        }
    )
    async with query_app(unreachable) as query:
        assert (await query.http.get("/health/live")).status_code == 200
        ready = await query.http.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["errors"][0]["field"] == "redis"
        read = await query.http.get("/campaigns/some-id", headers=query.token("alice"))
        assert read.status_code == 503
        assert read.headers["content-type"] == PROBLEM
        assert read.headers["retry-after"] == "1"
