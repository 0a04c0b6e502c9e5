"""Each refusal of the domain or the handlers as its HTTP status, in the shared problem+json form."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from pymongo.errors import ConnectionFailure
from starlette.responses import Response

from command_api.application import errors as app_errors
from command_api.domain import errors as domain_errors
from service_runtime.openapi import problem_responses
from service_runtime.problems import problem_response
from service_runtime.redis_client import REDIS_UNREACHABLE

log = logging.getLogger(__name__)

# Routes declare their error statuses with the shared helper (one problem schema in components).
__all__ = ["install_command_error_handlers", "problem_responses"]

RETRY_AFTER_UNAVAILABLE = "2"

STATUS: dict[type[Exception], int] = {
    domain_errors.InvalidInput: 422,
    domain_errors.InvalidTransition: 409,
    domain_errors.AggregateGone: 404,
    app_errors.NotFound: 404,
    app_errors.EmailTaken: 409,
    app_errors.VersionRequired: 428,
    app_errors.StaleVersion: 412,
    app_errors.ConcurrencyConflict: 409,
    app_errors.InvalidCredentials: 401,
    app_errors.WrongCurrentPassword: 403,
    app_errors.SessionRejected: 401,
    app_errors.Throttled: 429,
    app_errors.IdempotencyKeyReused: 422,
    app_errors.IdempotencyKeyTaken: 409,
}


def _status_of(exc: Exception) -> int:
    for kind in type(exc).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 500


def _field_errors(exc: Exception) -> list[dict[str, Any]] | None:
    if isinstance(exc, domain_errors.InvalidInput):
        return [{"field": e.field, "reason": e.reason} for e in exc.errors]
    if isinstance(exc, app_errors.EmailTaken):
        return [{"field": "email", "reason": "is already registered"}]
    if isinstance(exc, app_errors.WrongCurrentPassword):
        return [{"field": "current_password", "reason": "is not your current password"}]
    if isinstance(exc, app_errors.IdempotencyKeyReused):
        return [{"field": "Idempotency-Key", "reason": str(exc)}]
    return None


def _headers(exc: Exception) -> dict[str, str] | None:
    if isinstance(exc, app_errors.Throttled):
        return {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, app_errors.StaleVersion) and exc.current is not None:
        return {"ETag": f'"{exc.current}"'}
    return None


# What each kind of failure is answered with, by the FastAPI handlers and the fast create alike.
UNAVAILABLE: tuple[type[Exception], ...] = (ConnectionFailure, *REDIS_UNREACHABLE)
REFUSALS: tuple[type[Exception], ...] = (domain_errors.DomainError, app_errors.CommandRefused)


def refusal_response(exc: Exception, instance: str) -> Response:
    """A refusal of the domain or a handler (REFUSALS) as its problem."""
    status = _status_of(exc)
    detail = str(exc) or type(exc).__name__
    if status == 422 and isinstance(exc, domain_errors.InvalidInput):
        detail = "invalid request: " + ", ".join(e.field for e in exc.errors)
    return problem_response(
        status, detail, errors=_field_errors(exc), headers=_headers(exc), instance=instance
    )


def unavailable_response(exc: Exception, instance: str) -> Response:
    """MongoDB or Redis out of reach (UNAVAILABLE): 503 with Retry-After."""
    # Nothing was written: the transaction either never started or was aborted.
    log.warning("a server the command API needs is unreachable: %s", type(exc).__name__)
    return problem_response(
        503,
        "a server this API needs is unreachable; nothing was changed, try again shortly",
        headers={"Retry-After": RETRY_AFTER_UNAVAILABLE},
        instance=instance,
    )


def install_command_error_handlers(app: FastAPI) -> None:
    async def on_refusal(request: Request, exc: Exception) -> Response:
        return refusal_response(exc, request.url.path)

    async def on_unavailable(request: Request, exc: Exception) -> Response:
        return unavailable_response(exc, request.url.path)

    for refusal in REFUSALS:
        app.add_exception_handler(refusal, on_refusal)
    for unavailable in UNAVAILABLE:
        app.add_exception_handler(unavailable, on_unavailable)
