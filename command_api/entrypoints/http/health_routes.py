"""/health/ready: this API can take commands only while MongoDB and Kafka both answer."""

from __future__ import annotations

from fastapi import APIRouter

from command_api.entrypoints.http.dependencies import Side
from command_api.entrypoints.http.errors import problem_responses
from service_runtime.problems import Problem

router = APIRouter(tags=["ops"])


@router.get(
    "/health/ready",
    summary="MongoDB and Kafka answer",
    responses=problem_responses(
        503, descriptions={503: "Not ready: each server that does not answer is named"}
    ),
)
async def ready(side: Side) -> dict[str, object]:
    problems = await side.readiness.problems()
    if problems:
        raise Problem(
            503,
            "not ready: " + ", ".join(sorted(problems)),
            errors=[{"field": name, "reason": reason} for name, reason in sorted(problems.items())],
            headers={"Retry-After": "2"},
        )
    return {"status": "ready", "checks": {"mongodb": "ok", "kafka": "ok"}}
