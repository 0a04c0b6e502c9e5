"""The query API: FastAPI over the Redis read models (uvicorn factory, several workers).

Nothing is created at import: each worker process makes its Redis and MongoDB clients, its
pub/sub listener, its generation cache and its campaign cache in the lifespan; all shared
state is in Redis.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

from fastapi import APIRouter, FastAPI, Request
from pymongo import AsyncMongoClient
from redis.asyncio.cluster import RedisCluster
from starlette.responses import Response
from starlette.routing import BaseRoute

from events.log import EventsLog, events_collection
from query_api.adapters.campaign_cache import CampaignCache
from query_api.adapters.notifications import NotificationListener, VersionWaiters, WaiterQuota
from query_api.adapters.read_models import GenerationCache, ReadModels
from query_api.adapters.redis_multiplexer import REDIS_DOWN, ClusterMultiplexer, RedisMultiplexer
from query_api.entrypoints.http import campaigns, console, contract, health, monitor, reports, stats, users
from query_api.entrypoints.http.authentication import TokenVerifier
from query_api.entrypoints.http.dependencies import ReadSide
from query_api.entrypoints.http.fast_read import CampaignList, CampaignRead, QueryAPI
from service_runtime.http import HttpBasicsMiddleware, install_http_basics
from service_runtime.openapi import describe_api, documentation_routes
from service_runtime.problems import problem_response
from service_runtime.redis_client import connect_redis, is_cluster
from service_runtime.sessions import SessionCutoffs
from service_runtime.settings import Settings, get_settings

SERVICE = "query-api"
DEFAULT_PORT = Settings.model_fields["query_api_port"].default
TAGS = [
    {"name": "campaigns", "description": "Campaign reads: one, a filtered page, history, time travel"},
    {"name": "users", "description": "The caller's profile"},
    {"name": "stats", "description": "Figures over every campaign and user (admin only)"},
    {"name": "reports", "description": "Reports of completed campaigns"},
    {"name": "monitor", "description": "The live monitor of the event flow (admin only)"},
    {"name": "console", "description": "The operator console's actions, each audited (admin only)"},
    {"name": "ops", "description": "Liveness, readiness and the AsyncAPI document of the events"},
]
# Metrics are Prometheus (service_runtime.http). FastAPI's own OpenTelemetry hooks (in versions
# that have them) otherwise look the providers up in the environment on every request: about
# 7% of a query API worker on the read path.
_WITHOUT_OPENTELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        redis = connect_redis(settings)
        multiplexer: RedisMultiplexer | ClusterMultiplexer | None = None
        if RedisMultiplexer.supports(settings.redis_url):
            multiplexer = (
                ClusterMultiplexer(cast(RedisCluster, redis), settings.redis_url)
                if is_cluster(redis)
                else RedisMultiplexer(settings.redis_url)
            )
        mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url)
        waiters = VersionWaiters()
        cache = CampaignCache(
            settings.campaign_cache_bytes,
            settings.campaign_cache_seconds,
            page_max_bytes=settings.list_cache_bytes,
        )
        # A swap empties the cache and starts its settling when it is learnt, not at the next read.
        stop_seconds = settings.background_stop_seconds
        generations = GenerationCache(redis, settings.redis_prefix, cache.generation_seen, stop_seconds)
        listener = NotificationListener(
            redis,
            settings.redis_prefix,
            waiters,
            generations.refresh,
            cache,
            settings.read_model_buckets,
            stop_seconds,
        )
        try:
            await generations.start()
            await listener.start()
            side = ReadSide(
                settings=settings,
                redis=redis,
                read_models=ReadModels(
                    redis,
                    generations,
                    multiplexer,
                    cache,
                    settings.read_model_buckets,
                    scan_budget=settings.list_scan_budget,
                    scan_calls=settings.list_scan_calls,
                ),
                waiters=waiters,
                events_log=EventsLog(events_collection(mongo, settings.mongo_db)),
                waiter_quota=WaiterQuota(
                    settings.min_version_waiters_per_user, settings.min_version_waiters_per_worker
                ),
                mongo=mongo,
                tokens=TokenVerifier(
                    settings,
                    SessionCutoffs(
                        redis,
                        prefix=settings.redis_prefix,
                        check_seconds=settings.session_check_seconds,
                        token_ttl_seconds=settings.access_token_ttl_seconds,
                    ),
                ),
            )
            yield {"read_side": side}
        finally:
            await listener.stop()
            await generations.stop()
            if multiplexer is not None:
                await multiplexer.close()
            await redis.aclose()
            await mongo.close()

    app = QueryAPI(
        title="Campaigns CQRS query API",
        version="1.0.0",
        description=(
            "Reads of the Redis read models built by the projectors. Writes go to the command "
            "API; pass `min_version` (the version a command returned) to read your own write."
        ),
        lifespan=lifespan,
        **_WITHOUT_OPENTELEMETRY,
        **documentation_routes(settings),
    )
    for unavailable in REDIS_DOWN:
        app.add_exception_handler(unavailable, _read_models_unavailable)
    app.include_router(campaigns.router)
    app.include_router(users.router)
    app.include_router(stats.router)
    app.include_router(reports.router)
    app.include_router(health.router)
    app.include_router(contract.router)
    app.include_router(monitor.router)
    app.include_router(console.router)
    install_http_basics(app, settings, SERVICE)
    describe_api(app, default_port=DEFAULT_PORT, tags=TAGS)
    # The hot read skips FastAPI's stack, but not the HTTP basics (correlation id, limits, metrics).
    read = CampaignRead(_route(campaigns.router, "/campaigns/{campaign_id}"))
    app.fast_read = HttpBasicsMiddleware(read, settings=settings, service=SERVICE)
    listing = CampaignList(_route(campaigns.router, "/campaigns"))
    app.fast_list = HttpBasicsMiddleware(listing, settings=settings, service=SERVICE)
    return app


def _route(router: APIRouter, path: str) -> BaseRoute | None:
    # The router's own routes: FastAPI 0.16x nests an included router's routes in app.routes.
    return next((r for r in router.routes if getattr(r, "path", None) == path), None)


async def _read_models_unavailable(request: Request, exc: Exception) -> Response:
    # A dependency is down, not a bug: a 503 the client may retry, like readiness says.
    return problem_response(
        503,
        "the read models are unavailable; retry shortly",
        headers={"Retry-After": "1"},
        instance=request.url.path,
    )
