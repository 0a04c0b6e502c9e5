"""The load test runs on the private stack, like the fault tests (it must not slow anyone else's)."""

from __future__ import annotations

import pytest

from tests.support.private_fixtures import (  # noqa: F401 - fixtures, found by name
    private_redis,
    private_services,
    private_settings,
    private_stack,
)
from tests.support.private_stack import release_private_stack


def pytest_sessionfinish(session: pytest.Session) -> None:
    release_private_stack()
