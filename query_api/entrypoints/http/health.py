"""GET /health/ready: Redis answers and every projector has reported recently."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Depends
from starlette.responses import Response

from query_api.entrypoints.http.dependencies import ReadSide, read_side
from readmodels.generations import PROJECTIONS
from readmodels.status import heartbeat_age, read_status
from service_runtime.openapi import ok, problem_responses
from service_runtime.problems import problem_response

router = APIRouter(tags=["ops"])


@router.get(
    "/health/ready",
    summary="Redis answers and the projections are fresh",
    response_model=None,
    responses={
        **ok(200, "Ready", content={"application/json": {"schema": {"type": "object"}}}),
        **problem_responses(503, descriptions={503: "Not ready: what is missing or stale is named"}),
    },
)
async def ready(side: ReadSide = Depends(read_side)) -> Response:
    limit = side.settings.freshness_limit_seconds
    try:
        await side.redis.ping()
        statuses = await read_status(side.redis, side.settings.redis_prefix, list(PROJECTIONS))
    except Exception as exc:
        return problem_response(
            503, "Redis does not answer", errors=[{"field": "redis", "reason": type(exc).__name__}]
        )
    problems = []
    projectors = {}
    for name, status in statuses.items():
        age = heartbeat_age(status)
        projectors[name] = {"heartbeat_age_seconds": None if age is None else round(age, 1)}
        if age is None:
            problems.append({"field": f"projector.{name}", "reason": "has never reported"})
        elif age > limit:
            problems.append(
                {"field": f"projector.{name}", "reason": f"silent for {age:.0f}s (limit {limit:.0f}s)"}
            )
    if problems:
        return problem_response(503, "the read models are not fresh", errors=problems)
    return Response(
        orjson.dumps({"status": "ready", "projectors": projectors}), media_type="application/json"
    )
