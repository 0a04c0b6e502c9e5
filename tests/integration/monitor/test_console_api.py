"""The console's actions over HTTP on a served query API, against real Kafka, MongoDB and Redis:
dead letters listed and re-driven by an admin, every action audited, non-admins refused."""

from __future__ import annotations

from typing import Any

import orjson
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from events import Topics
from projectors.adapters.redis_projection import all_projections, campaigns_projection
from projectors.domain.outcomes import Outcome
from projectors.entrypoints.console_operations import console_operations
from projectors.entrypoints.projectors import Projectors
from readmodels.keyspace import CampaignKeys, generation_base, monitor_channel, pointer_key
from readmodels.status import record_batch
from service_runtime.redis_client import open_pubsub
from service_runtime.settings import Settings
from tests.integration.deadletters.test_dlq_operations import dead_letter_written_on_a_timeout
from tests.integration.monitor.conftest import ServedQueryApi
from tests.integration.read_side.conftest import projectors, record_in_log, wait_until
from tests.integration.read_side.workload import new_campaign
from tests.support import loopback

__all__ = ["projectors"]


async def collection(settings: Settings, name: str) -> list[dict[str, Any]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url)
    try:
        return await client[settings.mongo_db][name].find().to_list(None)
    finally:
        await client.close()


def counted(action: str, result: str) -> float:
    return REGISTRY.get_sample_value("console_actions_total", {"action": action, "result": result}) or 0.0


async def test_a_non_admin_is_refused_every_console_route(query_api: ServedQueryApi) -> None:
    user = query_api.bearer(query_api.token("a-user", ("user",)))
    async with loopback.client(base_url=query_api.url, timeout=30) as client:
        assert (await client.get("/console/dead-letters")).status_code == 401
        assert (await client.get("/console/dead-letters", headers=user)).status_code == 403
        assert (await client.get("/console/audit", headers=user)).status_code == 403
        refused = await client.post(
            "/console/dead-letters/redrive", headers=user, json={"ref": "x.dlq:0:0", "confirm": True}
        )
        assert refused.status_code == 403
    assert await collection(query_api.settings, "console_audit") == []


async def test_a_redrive_must_be_confirmed_and_name_a_record_and_the_refusal_is_audited(
    query_api: ServedQueryApi,
) -> None:
    admin = query_api.bearer(query_api.token())
    dlq_topic = Topics.dlq(Topics(query_api.settings.topic_prefix).campaigns)
    before = counted("dead-letters.redrive", "refused")
    async with loopback.client(base_url=query_api.url, timeout=30) as client:
        unconfirmed = await client.post(
            "/console/dead-letters/redrive", headers=admin, json={"ref": f"{dlq_topic}:0:0"}
        )
        assert unconfirmed.status_code == 422
        assert unconfirmed.headers["content-type"].startswith("application/problem+json")
        assert unconfirmed.json()["errors"][0]["field"] == "confirm"
        foreign = await client.post(
            "/console/dead-letters/redrive", headers=admin, json={"ref": "other.dlq:0:1", "confirm": True}
        )
        assert foreign.status_code == 422 and foreign.json()["errors"][0]["field"] == "ref"
        audit = (await client.get("/console/audit", headers=admin)).json()["items"]
    assert [line["result"] for line in audit] == ["refused", "refused"]
    assert {line["user_id"] for line in audit} == {"the-admin"}
    assert counted("dead-letters.redrive", "refused") == before + 2


async def test_an_admin_re_drives_one_dead_letter_it_is_applied_and_both_audits_are_written(
    query_api: ServedQueryApi, redis: Redis, projectors: Projectors
) -> None:
    settings = query_api.settings
    dlq_topic = Topics.dlq(Topics(settings.topic_prefix).campaigns)
    campaign = new_campaign("owner-1")
    await dead_letter_written_on_a_timeout(settings, campaign.events[0], origin_offset=7)
    admin = query_api.bearer(query_api.token())
    before = counted("dead-letters.redrive", "ok")

    async with loopback.client(base_url=query_api.url, timeout=60) as client:
        listed = await client.get("/console/dead-letters", headers=admin)
        assert listed.status_code == 200
        (topic,) = [t for t in listed.json()["topics"] if t["topic"] == dlq_topic]
        assert topic["pending"] == 1
        (letter,) = topic["records"]
        assert letter["aggregate_id"] == campaign.aggregate_id
        assert letter["reason"].startswith("TimeoutError") and letter["attempts"] == 1
        assert letter["redriven"] is False

        redriven = await client.post(
            "/console/dead-letters/redrive", headers=admin, json={"ref": letter["ref"], "confirm": True}
        )
        assert redriven.status_code == 200, redriven.text
        assert redriven.json()["redriven"] == 1

        keys = CampaignKeys(
            generation_base(settings.redis_prefix, "campaigns.1"), settings.read_model_buckets
        )

        async def applied() -> bool:
            return await redis.hget(keys.campaign(campaign.aggregate_id), "v") == b"1"

        await wait_until(applied, 30, "the re-driven campaign in its read model")

        again = await client.post(
            "/console/dead-letters/redrive", headers=admin, json={"ref": letter["ref"], "confirm": True}
        )
        assert again.status_code == 404
        audit = (await client.get("/console/audit", headers=admin)).json()["items"]

    assert [line["result"] for line in audit] == ["nothing", "ok"]
    done = audit[1]
    assert done["action"] == "dead-letters.redrive" and done["user_id"] == "the-admin"
    assert done["target"] == {"ref": letter["ref"]} and done["detail"]["redriven"] == 1
    assert done["at"].endswith("Z")
    (dlq_audit,) = await collection(settings, "dlq_audit")
    assert dlq_audit["actor"] == "console:the-admin" and dlq_audit["result"] == "ok"
    assert str(dlq_audit["_id"]) == done["detail"]["dlq_audit_id"]
    assert counted("dead-letters.redrive", "ok") == before + 1


async def test_a_verify_is_queued_claimed_by_a_projectors_process_and_its_result_published(
    query_api: ServedQueryApi, redis: Redis
) -> None:
    settings = query_api.settings
    admin = query_api.bearer(query_api.token())
    messages = await open_pubsub(redis)
    await messages.subscribe(monitor_channel(settings.redis_prefix))
    assert (await messages.get_message(timeout=5))["type"] == "subscribe"  # type: ignore[index]
    async with loopback.client(base_url=query_api.url, timeout=30) as client:
        wrong = await client.post("/console/projections/verify", headers=admin, json={"projection": "nope"})
        assert wrong.status_code == 422 and wrong.json()["errors"][0]["field"] == "projection"
        queued = await client.post("/console/projections/verify", headers=admin, json={"projection": "users"})
        assert queued.status_code == 202
        operation_id = queued.json()["id"]
        listed = (await client.get("/console/operations", headers=admin)).json()["items"]
        assert [(op["id"], op["state"]) for op in listed] == [(operation_id, "queued")]

        async with console_operations(settings, redis):  # what `campaigns serve projectors` runs

            async def finished() -> bool:
                (op,) = (await client.get("/console/operations", headers=admin)).json()["items"]
                return bool(op["state"] not in ("queued", "running"))

            await wait_until(finished, 60, "the verify to finish")
        (op,) = (await client.get("/console/operations", headers=admin)).json()["items"]
        audit = (await client.get("/console/audit", headers=admin)).json()["items"]
    # Nothing was ever projected: the empty live generation matches the empty events log.
    assert op["state"] == "ok", op
    assert op["result"]["projections"] == [{"projection": "users", "matches": True, "generation": "users.1"}]
    published = []
    while (message := await messages.get_message(ignore_subscribe_messages=True, timeout=1)) is not None:
        published.append(orjson.loads(message["data"]))
    await messages.aclose()
    states = [m["state"] for m in published if m.get("type") == "operation" and m["id"] == operation_id]
    assert states[0] == "queued" and "running" in states and states[-1] == "ok"
    # The projectors process wrote the result into the request's audit line.
    assert [(line["action"], line["result"]) for line in audit] == [
        ("projections.verify", "ok"),
        ("projections.verify", "refused"),
    ]
    assert audit[0]["detail"]["operation_id"] == operation_id
    assert audit[0]["detail"]["result"] == op["result"] and audit[0]["finished_at"].endswith("Z")
    assert audit[0]["id"] == queued.json()["audit_id"]


async def test_a_rebuild_must_be_confirmed_then_runs_in_a_projectors_process_and_is_audited_with_its_result(
    query_api: ServedQueryApi, redis: Redis
) -> None:
    settings = query_api.settings.model_copy(update={"console_rebuild_grace_seconds": 0.0})
    admin = query_api.bearer(query_api.token())
    async with loopback.client(base_url=query_api.url, timeout=30) as client:
        assert (await client.get("/console/projections/last", headers=admin)).json() == {
            "verify": None,
            "rebuild": None,
        }
        user = query_api.bearer(query_api.token("a-user", ("user",)))
        assert (await client.post("/console/projections/rebuild", headers=user, json={})).status_code == 403
        unconfirmed = await client.post(
            "/console/projections/rebuild", headers=admin, json={"projection": "users"}
        )
        assert unconfirmed.status_code == 422 and unconfirmed.json()["errors"][0]["field"] == "confirm"
        queued = await client.post(
            "/console/projections/rebuild", headers=admin, json={"projection": "users", "confirm": True}
        )
        assert queued.status_code == 202, queued.text
        operation_id = queued.json()["id"]

        async with console_operations(settings, redis):

            async def finished() -> bool:
                ops = (await client.get("/console/operations", headers=admin)).json()["items"]
                return bool(ops[0]["state"] not in ("queued", "running"))

            await wait_until(finished, 60, "the rebuild to finish")
        (op,) = (await client.get("/console/operations", headers=admin)).json()["items"]
        last = (await client.get("/console/projections/last", headers=admin)).json()
        audit = (await client.get("/console/audit", headers=admin)).json()["items"]
    assert op["id"] == operation_id and op["kind"] == "rebuild" and op["state"] == "ok", op
    (rebuilt,) = op["result"]["projections"]
    assert rebuilt["projection"] == "users" and rebuilt["generation"] != rebuilt["old_generation"]
    assert [(line["action"], line["result"]) for line in audit] == [
        ("projections.rebuild", "ok"),
        ("projections.rebuild", "refused"),
    ]
    assert last["verify"] is None
    assert last["rebuild"]["id"] == queued.json()["audit_id"]
    assert last["rebuild"]["detail"]["result"]["projections"][0]["generation"] == rebuilt["generation"]
    # The swap happened: the live generation is the rebuilt one.
    live = await redis.get(pointer_key(settings.redis_prefix, "users"))
    assert live is not None and live.decode() == rebuilt["generation"]


async def test_a_console_sign_in_and_out_are_audited_in_the_tokens_name_and_a_non_admin_is_refused(
    query_api: ServedQueryApi,
) -> None:
    admin = query_api.bearer(query_api.token())
    user = query_api.bearer(query_api.token("a-user", ("user",)))
    before = (counted("console.sign-in", "ok"), counted("console.sign-in", "refused"))
    async with loopback.client(base_url=query_api.url, timeout=30) as client:
        assert (await client.post("/console/session", json={"action": "sign-in"})).status_code == 401
        wrong = await client.post("/console/session", headers=admin, json={"action": "sign-up"})
        assert wrong.status_code == 422
        assert wrong.headers["content-type"].startswith("application/problem+json")
        # Who is the token's user: a field naming someone else is not read.
        signed_in = await client.post(
            "/console/session", headers=admin, json={"action": "sign-in", "user_id": "someone-else"}
        )
        assert signed_in.status_code == 200
        refused = await client.post("/console/session", headers=user, json={"action": "sign-in"})
        assert refused.status_code == 403
        assert (
            await client.post("/console/session", headers=admin, json={"action": "sign-out"})
        ).status_code == 200
        audit = (await client.get("/console/audit", headers=admin)).json()["items"]
    assert [(line["user_id"], line["action"], line["result"]) for line in audit] == [
        ("the-admin", "console.sign-out", "ok"),
        ("a-user", "console.sign-in", "refused"),
        ("the-admin", "console.sign-in", "ok"),
    ]
    assert audit[2]["id"] == signed_in.json()["audit_id"]
    assert (counted("console.sign-in", "ok"), counted("console.sign-in", "refused")) == (
        before[0] + 1,
        before[1] + 1,
    )


async def test_the_gaps_view_lists_each_parked_event_with_the_gap_it_waits_on_and_the_repairs(
    query_api: ServedQueryApi, redis: Redis
) -> None:
    settings = query_api.settings
    admin = query_api.bearer(query_api.token())
    campaign = new_campaign("owner-1")
    campaign.then("CampaignActivated")
    campaign.then("CampaignPaused")
    # Version 3 projected while the read models hold version 1: parked in each projection of campaigns.
    for projection in all_projections(settings.redis_prefix, settings.read_model_buckets):
        if "campaign" not in projection.aggregate_types:
            continue
        generation = f"{projection.name}.1"
        await projection.apply(redis, generation, [campaign.events[0]])
        parked = await projection.apply(redis, generation, [campaign.events[2]])
        assert [o.outcome for o in parked.outcomes] == [Outcome.PARKED], projection.name
    await record_batch(
        redis,
        settings.redis_prefix,
        "campaigns",
        counters={"gaps_repaired_total": 1},
        fields={},
        repair={"kind": "gap", "aggregate": "campaign:other", "filled": [2], "unfillable": [], "missing": []},
    )
    await record_in_log(settings, campaign.events)  # names what a projection parked unnamed
    async with loopback.client(base_url=query_api.url, timeout=30) as client:
        listed = await client.get("/console/gaps", headers=admin)
        assert listed.status_code == 200, listed.text
        by_name = {p["projection"]: p for p in listed.json()["projections"]}
        for bad, field in (
            ({"projection": "nope"}, "projection"),
            ({"limit": "0"}, "limit"),
            ({"limit": str(settings.console_parked_page_max + 1)}, "limit"),
            ({"cursor": "0.0"}, "cursor"),
            ({"projection": "stats", "cursor": "zz"}, "cursor"),
        ):
            refused = await client.get("/console/gaps", headers=admin, params=bad)
            assert refused.status_code == 422, (bad, refused.text)
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert field in str(refused.json()), (bad, refused.json())
        user = query_api.bearer(query_api.token("a-user", ("user",)))
        assert (await client.get("/console/gaps", headers=user)).status_code == 403
    assert set(by_name) == {"campaigns", "stats", "users"}
    for name in ("campaigns", "stats"):
        (aggregate,) = by_name[name]["parked"]
        assert aggregate["aggregate_id"] == campaign.aggregate_id
        assert (aggregate["read_version"], aggregate["missing"], aggregate["parked_count"]) == (1, [2], 1)
        (event,) = aggregate["events"]
        assert (event["version"], event["event_type"]) == (3, "CampaignPaused"), name
        assert event["parked_at"] and event["parked_at"].endswith("Z"), name
        assert by_name[name]["next_cursor"] is None
    assert by_name["users"]["parked"] == []
    (repair,) = by_name["campaigns"]["repairs"]
    assert (repair["kind"], repair["aggregate"], repair["filled"]) == ("gap", "campaign:other", [2])
    assert by_name["campaigns"]["status"]["gaps_repaired_total"] == "1"


async def test_the_parked_listing_pages_through_every_bucket(query_api: ServedQueryApi, redis: Redis) -> None:
    settings = query_api.settings
    admin = query_api.bearer(query_api.token())
    projection = campaigns_projection(settings.redis_prefix, settings.read_model_buckets)
    ids = set()
    for n in range(5):
        campaign = new_campaign(f"owner-{n}")
        campaign.then("CampaignActivated")
        campaign.then("CampaignPaused")
        await projection.apply(redis, "campaigns.1", [campaign.events[0], campaign.events[2]])
        ids.add(campaign.aggregate_id)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    async with loopback.client(base_url=query_api.url, timeout=30) as client:
        while True:
            params = {"projection": "campaigns", "limit": "2", **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/console/gaps", headers=admin, params=params)).json()["projections"][0]
            seen += [a["aggregate_id"] for a in page["parked"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None or pages > 5 + settings.read_model_buckets:
                break
    assert sorted(seen) == sorted(ids)  # each once, whatever the buckets
