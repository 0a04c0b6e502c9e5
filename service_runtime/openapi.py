"""The OpenAPI conventions both APIs share: one problem schema, declared statuses, headers and servers.

Every error either API answers is an RFC 9457 problem (`service_runtime.problems`), so every
declared error status points at the one `ProblemDetails` schema in `components` (generated clients
then build one problem type, not one anonymous class per route), with the headers that status
carries. `describe_api` also turns FastAPI's own 422 (`HTTPValidationError`, which this project
never answers) into that problem, and fills in `servers`, `info.contact` and the tag descriptions.
Adding a route: `responses={**ok(...), **problem_responses(401, 404, ...)}`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI
from pydantic import BaseModel, Field

from service_runtime.problems import PROBLEM_JSON
from service_runtime.settings import Settings

SCHEMAS = "#/components/schemas/"
PROBLEM_REF = {"$ref": SCHEMAS + "ProblemDetails"}
JSON = "application/json"


class FieldError(BaseModel):
    field: str = Field(description="The bad field, as a dotted path (a header or query parameter by name)")
    reason: str


class ProblemDetails(BaseModel):
    """RFC 9457 problem details: how every error of this API is answered."""

    type: str = Field(default="about:blank", description="Always about:blank: the status says it all")
    title: str = Field(description="The status's phrase")
    status: int
    detail: str = Field(description="What went wrong, for a person")
    instance: str | None = Field(default=None, description="The request path")
    errors: list[FieldError] | None = Field(default=None, description="Each bad field, when fields were bad")


HEADERS: dict[str, dict[str, Any]] = {
    "ETag": {
        "description": 'The aggregate\'s version as an entity tag ("3"); send it back as If-Match',
        "schema": {"type": "string", "pattern": '^"[0-9]+"$'},
    },
    "Location": {"description": "The path of what was created", "schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds to wait before trying again", "schema": {"type": "integer"}},
    "WWW-Authenticate": {"description": "The Bearer challenge", "schema": {"type": "string"}},
}

_DESCRIPTIONS: dict[int, str] = {
    401: "Missing, expired or forged access token (or bad credentials)",
    403: "The caller lacks the role this needs",
    404: "No such resource, or not the caller's (ids don't leak)",
    409: "Conflicts with the current state",
    412: "If-Match names a version that is no longer current (ETag: the current one)",
    413: "Request body too large",
    422: "Invalid request; each bad field is named in errors",
    428: "If-Match is required",
    429: "Too many requests; see Retry-After",
    503: "A server this API needs is unreachable or behind; see Retry-After",
}
_STATUS_HEADERS: dict[int, tuple[str, ...]] = {
    401: ("WWW-Authenticate",),
    412: ("ETag",),
    429: ("Retry-After",),
    503: ("Retry-After",),
}


def header(name: str, description: str | None = None) -> dict[str, Any]:
    declared = dict(HEADERS[name])
    if description:
        declared["description"] = description
    return {name: declared}


def problem_responses(*statuses: int, descriptions: Mapping[int, str] | None = None) -> dict[int | str, Any]:
    """OpenAPI `responses` entries for these statuses: the shared problem body and its headers."""
    responses: dict[int | str, Any] = {}
    for status in statuses:
        entry: dict[str, Any] = {
            "description": (descriptions or {}).get(status)
            or _DESCRIPTIONS.get(status, HTTPStatus(status).phrase),
            "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}},
        }
        names = _STATUS_HEADERS.get(status, ())
        if names:
            entry["headers"] = {name: HEADERS[name] for name in names}
        responses[status] = entry
    return responses


def ok(
    status: int,
    description: str,
    *,
    headers: Sequence[str] = (),
    model: type[BaseModel] | None = None,
    content: Mapping[str, Any] | None = None,
) -> dict[int | str, Any]:
    """The success entry of `responses`: its description, headers and (when not the route's model) body."""
    entry: dict[str, Any] = {"description": description}
    if headers:
        entry["headers"] = {name: HEADERS[name] for name in headers}
    if model is not None:
        entry["model"] = model
    if content is not None:
        entry["content"] = dict(content)
    return {status: entry}


def describe_api(
    app: FastAPI,
    *,
    default_port: int,
    tags: Sequence[Mapping[str, str]],
) -> None:
    """Serve the app's OpenAPI with the shared problem schema, servers, contact and tags."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            finish_document(schema, default_port=default_port, tags=tags)
            # A deep copy through JSON, so nothing FastAPI caches is shared with a caller.
            app.openapi_schema = orjson.loads(orjson.dumps(schema))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def finish_document(schema: dict[str, Any], *, default_port: int, tags: Sequence[Mapping[str, str]]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    problem = ProblemDetails.model_json_schema(ref_template=SCHEMAS + "{model}")
    components.update(problem.pop("$defs", {}))
    components["ProblemDetails"] = problem
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            for status, response in operation.get("responses", {}).items():
                _replace_validation_error(status, response)
    for unused in ("HTTPValidationError", "ValidationError"):
        if unused in components and f'"{SCHEMAS}{unused}"' not in orjson.dumps(schema.get("paths")).decode():
            del components[unused]
    schema["components"]["schemas"] = dict(sorted(components.items()))
    schema["servers"] = [
        {"url": "/", "description": "The server this document was read from"},
        {"url": f"http://127.0.0.1:{default_port}", "description": "The local stack (make up)"},
    ]
    schema["info"]["contact"] = {"name": "Campaigns CQRS maintainers (README.md, section Contracts)"}
    used = sorted(
        {
            tag
            for item in schema.get("paths", {}).values()
            for op in item.values()
            for tag in op.get("tags", [])
        }
    )
    declared = {tag["name"]: dict(tag) for tag in tags}
    missing = [tag for tag in used if tag not in declared]
    if missing:
        raise ValueError(f"tags used but not described: {missing}")
    schema["tags"] = [declared[name] for name in declared if name in used]


def _replace_validation_error(status: str, response: dict[str, Any]) -> None:
    """FastAPI's generated 422 (HTTPValidationError) as the problem this project answers instead."""
    content = response.get("content", {})
    schema = content.get(JSON, {}).get("schema", {})
    if status == "422" and schema.get("$ref") == SCHEMAS + "HTTPValidationError":
        response.clear()
        response.update(problem_responses(422)[422])


def documentation_routes(settings: Settings) -> dict[str, Any]:
    """FastAPI's /docs, /redoc and /openapi.json: served in development and test, off with
    APP_ENV=production (the contracts are published as snapshots instead; tests/contracts)."""
    if settings.app_env == "production":
        return {"docs_url": None, "redoc_url": None, "openapi_url": None}
    return {}
