"""Cluster fault tests run on a private cluster of their own and print their fault table at the end."""

from __future__ import annotations

import pytest

from tests.support.fault_table import CLUSTER_COLUMNS, CLUSTER_ROWS, format_table
from tests.support.private_cluster import PrivateCluster, acquire_private_cluster


@pytest.fixture(scope="module")
def private_cluster() -> PrivateCluster:
    return acquire_private_cluster()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not CLUSTER_ROWS:
        return
    terminalreporter.section("cluster fault table")
    for line in format_table(CLUSTER_ROWS, CLUSTER_COLUMNS):
        terminalreporter.write_line(line)
