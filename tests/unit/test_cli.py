"""The `campaigns` command refuses clearly what it cannot do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.stack import REPO


def campaigns(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CAMPAIGNS_") and k != "APP_ENV"}
    return subprocess.run(
        [sys.executable, "-m", "launcher", *args],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_a_service_refuses_to_start_in_production_without_a_configured_key(tmp_path: Path) -> None:
    result = campaigns("serve", "command-api", APP_ENV="production", CAMPAIGNS_LOCAL_DIR=str(tmp_path))
    assert result.returncode == 2
    assert "refusing to start command-api" in result.stderr
    assert "CAMPAIGNS_JWT_PRIVATE_KEY" in result.stderr


def test_an_api_refuses_to_start_without_any_key(tmp_path: Path) -> None:
    for service in ("command-api", "query-api"):
        result = campaigns("serve", service, CAMPAIGNS_LOCAL_DIR=str(tmp_path))
        assert result.returncode == 2, result.stderr
        assert f"refusing to start {service}: no access-token" in result.stderr


def test_an_unknown_service_is_named_with_the_choices() -> None:
    result = campaigns("serve", "mailman")
    assert result.returncode == 2
    assert "unknown service 'mailman'" in result.stderr
    assert "command-api" in result.stderr


def test_the_launcher_opens_the_command_api_to_the_local_console_only_unless_told() -> None:
    from launcher.cli import console_defaults
    from service_runtime.settings import Settings

    environ: dict[str, str] = {}
    console_defaults(Settings(query_api_port=9002, command_api_port=9001), environ)
    assert environ["CAMPAIGNS_CONSOLE_ORIGINS"] == "http://127.0.0.1:9002,http://localhost:9002"
    assert environ["CAMPAIGNS_COMMAND_API_PUBLIC_URL"] == "http://127.0.0.1:9001"
    chosen = {"CAMPAIGNS_CONSOLE_ORIGINS": "https://ops.example.com"}
    console_defaults(Settings(), chosen)
    assert chosen["CAMPAIGNS_CONSOLE_ORIGINS"] == "https://ops.example.com"


def test_the_quarantined_listing_names_a_limit_the_option_accepts() -> None:
    from launcher.cli import quarantined_summary
    from service_runtime.settings import RELAY_QUARANTINED_LISTED_MAX

    assert quarantined_summary(3, 3) == "3 quarantined event(s)"
    assert quarantined_summary(0, 0) == "0 quarantined event(s)"
    assert quarantined_summary(250, 100) == "250 quarantined event(s); --limit 250 lists them all"
    most = RELAY_QUARANTINED_LISTED_MAX
    assert quarantined_summary(most, 100).endswith(f"--limit {most} lists them all")
    past = quarantined_summary(most + 1, 100)
    assert past == f"{most + 1} quarantined event(s); --limit {most} lists the oldest {most:,}"
