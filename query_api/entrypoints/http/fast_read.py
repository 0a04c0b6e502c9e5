"""GET /campaigns/{id} (no query string) answered in pure ASGI, ahead of FastAPI's routing.

This is the read the API exists for, and FastAPI's per-request machinery (route matching,
request objects, dependency and parameter handling) costs more than the read itself. The same
rules as the FastAPI route apply, through the same functions (`TokenVerifier.authenticate`,
`ReadModels.campaign`, `readable_document`); anything else (a query string such as
min_version or as_of_version, another method or path) goes on to the FastAPI route, which
also documents this one in OpenAPI. It sits inside the shared HTTP basics middleware, so
correlation ids, metrics (labelled with the route's template) and limits apply as usual.
"""

from __future__ import annotations

from redis.exceptions import ConnectionError as RedisConnectionError
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from query_api.adapters.redis_multiplexer import RedisUnavailable
from query_api.entrypoints.http.campaigns import MAX_ID_LENGTH, etag, readable_document
from query_api.entrypoints.http.dependencies import ReadSide
from service_runtime.problems import Problem, problem_response

PREFIX = "/campaigns/"
_JSON = (b"content-type", b"application/json")


class CampaignReadFastPath:
    def __init__(self, app: ASGIApp, route: BaseRoute | None = None) -> None:
        self.app = app
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["query_string"]:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        campaign_id = path[len(PREFIX) :]
        if not path.startswith(PREFIX) or not campaign_id or "/" in campaign_id:
            await self.app(scope, receive, send)
            return
        side: ReadSide = scope["state"]["read_side"]
        scope["route"] = self.route  # what the metrics middleware labels the request with
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        try:
            principal = side.tokens.authenticate(authorization)
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
        except (RedisUnavailable, RedisConnectionError):
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
