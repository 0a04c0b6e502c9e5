"""/auth: register, log in, refresh (rotating), log out."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from command_api.application import user_handlers
from command_api.application.commands import LogIn, LogOut, RefreshSession, RegisterUser
from command_api.entrypoints.http.dependencies import Side
from command_api.entrypoints.http.errors import problem_responses
from command_api.entrypoints.http.schemas import (
    CommandAccepted,
    LoginRequest,
    RefreshTokenRequest,
    RegisterRequest,
    TokenPair,
)
from service_runtime.openapi import ok

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/register",
    status_code=201,
    summary="Create a user",
    responses={**ok(201, "Registered"), **problem_responses(409, 413, 422, 503)},
)
async def register(body: RegisterRequest, side: Side) -> CommandAccepted:
    result = await user_handlers.register_user(
        RegisterUser(email=body.email, password=body.password, name=body.name),
        side.unit_of_work(),
        side.credentials.hasher,
    )
    return CommandAccepted(id=result.id, version=result.version)


@router.post(
    "/login",
    summary="Exchange e-mail and password for an access token and a refresh token",
    responses=problem_responses(401, 413, 422, 429, 503),
)
async def login(body: LoginRequest, request: Request, response: Response, side: Side) -> TokenPair:
    client = request.client.host if request.client else "unknown"
    tokens = await user_handlers.log_in(
        LogIn(email=body.email, password=body.password, client=client),
        side.unit_of_work(),
        side.credentials,
    )
    response.headers["Cache-Control"] = "no-store"
    return TokenPair(
        access_token=tokens.access_token, refresh_token=tokens.refresh_token, expires_in=tokens.expires_in
    )


@router.post(
    "/refresh",
    summary="Rotate a refresh token: the presented one is used up, a new pair comes back",
    description="Presenting a refresh token that was already rotated revokes its whole family.",
    responses=problem_responses(401, 413, 422, 503),
)
async def refresh(body: RefreshTokenRequest, response: Response, side: Side) -> TokenPair:
    tokens = await user_handlers.refresh_session(
        RefreshSession(refresh_token=body.refresh_token), side.unit_of_work(), side.credentials
    )
    response.headers["Cache-Control"] = "no-store"
    return TokenPair(
        access_token=tokens.access_token, refresh_token=tokens.refresh_token, expires_in=tokens.expires_in
    )


@router.post(
    "/logout",
    status_code=204,
    response_class=Response,
    summary="Revoke the refresh token's whole family",
    responses={
        **ok(204, "Logged out (also when the token was unknown or already revoked)"),
        **problem_responses(413, 422, 503),
    },
)
async def logout(body: RefreshTokenRequest, side: Side) -> Response:
    await user_handlers.log_out(LogOut(refresh_token=body.refresh_token), side.unit_of_work())
    return Response(status_code=204)
