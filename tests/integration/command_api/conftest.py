"""The command API in-process (its real lifespan) against the real servers, per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from command_api.adapters.mongo_schema import Document, mongo_client
from command_api.entrypoints.http.app import create_app
from service_runtime.settings import Settings
from tests.support import loopback


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_api(settings) as client:
        yield client


@pytest.fixture
async def mongo(settings: Settings) -> AsyncIterator[AsyncMongoClient[Document]]:
    client = mongo_client(settings)
    yield client
    await client.close()


@pytest.fixture
def db(settings: Settings, mongo: AsyncMongoClient[Document]) -> AsyncDatabase[Document]:
    return mongo[settings.mongo_db]


class running_api:  # lower-case: read as `async with running_api(settings) as client`
    """create_app(settings) with its lifespan running, reached through an in-process transport."""

    def __init__(self, settings: Settings, client_address: str = "127.0.0.1") -> None:
        self.app = create_app(settings)
        self.client_address = client_address
        self._lifespan = self.app.router.lifespan_context(self.app)
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> httpx.AsyncClient:
        await self._lifespan.__aenter__()
        transport = httpx.ASGITransport(self.app, client=(self.client_address, 50000))
        self._client = loopback.client(transport=transport, base_url="http://command-api")
        return self._client

    async def __aexit__(self, *exc: object) -> None:
        assert self._client is not None
        await self._client.aclose()
        await self._lifespan.__aexit__(None, None, None)
