"""The one mapping from errors to RFC 9457 problem+json responses, shared by both APIs."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """Raise anywhere in a request to answer with this problem."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        type_: str = "about:blank",
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or HTTPStatus(status).phrase
        self.errors = errors
        self.headers = headers or {}
        self.type = type_


def problem_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    instance: str | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = errors
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers)


def raised_problem_response(problem: Problem, instance: str) -> Response:
    """The answer to a raised `Problem`, for the request at `instance`."""
    return problem_response(
        problem.status,
        problem.detail,
        title=problem.title,
        errors=problem.errors,
        headers=problem.headers,
        instance=instance,
    )


def validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Each invalid field as {field, reason}, the field as a dotted path without the `body` root."""
    errors = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        if len(loc) > 1 and loc[0] in {"body", "query", "path", "header"}:
            loc = loc[1:]
        errors.append({"field": ".".join(loc) or "body", "reason": err.get("msg", "invalid")})
    return errors


def install_problem_handlers(app: FastAPI) -> None:
    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return raised_problem_response(exc, request.url.path)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = validation_errors(exc)
        fields = ", ".join(e["field"] for e in errors)
        return problem_response(422, f"invalid request: {fields}", errors=errors, instance=request.url.path)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
            # FastAPI's 400 for a JSON body that is not UTF-8: an invalid body like any other.
            errors = [{"field": "body", "reason": "is not valid JSON (not UTF-8)"}]
            return problem_response(422, "invalid request: body", errors=errors, instance=request.url.path)
        return problem_response(
            exc.status_code,
            str(exc.detail),
            headers=dict(exc.headers or {}),
            instance=request.url.path,
        )

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
