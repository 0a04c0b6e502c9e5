"""GET /stats (admin): campaign counts, budgets per currency, users, events per minute."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Depends
from starlette.responses import Response

from query_api.domain.stats import stats_document, window
from query_api.entrypoints.http.dependencies import ReadSide, admin, read_side
from query_api.entrypoints.http.schemas import StatsView, problems
from service_runtime.openapi import ok
from service_runtime.tokens import Principal

router = APIRouter(tags=["stats"])


@router.get(
    "/stats",
    summary="Figures over all campaigns and users (admin only)",
    response_model=None,
    responses={**ok(200, "The figures", model=StatsView), **problems(401, 403, 503)},
)
async def stats(principal: Principal = Depends(admin), side: ReadSide = Depends(read_side)) -> Response:
    minutes = window()
    counts, budget, per_minute = await side.read_models.stats(minutes)
    return Response(
        orjson.dumps(stats_document(counts, budget, minutes, per_minute)), media_type="application/json"
    )
