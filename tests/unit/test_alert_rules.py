"""The alerting rules (infra/prometheus/alerts.yml) pass `promtool check rules` and their unit tests.

promtool comes from Debian's `prometheus` package (`make deps` installs it). The unit tests are
series fixtures in tests/alerts/: each alert fires on what it is about and stays quiet otherwise.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "infra" / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = REPO / "infra" / "prometheus" / "prometheus.yml"
RULE_TESTS = sorted((REPO / "tests" / "alerts").glob("*.test.yml"))
README = REPO / "README.md"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is not installed, so the alerting rules cannot be checked: run `make deps` "
            "(Debian's prometheus package: apt-get install prometheus)",
            pytrace=False,
        )
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_promtool(), *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_the_rules_pass_promtool_check() -> None:
    result = _run("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_prometheus_config_loading_the_rules_passes_promtool_check() -> None:
    result = _run("check", "config", "--syntax-only", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("fixture", RULE_TESTS, ids=lambda p: p.name)
def test_each_alert_fires_on_its_series_and_not_otherwise(fixture: Path) -> None:
    result = _run("test", "rules", str(fixture))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_and_a_runbook_entry() -> None:
    alerts = {
        rule["alert"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    tested = {
        case["alertname"]
        for fixture in RULE_TESTS
        for test in yaml.safe_load(fixture.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts - tested == set(), "alerts without a test that makes them fire"
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in README.read_text().splitlines()
        if line.startswith("#")
    }
    assert {f"alert-{name.lower()}" for name in alerts} <= anchors, "alerts missing from the runbook"
