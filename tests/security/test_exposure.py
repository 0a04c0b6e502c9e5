"""Exposure, tried against services running with APP_ENV=production: no API documentation or
contract on the public ports, and metrics only on each API's internal listener."""

from __future__ import annotations

import asyncio
import time

import pytest

from service_runtime.http import METRICS_FLUSH_SECONDS
from tests.security.conftest import System
from tests.support import loopback

pytestmark = pytest.mark.security

SETTINGS = {"app_env": "production"}


@pytest.mark.parametrize(
    "path", ["/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect", "/asyncapi.json"]
)
async def test_in_production_api_documentation_is_not_served(system: System, path: str) -> None:
    for base in (system.command_url, system.query_url):
        async with loopback.client(base_url=base, timeout=10) as client:
            response = await client.get(path)
        assert response.status_code == 404, (base, path, response.status_code)


async def test_metrics_are_not_on_the_public_ports_but_on_internal_listeners(system: System) -> None:
    settings = system.settings
    for public, port in (
        (system.command_url, settings.command_api_metrics_port),
        (system.query_url, settings.query_api_metrics_port),
    ):
        async with loopback.client(timeout=10) as client:
            assert (await client.get(f"{public}/health/live")).status_code == 200
            assert (await client.get(f"{public}/metrics")).status_code == 404
            # A worker adds its tally of requests to the series within METRICS_FLUSH_SECONDS
            # (service_runtime/http.py): a scrape served by another process may come first.
            deadline = time.monotonic() + 5 * METRICS_FLUSH_SECONDS + 2
            while True:
                internal = await client.get(f"http://{settings.metrics_host}:{port}/metrics")
                if "http_requests_total" in internal.text or time.monotonic() > deadline:
                    break
                await asyncio.sleep(METRICS_FLUSH_SECONDS / 2)
        assert internal.status_code == 200
        assert "http_requests_total" in internal.text
