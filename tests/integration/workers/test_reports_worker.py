"""The reports worker on real Kafka, MongoDB and Redis, and its report served by the query API route."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from events import EventEnvelope, Topics, encode_event, to_log_document
from query_api.entrypoints.http import reports
from query_api.entrypoints.http.authentication import TokenVerifier
from query_api.entrypoints.http.dependencies import ReadSide, read_side
from readmodels.groups import REPORTS_GROUP
from readmodels.groups import worker_group as group_id
from service_runtime.problems import PROBLEM_JSON, install_problem_handlers
from service_runtime.redis_client import connect_redis
from service_runtime.sessions import SessionCutoffs
from service_runtime.settings import Settings
from service_runtime.tokens import issue_access_token
from tests.integration.workers.harness import committed_offsets, metric, produce, running_workers, wait_for
from tests.support import loopback
from tests.unit.workers.campaign_history import completed_campaign


@pytest.fixture
async def query_api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The report router in a small FastAPI app, called in-process."""
    redis = connect_redis(settings)
    app = FastAPI()
    install_problem_handlers(app)
    side = ReadSide(
        settings=settings,
        redis=redis,
        read_models=None,  # type: ignore[arg-type]
        waiters=None,  # type: ignore[arg-type]
        events_log=None,  # type: ignore[arg-type]
        waiter_quota=None,  # type: ignore[arg-type]
        tokens=TokenVerifier(
            settings,
            SessionCutoffs(
                redis,
                prefix=settings.redis_prefix,
                check_seconds=settings.session_check_seconds,
                token_ttl_seconds=settings.access_token_ttl_seconds,
            ),
        ),
    )
    app.dependency_overrides[read_side] = lambda: side
    app.include_router(reports.router)
    transport = httpx.ASGITransport(app=app)
    async with loopback.client(transport=transport, base_url="http://query-api") as client:
        yield client
    await redis.aclose()


def bearer(settings: Settings, user_id: str, roles: list[str] | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_access_token(settings, user_id, roles or ['user'])}"}


async def seed_log(settings: Settings, history: list[EventEnvelope]) -> None:
    client: AsyncMongoClient = AsyncMongoClient(settings.mongo_url)
    try:
        await client[settings.mongo_db]["events"].insert_many([to_log_document(e) for e in history])
    finally:
        await client.close()


async def test_completed_campaign_report_is_built_once_and_served_as_json_and_csv(
    settings: Settings, query_api: httpx.AsyncClient
) -> None:
    campaign_id, owner = uuid.uuid4().hex, f"owner-{uuid.uuid4().hex[:8]}"
    history = completed_campaign(campaign_id, owner_id=owner)
    await seed_log(settings, history)
    topic = Topics(settings.topic_prefix).campaigns
    key = campaign_id.encode()
    built_before = metric("worker_reports_built_total", worker="reports")

    async with running_workers(settings):
        # The relay publishes every event; the completion arrives twice (a redelivery).
        records = [(key, encode_event(e)) for e in history]
        await produce(settings, topic, [*records, records[-1]])

        async def all_committed() -> bool:
            return await committed_offsets(settings, group_id(settings, REPORTS_GROUP), topic) == 7

        await wait_for(all_committed, what="the campaign's events consumed and committed")

    assert metric("worker_reports_built_total", worker="reports") == built_before + 1

    as_json = await query_api.get(f"/campaigns/{campaign_id}/report", headers=bearer(settings, owner))
    assert as_json.status_code == 200, as_json.text
    assert as_json.headers["content-type"] == "application/json"
    report = as_json.json()
    assert report["campaign_id"] == campaign_id
    assert report["owner_id"] == owner
    assert report["version"] == 6
    assert report["budget"] == {"amount": "3000.00", "currency": "EUR"}
    assert report["events_by_type"] == {
        "CampaignActivated": 2,
        "CampaignCompleted": 1,
        "CampaignCreated": 1,
        "CampaignPaused": 1,
        "CampaignUpdated": 1,
    }
    assert [(e["event_type"], e["version"]) for e in report["timeline"]] == [
        (e.event_type, e.aggregate_version) for e in history
    ]
    assert report["timeline"][2]["actor_id"] == owner
    assert report["timeline"][2]["occurred_at"].startswith("2027-03-01T09:10:00")
    assert report["planned_duration_seconds"] == 30 * 24 * 3600
    assert report["actual_duration_seconds"] == 90 * 60  # 60 min active, 30 paused, 30 active
    assert report["paused_duration_seconds"] == 30 * 60

    as_csv = await query_api.get(
        f"/campaigns/{campaign_id}/report", headers={**bearer(settings, owner), "Accept": "text/csv"}
    )
    assert as_csv.status_code == 200, as_csv.text
    assert as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    summary = {r["name"]: r["value"] for r in rows if r["section"] == "summary"}
    assert summary["campaign_id"] == campaign_id
    assert summary["budget_amount"] == "3000.00" and summary["budget_currency"] == "EUR"
    assert float(summary["planned_duration_seconds"]) == 30 * 24 * 3600
    assert float(summary["actual_duration_seconds"]) == 90 * 60
    assert {r["name"]: r["value"] for r in rows if r["section"] == "events_by_type"}[
        "CampaignActivated"
    ] == "2"
    timeline = [r for r in rows if r["section"] == "timeline"]
    assert [(r["name"], r["version"], r["actor_id"]) for r in timeline] == [
        (e.event_type, str(e.aggregate_version), e.actor_id) for e in history
    ]

    admin = await query_api.get(
        f"/campaigns/{campaign_id}/report", headers=bearer(settings, "someone-admin", ["user", "admin"])
    )
    assert admin.status_code == 200
    assert admin.json() == report


async def test_report_is_404_for_another_user_and_for_a_campaign_without_report_and_401_without_token(
    settings: Settings, query_api: httpx.AsyncClient
) -> None:
    campaign_id, owner = uuid.uuid4().hex, "owner-1"
    history = completed_campaign(campaign_id, owner_id=owner)
    await seed_log(settings, history)
    async with running_workers(settings):
        await produce(
            settings,
            Topics(settings.topic_prefix).campaigns,
            [(campaign_id.encode(), encode_event(history[-1]))],
        )

        async def built() -> bool:
            response = await query_api.get(
                f"/campaigns/{campaign_id}/report", headers=bearer(settings, owner)
            )
            return response.status_code == 200

        await wait_for(built, what="the report")

    stranger = await query_api.get(f"/campaigns/{campaign_id}/report", headers=bearer(settings, "intruder"))
    not_completed = await query_api.get(
        f"/campaigns/{uuid.uuid4().hex}/report", headers=bearer(settings, owner)
    )
    for response in (stranger, not_completed):
        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM_JSON
        assert "has no report" in response.json()["detail"]
        assert "once the campaign is completed" in response.json()["detail"]

    anonymous = await query_api.get(f"/campaigns/{campaign_id}/report")
    forged = await query_api.get(
        f"/campaigns/{campaign_id}/report", headers={"Authorization": "Bearer not.a.token"}
    )
    for response in (anonymous, forged):
        assert response.status_code == 401
        assert response.headers["content-type"] == PROBLEM_JSON
        assert response.headers["www-authenticate"].startswith("Bearer")
