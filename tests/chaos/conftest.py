"""Fault tests run on a private stack (never the shared one) and print the fault table at the end."""

from __future__ import annotations

import pytest

from tests.support.fault_table import ROWS, format_table
from tests.support.private_fixtures import (  # noqa: F401 - fixtures, found by name
    private_redis,
    private_services,
    private_settings,
    private_stack,
)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ROWS:
        return
    terminalreporter.section("fault table")
    for line in format_table(ROWS):
        terminalreporter.write_line(line)
