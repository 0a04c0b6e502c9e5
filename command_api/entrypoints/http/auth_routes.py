"""/auth: register, log in, refresh (rotating), log out, log out everywhere, change the password."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from command_api.application import user_handlers
from command_api.application.commands import (
    ChangePassword,
    LogIn,
    LogOut,
    LogOutEverywhere,
    RefreshSession,
    RegisterUser,
)
from command_api.entrypoints.http.dependencies import CurrentActor, Side
from command_api.entrypoints.http.errors import problem_responses
from command_api.entrypoints.http.schemas import (
    CommandAccepted,
    LoginRequest,
    PasswordChangeRequest,
    RefreshTokenRequest,
    RegisterRequest,
    TokenPair,
)
from service_runtime.openapi import ok

router = APIRouter(prefix="/auth", tags=["auth"])

DEVICE_COOKIE = "campaigns_device"


def _client(request: Request) -> str:
    """The TCP peer, or what a configured proxy says it is (uvicorn's trusted proxy headers)."""
    return request.client.host if request.client else "unknown"


@router.post(
    "/register",
    status_code=201,
    summary="Create a user",
    responses={**ok(201, "Registered"), **problem_responses(409, 413, 422, 429, 503)},
)
async def register(body: RegisterRequest, request: Request, side: Side) -> CommandAccepted:
    result = await user_handlers.register_user(
        RegisterUser(email=body.email, password=body.password, name=body.name, client=_client(request)),
        side.unit_of_work(),
        side.credentials,
    )
    return CommandAccepted(id=result.id, version=result.version)


@router.post(
    "/login",
    summary="Exchange e-mail and password for an access token and a refresh token",
    responses=problem_responses(401, 413, 422, 429, 503),
)
async def login(body: LoginRequest, request: Request, response: Response, side: Side) -> TokenPair:
    tokens = await user_handlers.log_in(
        LogIn(
            email=body.email,
            password=body.password,
            client=_client(request),
            device=request.cookies.get(DEVICE_COOKIE) or None,
        ),
        side.unit_of_work(),
        side.credentials,
    )
    return _signed_in(tokens, response, side)


def _signed_in(tokens: user_handlers.SessionTokens, response: Response, side: Side) -> TokenPair:
    response.headers["Cache-Control"] = "no-store"
    if tokens.device is not None:
        # OWASP's device cookie: this client logged in here before, so throttling aimed at the
        # account or at its network lets it through (command_api/adapters/login_throttle.py).
        response.set_cookie(
            DEVICE_COOKIE,
            tokens.device,
            max_age=side.settings.device_cookie_seconds,
            path="/auth",
            httponly=True,
            secure=side.settings.app_env == "production",
            samesite="strict",
        )
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
    summary="Revoke the refresh token's whole family and end the user's access tokens",
    description=(
        "Every access token of the user issued before now is refused within seconds on both "
        "APIs; the user's other sessions get new ones with their refresh tokens."
    ),
    responses={
        **ok(204, "Logged out (also when the token was unknown or already revoked)"),
        **problem_responses(413, 422, 503),
    },
)
async def logout(body: RefreshTokenRequest, side: Side) -> Response:
    await user_handlers.log_out(
        LogOut(refresh_token=body.refresh_token), side.unit_of_work(), side.credentials.sessions
    )
    return Response(status_code=204)


@router.post(
    "/logout-all",
    status_code=204,
    response_class=Response,
    summary="End every session of the caller: all refresh tokens and all access tokens",
    description="Access tokens issued before now are refused within seconds on both APIs.",
    responses={**ok(204, "Every session ended"), **problem_responses(401, 503)},
)
async def logout_all(actor: CurrentActor, side: Side) -> Response:
    await user_handlers.log_out_everywhere(
        LogOutEverywhere(user_id=actor.user_id), side.unit_of_work(), side.credentials.sessions
    )
    return Response(status_code=204)


@router.post(
    "/password",
    summary="Change the caller's password; every other session ends",
    description=(
        "Needs the current password (a wrong one is 403 naming `current_password`, and counts "
        "against the same budgets as a failed login, so 429 with Retry-After when they are spent). "
        "The new password follows the registration policy (422 naming `new_password`). On success "
        "the password is stored as an argon2id hash with a `UserPasswordChanged` event; every "
        "refresh token of the user is revoked and every access token issued before now is "
        "refused within seconds on both APIs (open monitor sockets close). The caller gets a "
        "new token pair, so this client stays signed in."
    ),
    responses=problem_responses(401, 403, 413, 422, 429, 503),
)
async def change_password(
    body: PasswordChangeRequest, request: Request, response: Response, actor: CurrentActor, side: Side
) -> TokenPair:
    tokens = await user_handlers.change_password(
        ChangePassword(
            user_id=actor.user_id,
            current_password=body.current_password,
            new_password=body.new_password,
            client=_client(request),
            device=request.cookies.get(DEVICE_COOKIE) or None,
        ),
        side.unit_of_work(),
        side.credentials,
    )
    return _signed_in(tokens, response, side)
