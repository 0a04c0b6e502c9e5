"""The load test runs on the private stack, like the fault tests (it must not slow anyone else's)."""

from __future__ import annotations

import pytest

from tests.support.private_fixtures import (  # noqa: F401 - fixtures, found by name
    private_redis,
    private_services,
    private_settings,
    private_stack,
)

# What the load test measured, printed at the end of the session (pytest captures its output).
REPORT: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.section("load")
        for line in REPORT:
            terminalreporter.write_line(line)
