"""GET /campaigns/{id} (no query string, or `min_version` alone) and GET /campaigns answered in
pure ASGI, ahead of FastAPI.

This is the read the API exists for, and FastAPI's per-request machinery (its server-error,
telemetry and body-limit layers, route matching, request objects, dependency and parameter
handling) cost more than the read itself. `QueryAPI` hands such a request to the HTTP basics
(correlation id, limits, metrics labelled with the route's template) around `CampaignRead`
before any of that. A query string of `min_version=<digits>` alone (the read-your-writes read every
command's client makes) is taken too when its value is one the route accepts (`min_version_of`);
everything else, such as as_of_version, an invalid or escaped value or another parameter, goes
through FastAPI, whose route also documents this one in OpenAPI. The same rules apply through the
same functions (`TokenVerifier.authenticate`, `ReadModels.campaign`, `campaign_at_least`,
`readable_document`). What memory answers (a remembered token, a campaign the cache holds at or
past the version asked) is answered without a coroutine (`answer_now`: `TokenVerifier.remembered`,
`ReadModels.cached_campaign`, `may_read`); anything else is `answer`'s.

The list (`CampaignList`) takes only a query string whose every parameter is known, given once
and valid as the route's declaration says (`list_question`); anything else, such as an unknown
or repeated parameter or a value out of range, goes through FastAPI, which answers it as it
always did (422 naming the field, or ignoring what it ignores). The page itself is the route's
(`campaign_page_body`).
"""

from __future__ import annotations

import re
from typing import get_args
from urllib.parse import parse_qsl

from fastapi import FastAPI
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from events.types import Channel
from query_api.adapters.redis_multiplexer import REDIS_DOWN
from query_api.domain.access import may_read
from query_api.domain.listing import CampaignFilters, SortOrder
from query_api.entrypoints.http.campaigns import (
    MAX_ID_LENGTH,
    Asked,
    LiveStatus,
    campaign_at_least,
    campaign_page_body,
    etag,
    readable_document,
)
from query_api.entrypoints.http.dependencies import ReadSide
from readmodels.snapshot import Snapshot
from service_runtime.http import PlainAnswer
from service_runtime.problems import Problem, problem_response, raised_problem_response

PREFIX = "/campaigns/"
LIST_PATH = "/campaigns"
_JSON = (b"content-type", b"application/json")
# What a fast read answers as a problem: the ones it raises, and Redis out of reach (503).
_FAILURES: tuple[type[Exception], ...] = (Problem, *REDIS_DOWN)

# The list route's parameters as it declares them (campaigns.list_campaigns): the values each
# may take, or its length bounds.
_CHOICES = {
    "status": frozenset(get_args(LiveStatus)),
    "channel": frozenset(get_args(Channel)),
    "sort": frozenset(order.value for order in SortOrder),
}
_LENGTHS = {"tag": (1, 100), "owner_id": (1, 100), "cursor": (1, 2000)}
_LIMIT = re.compile(r"[1-9][0-9]{0,2}")  # 1 to 100 in plain digits (else FastAPI judges it)
LIST_LIMIT_MAX = 100
# `min_version` alone, as the route reads it (campaigns._version_argument: 1 to 18 ASCII digits).
_MIN_VERSION = re.compile(rb"min_version=([0-9]{1,18})")
MIN_VERSION_KEY = "campaigns.min_version"


def min_version_of(query_string: bytes) -> int | None:
    """The version asked if the query string is `min_version=<n>` alone with n a version the
    route accepts (1 or more); else None (FastAPI's: its 422, or what it does with the rest)."""
    match = _MIN_VERSION.fullmatch(query_string)
    if match is None:
        return None
    version = int(match.group(1))
    return version if version >= 1 else None


# Query strings already judged (a pure function of the bytes), at most this many per worker.
QUESTIONS_REMEMBERED = 4096
QUESTION_REMEMBERED_BYTES = 256
_questions: dict[bytes, dict[str, str] | None] = {}


def list_question(query_string: bytes) -> dict[str, str] | None:
    """The list's parameters if each is known, given once and valid; else None (FastAPI's)."""
    try:
        return _questions[query_string]
    except KeyError:
        pass
    if len(query_string) > QUESTION_REMEMBERED_BYTES:  # (a cursor's: judged every time)
        return _judged(query_string)
    if len(_questions) >= QUESTIONS_REMEMBERED:
        _questions.clear()
    question = _questions[query_string] = _judged(query_string)
    return question


def _judged(query_string: bytes) -> dict[str, str] | None:
    # Decoded as Starlette decodes it (latin-1 bytes, then percent-escapes as UTF-8).
    params: dict[str, str] = {}
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name in params:
            return None
        choices = _CHOICES.get(name)
        if choices is not None:
            if value not in choices:
                return None
        elif name == "limit":
            if _LIMIT.fullmatch(value) is None or int(value) > LIST_LIMIT_MAX:
                return None
        else:
            bounds = _LENGTHS.get(name)
            if bounds is None or not bounds[0] <= len(value) <= bounds[1]:
                return None
        params[name] = value
    return params


class QueryAPI(FastAPI):
    """FastAPI, except that the hot read goes to `fast_read` (set once the app is built)."""

    fast_read: ASGIApp | None = None
    fast_list: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if self.fast_read is not None and CampaignRead.takes(scope):
                await self.fast_read(scope, receive, send)
                return
            if self.fast_list is not None and CampaignList.takes(scope):
                await self.fast_list(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


class CampaignRead:
    """Answers the requests `takes` accepts (`answer`: sent by the HTTP basics in front of it);
    an unexpected error is uvicorn's plain 500."""

    def __init__(self, route: BaseRoute | None = None) -> None:
        self.route = route

    @staticmethod
    def takes(scope: Scope) -> bool:
        if scope["method"] != "GET":
            return False
        path: str = scope["path"]
        if not (path.startswith(PREFIX) and len(path) > len(PREFIX) and "/" not in path[len(PREFIX) :]):
            return False
        query_string: bytes = scope["query_string"]
        if not query_string:
            return True
        min_version = min_version_of(query_string)
        if min_version is None:
            return False
        scope[MIN_VERSION_KEY] = min_version
        return True

    def answer_now(self, scope: Scope, authorization: bytes | None) -> PlainAnswer | None:
        """The 200 `answer` gives when all it needs is in memory (a remembered caller, a kept
        campaign it may read, at or past the `min_version` asked): the same bytes and headers
        without a coroutine. None: `answer` decides, as always."""
        side: ReadSide = scope["state"]["read_side"]
        principal = side.tokens.remembered(authorization.decode("latin-1") if authorization else None)
        if principal is None:
            return None
        snapshot = side.read_models.cached_campaign(scope["path"][len(PREFIX) :])
        if snapshot is None or snapshot.doc is None or not may_read(principal, snapshot.owner_id):
            return None
        min_version: int | None = scope.get(MIN_VERSION_KEY)
        if min_version is not None and snapshot.version < min_version:
            return None
        scope["route"] = self.route  # what the metrics middleware labels the request with
        return _found(snapshot, snapshot.doc)

    async def answer(self, scope: Scope) -> PlainAnswer | Response:
        """The campaign's stored bytes as they are, or the problem to answer instead."""
        path: str = scope["path"]
        campaign_id = path[len(PREFIX) :]
        side: ReadSide = scope["state"]["read_side"]
        scope["route"] = self.route  # what the metrics middleware labels the request with
        authorization = _authorization(scope)
        models = side.read_models
        try:
            # What is remembered answers without a coroutine; anything else is asked as always.
            principal = side.tokens.remembered(authorization) or await side.tokens.authenticate(authorization)
            if len(campaign_id) > MAX_ID_LENGTH:
                raise Problem(404, "no such campaign")
            min_version: int | None = scope.get(MIN_VERSION_KEY)
            if min_version is not None:
                snapshot = await campaign_at_least(side, principal, campaign_id, min_version)
            else:
                snapshot = models.cached_campaign(campaign_id) or await models.campaign(campaign_id)
            document = readable_document(principal, snapshot)
        except _FAILURES as failure:
            return _failure_response(failure, path)
        return _found(snapshot, document)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = self.answer_now(scope, _authorization_bytes(scope)) or await self.answer(scope)
        if isinstance(answer, Response):
            await answer(scope, receive, send)
            return
        status, headers, body = answer
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class CampaignList:
    """Answers the list requests `takes` accepts (see the module's docstring)."""

    def __init__(self, route: BaseRoute | None = None) -> None:
        self.route = route

    @staticmethod
    def takes(scope: Scope) -> bool:
        if scope["method"] != "GET" or scope["path"] != LIST_PATH:
            return False
        question = list_question(scope["query_string"])
        if question is None:
            return False
        scope["campaigns.list_question"] = question
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        question: dict[str, str] = scope["campaigns.list_question"]
        side: ReadSide = scope["state"]["read_side"]
        scope["route"] = self.route
        try:
            principal = await side.tokens.authenticate(_authorization(scope))
            body = await campaign_page_body(side, principal, scope["query_string"], lambda: _asked(question))
        except _FAILURES as failure:
            await _failure_response(failure, LIST_PATH)(scope, receive, send)
            return
        headers = [_JSON, (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _found(snapshot: Snapshot, document: bytes) -> PlainAnswer:
    """The 200 of a campaign read: its stored document, its length and its version's ETag."""
    headers = [_JSON, (b"content-length", b"%d" % len(document)), (b"etag", etag(snapshot).encode())]
    return 200, headers, document


def _authorization(scope: Scope) -> str | None:
    value = _authorization_bytes(scope)
    return None if value is None else value.decode("latin-1")


def _authorization_bytes(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return bytes(value)
    return None


def _failure_response(failure: Exception, instance: str) -> Response:
    """The problem a request raised, or 503 when Redis could not be reached."""
    if isinstance(failure, Problem):
        return raised_problem_response(failure, instance)
    return problem_response(
        503, "the read models are unavailable; retry shortly", headers={"Retry-After": "1"}, instance=instance
    )


def _asked(question: dict[str, str]) -> Asked:
    filters = CampaignFilters(
        question.get("status"), question.get("channel"), question.get("tag"), question.get("owner_id")
    )
    sort = SortOrder(question.get("sort", SortOrder.CREATED_DESC.value))
    return filters, sort, int(question.get("limit", "20")), question.get("cursor")
