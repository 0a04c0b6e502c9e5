"""Security tests run the real services as processes on the private stack, once per module."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from service_runtime.settings import Settings
from tests.support.private_fixtures import private_stack  # noqa: F401 - a fixture, found by name
from tests.support.private_stack import PrivateStack
from tests.support.services import RunningServices, free_port
from tests.support.stack import create_topics, remove_test_data

SERVICES = ["command-api", "query-api", "relay", "projectors"]


@dataclass
class System:
    settings: Settings
    services: RunningServices

    @property
    def command_url(self) -> str:
        return self.services.command_url

    @property
    def query_url(self) -> str:
        return self.services.query_url


@pytest.fixture(scope="module")
async def system(
    private_stack: PrivateStack,  # noqa: F811 - the imported fixture
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> AsyncIterator[System]:
    """The services of one module's tests, on their own database, keys and topics (a module's
    `SETTINGS` dict overrides settings, its `SERVICES` list names the processes to run)."""
    values: dict[str, object] = {
        "command_api_port": free_port(),
        "query_api_port": free_port(),
        "api_workers": 1,
        "read_wait_seconds": 5.0,
        **getattr(request.module, "SETTINGS", {}),
    }
    settings = private_stack.settings(**values)
    await create_topics(settings)
    services = RunningServices(settings, tmp_path_factory.mktemp("services"))
    services.start(getattr(request.module, "SERVICES", SERVICES))
    try:
        services.wait_ready()
        yield System(settings, services)
    finally:
        services.stop_all()
        await remove_test_data(settings)
