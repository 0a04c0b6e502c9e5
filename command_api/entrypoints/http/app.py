"""The command API application: `create_app` is the uvicorn factory (one app per worker process)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute

from command_api.bootstrap import open_command_side
from command_api.entrypoints.http import auth_routes, campaign_routes, health_routes
from command_api.entrypoints.http.errors import install_command_error_handlers
from command_api.entrypoints.http.fast_commands import CampaignCreate, CommandAPI
from service_runtime.http import HttpBasicsMiddleware, install_http_basics
from service_runtime.logs import configure_logging
from service_runtime.openapi import describe_api, documentation_routes
from service_runtime.settings import Settings, get_settings

SERVICE = "command-api"
DEFAULT_PORT = Settings.model_fields["command_api_port"].default
TAGS = [
    {"name": "auth", "description": "Register, log in, rotate refresh tokens, log out"},
    {"name": "campaigns", "description": "Create, change, run and delete campaigns (owner or admin)"},
    {"name": "ops", "description": "Liveness and readiness"},
]
# Metrics are Prometheus (service_runtime.http). FastAPI's own OpenTelemetry hooks (in versions
# that have them) otherwise look the providers up in the environment on every request.
_WITHOUT_OPENTELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(SERVICE)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Clients belong to the worker process that runs this lifespan, never to the import.
        side = open_command_side(settings)
        # Best effort: if MongoDB is down now, the first write creates the indexes instead.
        await side.indexes.try_ensure()
        app.state.command_side = side
        try:
            yield
        finally:
            await side.close()

    app = CommandAPI(
        title="Campaigns CQRS — command API",
        version="1.0.0",
        description=(
            "Write side: users and campaigns. Every accepted command is recorded as events in "
            "MongoDB and reaches Kafka through the outbox relay. Errors are application/problem+json."
        ),
        lifespan=lifespan,
        **_WITHOUT_OPENTELEMETRY,
        **documentation_routes(settings),
    )
    install_http_basics(app, settings, SERVICE)
    install_command_error_handlers(app)
    install_console_cors(app, settings)
    describe_api(app, default_port=DEFAULT_PORT, tags=TAGS)
    app.include_router(auth_routes.router)
    app.include_router(campaign_routes.router)
    app.include_router(health_routes.router)
    # The hot create skips FastAPI's stack, but not the HTTP basics (correlation id, limits,
    # metrics, security headers); what it does not take goes to FastAPI (fast_commands.py).
    create = CampaignCreate(
        app, fallback=app.through_fastapi, route=_route(campaign_routes.router, "/campaigns", "POST")
    )
    app.fast_create = HttpBasicsMiddleware(create, settings=settings, service=SERVICE)
    return app


def _route(router: APIRouter, path: str, method: str) -> BaseRoute | None:
    # The router's own routes: FastAPI 0.16x nests an included router's routes in app.routes.
    return next(
        (
            r
            for r in router.routes
            if getattr(r, "path", None) == path and method in getattr(r, "methods", ())
        ),
        None,
    )


def install_console_cors(app: FastAPI, settings: Settings) -> None:
    """Let the operator console (a page on the query API's origin) call this API from a browser.

    Only the configured origins (CAMPAIGNS_CONSOLE_ORIGINS; none by default) are answered, and
    without credentials: the console sends its tokens in headers and bodies, never in cookies.
    Added last, so it is the outermost middleware and problem responses carry its headers too.
    """
    origins = settings.console_origin_list
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=["GET", "POST", "PATCH", "DELETE"],
        allow_headers=["authorization", "content-type", "if-match", "x-correlation-id"],
        expose_headers=["etag", "location", "retry-after", "x-correlation-id"],
        allow_credentials=False,
        max_age=600,
    )
