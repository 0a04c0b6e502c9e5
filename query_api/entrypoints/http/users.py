"""GET /users/me: the caller's profile read model."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from starlette.responses import Response

from query_api.adapters.notifications import TooManyWaiters
from query_api.application.read_your_writes import read_at_least
from query_api.entrypoints.http.dependencies import ReadSide, caller, read_side, waits_refused
from query_api.entrypoints.http.schemas import UserView, problems
from service_runtime.openapi import ok
from service_runtime.problems import Problem
from service_runtime.tokens import Principal

router = APIRouter(tags=["users"])


@router.get(
    "/users/me",
    summary="The caller's profile",
    response_model=None,
    responses={
        **ok(200, "The profile", model=UserView, headers=("ETag",)),
        **problems(401, 404, 422, 429, 503),
    },
)
async def me(
    min_version: int | None = Query(None, ge=1, description="wait (bounded) for this version"),
    principal: Principal = Depends(caller),
    side: ReadSide = Depends(read_side),
) -> Response:
    user_id = principal.user_id
    if min_version is None:
        snapshot = await side.read_models.user(user_id)
    else:
        try:
            found = await read_at_least(
                lambda: side.read_models.user(user_id),
                side.waiters,
                user_id,
                min_version,
                side.settings.read_wait_seconds,
                lambda _: side.waiter_quota.admit(user_id),
            )
        except TooManyWaiters as exc:
            raise waits_refused(exc) from None
        if found is None:
            raise Problem(
                503,
                f"the profile has not reached version {min_version} yet; retry shortly",
                headers={"Retry-After": "1"},
            )
        snapshot = found
    if snapshot.doc is None:
        raise Problem(404, "no profile for this user yet")
    return Response(snapshot.doc, media_type="application/json", headers={"ETag": f'"{snapshot.version}"'})
