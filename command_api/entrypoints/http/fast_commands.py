"""POST /campaigns answered in pure ASGI, ahead of FastAPI, when the request is an ordinary one.

The create is the command the API exists for, and FastAPI's per-request machinery (its
middleware and exception layers, route matching, request objects, dependency and parameter
solving, response-model serialisation) cost more CPU than the command's own work besides the
MongoDB transaction. `CommandAPI` hands a create to the HTTP basics (correlation id, body
limits, metrics labelled with the route's template, security headers) around `CampaignCreate`.

`CampaignCreate` answers only a request FastAPI would answer the same way without its help: a
JSON body (`Content-Type: application/json`, as orjson reads it) that the route's own model
accepts, at most one Authorization, Idempotency-Key (within the route's bounds) and
Content-Type header, and no `Origin` (a browser's request goes through the CORS layer). Anything
else is handed, before any side effect (the caller's rate is taken only once the request is
known to be ordinary), to FastAPI, which answers it as it always did: 422 naming the field,
401, 413. The rules are the route's own functions (`actor_of`, `created_campaign`, the error
mapping of errors.py), so both paths answer the same bytes (tests/integration/command_api/
test_fast_create.py pins it); OpenAPI documents the FastAPI route.
"""

from __future__ import annotations

import orjson
from fastapi import FastAPI
from pydantic import ValidationError
from starlette.datastructures import URL
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from command_api.bootstrap import CommandSide
from command_api.entrypoints.http.campaign_routes import IDEMPOTENCY_KEY_MAX, created_campaign
from command_api.entrypoints.http.dependencies import actor_of
from command_api.entrypoints.http.errors import REFUSALS, UNAVAILABLE, refusal_response, unavailable_response
from command_api.entrypoints.http.schemas import CampaignCreateRequest
from service_runtime.http import BASICS_APPLIED, replay_body
from service_runtime.problems import Problem, raised_problem_response

PATH = "/campaigns"
_JSON = b"application/json"
_CONTENT_TYPE = (b"content-type", _JSON)
# The request headers that decide how FastAPI answers a create.
_DECIDING = frozenset((b"authorization", b"content-type", b"idempotency-key", b"origin"))


class CommandAPI(FastAPI):
    """FastAPI, except that an ordinary create goes to `fast_create` (set once the app is built)."""

    fast_create: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.fast_create is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == PATH
        ):
            await self.fast_create(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def through_fastapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI's answer, whatever the request (what a create `CampaignCreate` does not take gets)."""
        await super().__call__(scope, receive, send)


class CampaignCreate:
    """Answers an ordinary create; hands any other request to `fallback` (the FastAPI app), with
    its body, marked as having had the HTTP basics already."""

    def __init__(self, app: FastAPI, fallback: ASGIApp, route: BaseRoute | None) -> None:
        self.app = app
        self.fallback = fallback
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _body(receive)
        ordinary = _ordinary(scope["headers"], body)
        if ordinary is None:
            scope[BASICS_APPLIED] = True
            await self.fallback(scope, replay_body(body), send)
            return
        request, token, idempotency_key = ordinary
        side: CommandSide = self.app.state.command_side
        scope["route"] = self.route  # what the metrics middleware labels the request with
        try:
            actor = await actor_of(side, token)
            result = await created_campaign(side, actor, request, idempotency_key)
        except Problem as problem:
            await raised_problem_response(problem, _instance(scope))(scope, receive, send)
            return
        except REFUSALS as refusal:
            await refusal_response(refusal, _instance(scope))(scope, receive, send)
            return
        except UNAVAILABLE as unavailable:
            await unavailable_response(unavailable, _instance(scope))(scope, receive, send)
            return
        answer = b'{"id":%s,"version":%d}' % (orjson.dumps(result.id), result.version)
        headers = [
            (b"content-length", b"%d" % len(answer)),
            _CONTENT_TYPE,
            (b"location", f"/campaigns/{result.id}".encode()),
            (b"etag", b'"%d"' % result.version),
        ]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": answer})


def _ordinary(
    headers: list[tuple[bytes, bytes]], body: bytes
) -> tuple[CampaignCreateRequest, str | None, str | None] | None:
    """The create's body, bearer token and Idempotency-Key, if FastAPI would read them the same
    way; else None."""
    seen: dict[bytes, bytes] = {}
    for name, value in headers:
        if name in _DECIDING:
            if name in seen:
                return None
            seen[name] = value
    if seen.get(b"content-type") != _JSON or b"origin" in seen:
        return None
    key = seen.get(b"idempotency-key")
    idempotency_key = None
    if key is not None:
        idempotency_key = key.decode("latin-1")
        if not 1 <= len(idempotency_key) <= IDEMPOTENCY_KEY_MAX:
            return None
    try:
        request = CampaignCreateRequest.model_validate(orjson.loads(body))
    except (orjson.JSONDecodeError, ValidationError):
        return None
    return request, _bearer_token(seen.get(b"authorization")), idempotency_key


def _bearer_token(authorization: bytes | None) -> str | None:
    """The credentials as FastAPI's HTTPBearer (auto_error off) reads them, or None."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.decode("latin-1").partition(" ")
    credentials = credentials.strip()
    if not scheme or not credentials or scheme.lower() != "bearer":
        return None
    return credentials


def _instance(scope: Scope) -> str:
    """`request.url.path`, as the FastAPI handlers name the problem's instance."""
    return URL(scope=scope).path


async def _body(receive: Receive) -> bytes:
    # The HTTP basics read the whole body (within its limit) and replay it as one message.
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
