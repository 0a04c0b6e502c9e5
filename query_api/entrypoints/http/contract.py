"""GET /asyncapi.json: the events contract (`events.asyncapi`), built without any broker or process."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from events import Topics
from events.asyncapi import asyncapi_document
from query_api.entrypoints.http.dependencies import ReadSide, read_side

router = APIRouter(tags=["ops"])


@router.get("/asyncapi.json", summary="The AsyncAPI document of the domain events and their consumers")
async def asyncapi(request: Request, side: ReadSide = Depends(read_side)) -> Response:
    # Built once per process: it never changes.
    document: bytes | None = getattr(request.app.state, "asyncapi", None)
    if document is None:
        document = orjson.dumps(asyncapi_document(topics=Topics(side.settings.topic_prefix)))
        request.app.state.asyncapi = document
    return Response(document, media_type="application/json")
