"""What routes are given: the read side's clients (made in the lifespan) and the caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from events.log import EventsLog
from query_api.adapters.notifications import TooManyWaiters, VersionWaiters, WaiterQuota
from query_api.adapters.read_models import ReadModels
from query_api.entrypoints.http.authentication import TokenVerifier
from service_runtime.problems import Problem
from service_runtime.settings import Settings
from service_runtime.tokens import Principal

_bearer = HTTPBearer(auto_error=False, description="The access token from POST /auth/login")
# For routes that authenticate inside the handler (the hot read path, with no dependency to solve).
BEARER_SECURITY: dict[str, Any] = {"security": [{"HTTPBearer": []}]}


@dataclass(frozen=True)
class ReadSide:
    """Per-process clients, created in the lifespan and shared by every request of the worker."""

    settings: Settings
    redis: Redis
    read_models: ReadModels
    waiters: VersionWaiters
    events_log: EventsLog
    tokens: TokenVerifier
    waiter_quota: WaiterQuota
    # The console's audit trail and operation requests (None: a read side without the console).
    mongo: AsyncMongoClient[dict[str, Any]] | None = None


def waits_refused(exc: TooManyWaiters) -> Problem:
    """The answer to a `min_version` read refused a wait (`WaiterQuota`): 429, retry shortly."""
    return Problem(
        429, f"too many min_version reads waiting {exc}; retry shortly", headers={"Retry-After": "1"}
    )


async def read_side(request: Request) -> ReadSide:
    side: ReadSide = request.state.read_side
    return side


async def caller(
    request: Request,
    side: ReadSide = Depends(read_side),
    credentials: HTTPAuthorizationCredentials | None = Security(_bearer),
) -> Principal:
    return await side.tokens.authenticate(request.headers.get("authorization"))


async def admin(principal: Principal = Depends(caller)) -> Principal:
    if not principal.is_admin:
        raise Problem(403, "this needs the admin role")
    return principal
