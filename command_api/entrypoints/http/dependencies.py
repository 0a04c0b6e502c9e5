"""What routes receive through Depends: the wired command side, the caller, the If-Match version."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from command_api.bootstrap import CommandSide
from command_api.domain.campaign import Actor
from service_runtime.problems import Problem
from service_runtime.tokens import InvalidToken

_bearer = HTTPBearer(auto_error=False, description="Access token from POST /auth/login")
_ETAG = re.compile(r'^(?:W/)?"?(\d{1,18})"?$')


def command_side(request: Request) -> CommandSide:
    side: CommandSide = request.app.state.command_side
    return side


Side = Annotated[CommandSide, Depends(command_side)]


async def current_actor(
    side: Side, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Actor:
    return await actor_of(side, None if credentials is None else credentials.credentials)


async def actor_of(side: CommandSide, token: str | None) -> Actor:
    """The caller presenting `token` (a bearer token's credentials), taking one command from their
    rate; or a 401 or 429 problem. The fast create (fast_commands.py) calls this too."""
    if token is None:
        raise Problem(401, "an access token is required", headers={"WWW-Authenticate": "Bearer"})
    try:
        principal = side.access_tokens.principal(token)
    except InvalidToken:
        principal = None
    # A token issued before its user's sessions were ended (logout, role change) is refused too.
    if principal is None or not await side.cutoffs.allows(principal):
        raise Problem(
            401,
            "the access token is invalid or expired",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    # Every authenticated command takes from the user's bucket (a refusal takes nothing).
    wait = await side.command_rate.take(principal.user_id)
    if wait:
        raise Problem(
            429, f"too many commands from this user; retry in {wait} s", headers={"Retry-After": str(wait)}
        )
    return Actor(user_id=principal.user_id, is_admin=principal.is_admin)


CurrentActor = Annotated[Actor, Depends(current_actor)]


IF_MATCH_DESCRIPTION = 'The version the command was decided on, as an entity tag: "3"'
IF_MATCH_MAX = 64


def if_match_version(
    if_match: Annotated[
        str | None,
        Header(alias="If-Match", description=IF_MATCH_DESCRIPTION, max_length=IF_MATCH_MAX),
    ] = None,
) -> int | None:
    return _version_of(if_match)


def required_if_match_version(request: Request) -> int | None:
    """If-Match where it is required: read here rather than declared as a required Header, so a
    missing one reaches the handler's 428 problem instead of FastAPI's 422; the route's OpenAPI
    declares it required (`REQUIRED_IF_MATCH`)."""
    if_match = request.headers.get("if-match")
    if if_match is not None and len(if_match) > IF_MATCH_MAX:
        reason = f"String should have at most {IF_MATCH_MAX} characters"
        raise Problem(422, "invalid request: If-Match", errors=[{"field": "If-Match", "reason": reason}])
    return _version_of(if_match)


def _version_of(if_match: str | None) -> int | None:
    if if_match is None or if_match.strip() == "*":
        return None
    match = _ETAG.match(if_match.strip())
    if match is None:
        raise Problem(412, f"If-Match {if_match!r} names no version of this campaign")
    return int(match.group(1))


ExpectedVersion = Annotated[int | None, Depends(if_match_version)]
RequiredVersion = Annotated[int | None, Depends(required_if_match_version)]
REQUIRED_IF_MATCH: dict[str, Any] = {
    "parameters": [
        {
            "name": "If-Match",
            "in": "header",
            "required": True,
            "description": IF_MATCH_DESCRIPTION + "; without it the answer is 428",
            "schema": {"type": "string", "maxLength": IF_MATCH_MAX},
        }
    ]
}
