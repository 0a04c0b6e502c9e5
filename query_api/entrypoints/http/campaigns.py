"""GET /campaigns, /campaigns/{id} (min_version, as_of_version) and /campaigns/{id}/history."""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.responses import Response

from events import encode_event
from events.types import Channel
from query_api.adapters.notifications import TooManyWaiters
from query_api.adapters.read_models import ReadModels
from query_api.application.read_your_writes import read_at_least
from query_api.domain.access import may_read
from query_api.domain.listing import (
    CampaignFilters,
    InvalidCursor,
    SortOrder,
    decode_cursor,
    encode_cursor,
)
from query_api.entrypoints.http.dependencies import (
    BEARER_SECURITY,
    ReadSide,
    caller,
    read_side,
    waits_refused,
)
from query_api.entrypoints.http.schemas import CampaignPage, CampaignView, HistoryView, problems
from readmodels.campaigns import PACKED_LAYOUT, campaign_document, fold_campaign
from readmodels.snapshot import Snapshot
from service_runtime.openapi import ok
from service_runtime.problems import Problem
from service_runtime.tokens import Principal

router = APIRouter(tags=["campaigns"])

JSON = "application/json"
LiveStatus = Literal["draft", "scheduled", "active", "paused", "completed"]
MAX_ID_LENGTH = 100
CampaignId = Path(min_length=1, max_length=MAX_ID_LENGTH)


def _not_found() -> Problem:
    return Problem(404, "no such campaign")


def _version_parameter(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "integer", "minimum": 1, "maximum": 999_999_999_999_999_999},
    }


_DETAIL_PARAMETERS: dict[str, Any] = {
    "parameters": [
        {
            "name": "campaign_id",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "maxLength": 100},
        },
        _version_parameter("min_version", "wait (bounded) until the read model has reached this version"),
        _version_parameter("as_of_version", "the campaign as it was at this version (from the events log)"),
    ],
    **BEARER_SECURITY,
}


_VERSION = re.compile(r"[0-9]{1,18}")  # ASCII digits only (str.isdigit takes "²"), within int64


def _version_argument(request: Request, name: str) -> int | None:
    """A positive integer query parameter, or a 422 problem naming it."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if _VERSION.fullmatch(raw) is None or int(raw) < 1:
        reason = "must be an integer from 1 to 999999999999999999 in ASCII digits"
        raise Problem(422, f"invalid request: {name}", errors=[{"field": name, "reason": reason}])
    return int(raw)


@router.get(
    "/campaigns/{campaign_id}",
    summary="A campaign (owner or admin); optionally once it reached a version, or as it was at one",
    response_model=None,
    responses={
        **ok(200, "The campaign", model=CampaignView, headers=("ETag",)),
        **problems(401, 404, 422, 429, 503),
    },
    openapi_extra=_DETAIL_PARAMETERS,
)
async def get_campaign(request: Request) -> Response:
    # The benchmarked read path: nothing for FastAPI to solve or validate (parameters are read
    # here and documented above), one HMGET, and the stored bytes sent as they are.
    side: ReadSide = request.state.read_side
    principal = await side.tokens.authenticate(request.headers.get("authorization"))
    campaign_id: str = request.path_params["campaign_id"]
    min_version = as_of_version = None
    if request.scope["query_string"]:
        min_version = _version_argument(request, "min_version")
        as_of_version = _version_argument(request, "as_of_version")
    if as_of_version is not None:
        if min_version is not None:
            raise Problem(
                422,
                "as_of_version and min_version cannot be combined",
                errors=[{"field": "as_of_version", "reason": "cannot be combined with min_version"}],
            )
        return await _as_of(side, principal, campaign_id, as_of_version)
    if len(campaign_id) > MAX_ID_LENGTH:
        raise _not_found()
    if min_version is not None:
        snapshot = await campaign_at_least(side, principal, campaign_id, min_version)
    else:
        snapshot = await side.read_models.campaign(campaign_id)
    return Response(readable_document(principal, snapshot), media_type=JSON, headers={"ETag": etag(snapshot)})


async def campaign_at_least(
    side: ReadSide, principal: Principal, campaign_id: str, min_version: int
) -> Snapshot:
    """The campaign once its read model reached `min_version` (waiting, bounded), or the problem
    to answer: 404 if it is someone else's, 429 if too many reads wait, 503 if the wait ran out.
    (The route's, and the pure-ASGI read's for a query string of `min_version` alone.)

    A min_version read never answers 404 for a campaign not there yet: it waits, and a version
    it finds is a campaign that exists; so its reads skip the lost-Redis check (a lost Redis
    reads as "not yet", and the wait ends in a 503)."""

    @contextlib.contextmanager
    def behind(snapshot: Snapshot) -> Iterator[None]:
        if snapshot.version and not may_read(principal, snapshot.owner_id):
            raise _not_found()
        with side.waiter_quota.admit(principal.user_id):
            yield

    try:
        found = await read_at_least(
            lambda: side.read_models.campaign(campaign_id, confirm_missing=False),
            side.waiters,
            campaign_id,
            min_version,
            side.settings.read_wait_seconds,
            behind,
        )
    except TooManyWaiters as exc:
        raise waits_refused(exc) from None
    if found is None:
        raise Problem(
            503,
            f"the read model has not reached version {min_version} yet; retry shortly",
            headers={"Retry-After": "1"},
        )
    return found


def readable_document(principal: Principal, snapshot: Snapshot) -> bytes:
    """The stored document if `principal` may read it; else the same 404 as for an unknown id."""
    if snapshot.doc is None or not may_read(principal, snapshot.owner_id):
        raise _not_found()
    return snapshot.doc


def etag(snapshot: Snapshot) -> str:
    return f'"{snapshot.version}"'


async def _as_of(side: ReadSide, principal: Principal, campaign_id: str, version: int) -> Response:
    events = await side.events_log.aggregate_events("campaign", campaign_id, up_to_version=version)
    state = fold_campaign(events)
    if state is None or not may_read(principal, state.get("owner_id")):
        raise _not_found()
    if state["version"] != version:
        raise Problem(404, f"the campaign has no version {version}")
    if state.get("status") == "deleted":
        raise Problem(404, f"the campaign was deleted at version {version}")
    return Response(campaign_document(state), media_type=JSON, headers={"ETag": f'"{version}"'})


HISTORY_MAX = 100


def _history_cursor(version: int) -> str:
    return base64.urlsafe_b64encode(f"h{version}".encode()).decode().rstrip("=")


def _after_version(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    if not raw.startswith("h") or _VERSION.fullmatch(raw[1:]) is None:
        raise Problem(
            422, "invalid cursor", errors=[{"field": "cursor", "reason": "not a next_cursor of this history"}]
        )
    return int(raw[1:])


@router.get(
    "/campaigns/{campaign_id}/history",
    summary="The campaign's events, in version order, a page at a time (owner or admin)",
    description=(
        "At most `limit` events (oldest first) after `cursor`; `next_cursor` is null on the last "
        "page, else pass it as `cursor` for the next one."
    ),
    response_model=None,
    responses={**ok(200, "A page of events, oldest first", model=HistoryView), **problems(401, 404, 422)},
)
async def get_history(
    campaign_id: str = CampaignId,
    limit: int = Query(HISTORY_MAX, ge=1, le=HISTORY_MAX, description="events per page"),
    cursor: str | None = Query(None, min_length=1, max_length=100, description="next_cursor of a page"),
    principal: Principal = Depends(caller),
    side: ReadSide = Depends(read_side),
) -> Response:
    after = _after_version(cursor) if cursor is not None else 0
    # The owner is in the first event: check it before reading any page.
    state = fold_campaign(await side.events_log.aggregate_events("campaign", campaign_id, up_to_version=1))
    if state is None or not may_read(principal, state.get("owner_id")):
        raise _not_found()
    events = await side.events_log.aggregate_page("campaign", campaign_id, after, limit + 1)
    next_cursor = _history_cursor(events[limit - 1].aggregate_version) if len(events) > limit else None
    body = (
        b'{"items":['
        + b",".join(encode_event(e) for e in events[:limit])
        + b'],"next_cursor":'
        + orjson.dumps(next_cursor)
        + b"}"
    )
    return Response(body, media_type=JSON)


@router.get(
    "/campaigns",
    summary="Campaigns, filtered and sorted, a page at a time (users: their own; admins: all)",
    response_model=None,
    responses={**ok(200, "A page of campaigns", model=CampaignPage), **problems(401, 422, 503)},
)
async def list_campaigns(
    request: Request,
    status: LiveStatus | None = None,
    channel: Channel | None = None,
    tag: str | None = Query(None, min_length=1, max_length=100),
    owner_id: str | None = Query(None, min_length=1, max_length=100),
    sort: SortOrder = SortOrder.CREATED_DESC,
    limit: int = Query(20, ge=1, le=100),
    cursor: str | None = Query(None, min_length=1, max_length=2000, description="next_cursor of a page"),
    principal: Principal = Depends(caller),
    side: ReadSide = Depends(read_side),
) -> Response:
    query_string: bytes = request.scope["query_string"]
    asked = (CampaignFilters(status, channel, tag, owner_id), sort, limit, cursor)
    body = await campaign_page_body(side, principal, query_string, lambda: asked)
    return Response(body, media_type=JSON)


EMPTY_PAGE = b'{"items":[],"next_cursor":null}'
# What a list request asks (validated): filters, sort, limit, cursor.
Asked = tuple[CampaignFilters, SortOrder, int, str | None]


async def campaign_page_body(
    side: ReadSide, principal: Principal, query_string: bytes, asked: Callable[[], Asked]
) -> bytes:
    """The page's JSON, spliced from the stored documents: nothing is parsed or re-encoded.
    Kept in the worker's campaign cache until the next announcement (see `CampaignCache`),
    keyed by the query string and whose campaigns the caller sees: a page found there needs
    nothing else (`asked`, the request's validated parameters, is only called on a miss; the
    cursor is checked then, and a refused one is never kept). Shared by the route and its fast
    path (fast_read.CampaignList)."""
    models = side.read_models
    base = models.generations.base("campaigns")
    cache = models.cache
    # The same query string from callers who see the same campaigns asks the same question.
    question = (query_string, None if principal.is_admin else principal.user_id)
    if cache is not None:
        body = cache.get_page(base, question)
        if body is not None:
            return body
        ticket = cache.ticket()
    filters, sort, limit, cursor = asked()
    after = None
    if cursor is not None:
        try:
            after = decode_cursor(cursor, sort, _packed(models))
        except InvalidCursor as exc:
            raise Problem(
                422, f"invalid cursor: {exc}", errors=[{"field": "cursor", "reason": str(exc)}]
            ) from exc
    visible = filters.visible_to(principal)
    if visible is None:
        return EMPTY_PAGE
    body = await _page_body(side, visible, sort, limit, after, base)
    if cache is not None:
        cache.put_page(base, question, body, ticket, len(query_string) + len(principal.user_id))
    return body


def _packed(models: ReadModels) -> bool:
    """The live campaigns generation holds packed members (readmodels.campaigns.PACKED_LAYOUT)."""
    return models.generations.campaigns_layout >= PACKED_LAYOUT


async def _page_body(
    side: ReadSide, filters: CampaignFilters, sort: SortOrder, limit: int, after: bytes | None, base: str
) -> bytes:
    docs, next_member = await side.read_models.campaign_page(filters, sort, limit, after, base)
    next_cursor = encode_cursor(sort, next_member, _packed(side.read_models)) if next_member else None
    return b'{"items":[' + b",".join(docs) + b'],"next_cursor":' + orjson.dumps(next_cursor) + b"}"
