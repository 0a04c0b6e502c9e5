"""GET /campaigns/{id} (no query string) answered in pure ASGI, ahead of FastAPI.

This is the read the API exists for, and FastAPI's per-request machinery (its server-error,
telemetry and body-limit layers, route matching, request objects, dependency and parameter
handling) cost more than the read itself. `QueryAPI` hands such a request to the HTTP basics
(correlation id, limits, metrics labelled with the route's template) around `CampaignRead`
before any of that; everything else, including a query string such as min_version or
as_of_version, goes through FastAPI, whose route also documents this one in OpenAPI. The same
rules apply through the same functions (`TokenVerifier.authenticate`, `ReadModels.campaign`,
`readable_document`).
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from query_api.adapters.redis_multiplexer import REDIS_DOWN
from query_api.entrypoints.http.campaigns import MAX_ID_LENGTH, etag, readable_document
from query_api.entrypoints.http.dependencies import ReadSide
from service_runtime.problems import Problem, problem_response

PREFIX = "/campaigns/"
_JSON = (b"content-type", b"application/json")


class QueryAPI(FastAPI):
    """FastAPI, except that the hot read goes to `fast_read` (set once the app is built)."""

    fast_read: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast_read is not None and scope["type"] == "http" and CampaignRead.takes(scope):
            await self.fast_read(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class CampaignRead:
    """Answers the requests `takes` accepts; an unexpected error is uvicorn's plain 500."""

    def __init__(self, route: BaseRoute | None = None) -> None:
        self.route = route

    @staticmethod
    def takes(scope: Scope) -> bool:
        if scope["method"] != "GET" or scope["query_string"]:
            return False
        path: str = scope["path"]
        return path.startswith(PREFIX) and len(path) > len(PREFIX) and "/" not in path[len(PREFIX) :]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        campaign_id = path[len(PREFIX) :]
        side: ReadSide = scope["state"]["read_side"]
        scope["route"] = self.route  # what the metrics middleware labels the request with
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        try:
            principal = await side.tokens.authenticate(authorization)
            if len(campaign_id) > MAX_ID_LENGTH:
                raise Problem(404, "no such campaign")
            snapshot = await side.read_models.campaign(campaign_id)
            document = readable_document(principal, snapshot)
        except Problem as problem:
            response = problem_response(
                problem.status, problem.detail, headers=problem.headers, instance=path
            )
            await response(scope, receive, send)
            return
        except REDIS_DOWN:
            response = problem_response(
                503,
                "the read models are unavailable; retry shortly",
                headers={"Retry-After": "1"},
                instance=path,
            )
            await response(scope, receive, send)
            return
        headers = [_JSON, (b"content-length", b"%d" % len(document)), (b"etag", etag(snapshot).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": document})
