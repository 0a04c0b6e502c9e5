"""Operations routes and the published contract: readiness, liveness, metrics, OpenAPI."""

from __future__ import annotations

import httpx

from service_runtime.http import metrics_text
from service_runtime.settings import Settings
from tests.integration.command_api.conftest import running_api
from tests.integration.command_api.test_auth_api import assert_problem


async def test_ready_when_mongodb_and_kafka_answer(api: httpx.AsyncClient) -> None:
    response = await api.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"mongodb": "ok", "kafka": "ok"}}


async def test_not_ready_while_kafka_is_unreachable(settings: Settings) -> None:
    async with running_api(settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:9"})) as api:
        problem = assert_problem(await api.get("/health/ready"), 503)
        assert problem["errors"] == [{"field": "kafka", "reason": problem["errors"][0]["reason"]}]  # type: ignore[index]


async def test_not_ready_while_mongodb_is_unreachable(settings: Settings) -> None:
    unreachable = "mongodb://127.0.0.1:9/?directConnection=true&serverSelectionTimeoutMS=300"
    async with running_api(settings.model_copy(update={"mongo_url": unreachable})) as api:
        problem = assert_problem(await api.get("/health/ready"), 503)
        assert "mongodb" in str(problem["detail"])
        assert (await api.get("/health/live")).status_code == 200


async def test_metrics_count_the_command_apis_requests(api: httpx.AsyncClient) -> None:
    await api.get("/health/ready")
    # Not on the public port: the services serve them on an internal listener.
    assert (await api.get("/metrics")).status_code == 404
    text = metrics_text().decode()
    assert 'http_requests_total{method="GET"' in text
    assert 'service="command-api"' in text


async def test_openapi_documents_every_command_route_and_its_problem_answers(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    expected = {
        ("post", "/auth/register"): {"201", "409", "422", "413"},
        ("post", "/auth/login"): {"200", "401", "422", "429"},
        ("post", "/auth/refresh"): {"200", "401", "422"},
        ("post", "/auth/logout"): {"204", "422"},
        ("post", "/campaigns"): {"201", "401", "422", "413"},
        ("patch", "/campaigns/{campaign_id}"): {"200", "401", "404", "409", "412", "422", "428"},
        ("post", "/campaigns/{campaign_id}/activate"): {"200", "401", "404", "409", "412"},
        ("post", "/campaigns/{campaign_id}/pause"): {"200", "401", "404", "409", "412"},
        ("post", "/campaigns/{campaign_id}/complete"): {"200", "401", "404", "409", "412"},
        ("delete", "/campaigns/{campaign_id}"): {"204", "401", "404", "412"},
        ("get", "/health/ready"): {"200", "503"},
    }
    for (method, path), statuses in expected.items():
        responses = spec["paths"][path][method]["responses"]
        assert statuses <= set(responses), (method, path, sorted(responses))
        problem = next(r for code, r in responses.items() if code.startswith(("4", "5")))
        assert "application/problem+json" in problem["content"]
    create = spec["paths"]["/campaigns"]["post"]
    assert create["security"] == [{"HTTPBearer": []}]
    assert any(p["name"] == "Idempotency-Key" for p in create["parameters"])
    body_schema = spec["components"]["schemas"]["CampaignCreateRequest"]
    assert body_schema["additionalProperties"] is False
    assert not {"owner_id", "status", "version"} & set(body_schema["properties"])
