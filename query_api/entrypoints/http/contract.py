"""GET /asyncapi.json: the events contract, generated from the declared table in `events/`."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from events import Topics
from events.asyncapi import asyncapi_document
from query_api.entrypoints.http.dependencies import ReadSide, read_side
from service_runtime.problems import Problem

router = APIRouter(tags=["ops"])


@router.get(
    "/asyncapi.json",
    summary="The AsyncAPI 3.0 document of the domain events, their senders and their consumer groups",
    description="Topic and consumer-group names carry this deployment's topic prefix.",
    responses={200: {"description": "The AsyncAPI document", "content": {"application/json": {}}}},
)
async def asyncapi(request: Request, side: ReadSide = Depends(read_side)) -> Response:
    if side.settings.app_env == "production":  # like /openapi.json: not published in production
        raise Problem(404, "not found")
    # Built once per process: it never changes while the process runs.
    document: bytes | None = getattr(request.app.state, "asyncapi", None)
    if document is None:
        document = orjson.dumps(asyncapi_document(Topics(side.settings.topic_prefix)))
        request.app.state.asyncapi = document
    return Response(document, media_type="application/json")
