"""Monitor fixtures: the query API served by a real uvicorn in this process (WebSockets need a server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import uvicorn
from fastapi import FastAPI
from redis.asyncio import Redis

from query_api.entrypoints.http import monitor
from query_api.entrypoints.http.app import create_app
from service_runtime.redis_client import connect_redis
from service_runtime.settings import Settings
from service_runtime.tokens import issue_access_token
from tests.support.services import free_port


def with_monitor(app: FastAPI) -> FastAPI:
    """The app with the monitor's routes (a no-op once app.py includes the router itself)."""
    if not any(getattr(route, "path", None) == "/monitor/ws" for route in app.routes):
        app.include_router(monitor.router)
    return app


@dataclass
class ServedQueryApi:
    settings: Settings
    port: int
    app: FastAPI

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/monitor/ws"

    def token(self, user_id: str = "the-admin", roles: tuple[str, ...] = ("user", "admin")) -> str:
        return issue_access_token(self.settings, user_id, list(roles))

    def bearer(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def query_api(settings: Settings) -> AsyncIterator[ServedQueryApi]:
    port = free_port()
    app = with_monitor(create_app(settings))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    yield ServedQueryApi(settings, port, app)
    server.should_exit = True
    # A graceful stop waits for open sockets (a client that stopped reading holds one until the
    # server drops it); past a grace period, stop without waiting, as a second Ctrl-C would.
    done, _ = await asyncio.wait({task}, timeout=5)
    if not done:
        server.force_exit = True
    await asyncio.wait_for(task, 15)


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = connect_redis(settings)
    yield client
    await client.aclose()
